"""A finished run opened at a checkpoint, for what it is used for after training (eval,
predict, export, the confusion picture): which checkpoint a reader asked for (``pick``:
best, last or step-N, verified as a resume verifies it), and the run's settings, tokenizer,
label names and model at it (``load_run``).

A run is loaded from its own directory only: the frozen session.toml with its edit log
applied up to that checkpoint (model source, max_length, fields), the label names its start
event recorded, and the checkpoint's model.safetensors. The model is built without
tuneterm's dropout sites (inference only), so the same weights give the same logits as an
exported folder loaded by transformers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuneterm.engine import checkpoint as ckpt
from tuneterm.errors import UserError
from tuneterm.rundir import RunDir, checkpoint_name, checkpoint_steps, read_jsonl
from tuneterm.session.schema import Session
from tuneterm.session.tasks import task_spec


@dataclass
class LoadedRun:
    run_dir: Path
    session: Session
    tokenizer: object
    model: torch.nn.Module
    label_names: list  # classification: the class names in index order; [] otherwise
    checkpoint: Path
    state: dict  # the checkpoint's state.json
    device: torch.device
    workspace: Path
    skipped: list = field(default_factory=list)  # (name, reason) of damaged newer checkpoints passed over

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def task(self) -> str:
        return self.session.model.task

    def eval_batch_size(self) -> int:
        """The batch size the run's own evaluation used at this checkpoint."""
        hp = self.state.get("hyperparameters") or {}
        trained = hp.get("batch_size") or self.session.hyperparameters.batch_size
        return self.session.evaluation.batch_size or 2 * int(trained)


def run_labels(run_dir: Path) -> list:
    """The label names the run trained with, from its (last) start/resume event."""
    for ev in reversed(read_jsonl(RunDir(run_dir).events)):
        if ev.get("kind") in ("start", "resume") and isinstance(ev.get("labels"), list):
            return [str(x) for x in ev["labels"]]
    return []


def resolve_device(requested: str | None) -> torch.device:
    from tuneterm.engine.accel import resolve_device as rd

    return rd(requested or "cpu")


def load_run(run_dir: Path, workspace: Path, which: str = "best", device: str | None = "cpu") -> LoadedRun:
    """The run's model at a checkpoint, in eval mode. A LoRA run's model is the PEFT model
    (base rebuilt from the source, adapters and trained base groups from the checkpoint)."""
    from tuneterm.engine.models import build_causal_lm, build_model, load_tokenizer
    from tuneterm.session.io import run_session

    path, skipped = pick(run_dir, which)
    state = ckpt.read_state(path)
    # The run's settings at that checkpoint: its file with the edits applied by then (a live
    # `set train_base` lives only in the edit log).
    session = run_session(run_dir, workspace, state.get("edits_applied"))
    dev = resolve_device(device)
    tok = load_tokenizer(session.model.source, workspace)
    seed = session.session.seed
    if task_spec(session.model.task).model == "classifier":
        labels = run_labels(run_dir)
        if not labels:
            raise UserError(f"{run_dir.name}: events.jsonl records no label names (no start event)")
        model = build_model(session.model.source, len(labels), tokenizer=tok, workspace=workspace, seed=seed)
    else:
        from tuneterm.engine import lm_data as LM

        LM.prepare_tokenizer(tok)  # the eos token and chat template the task trained with
        labels = []
        model = build_causal_lm(session.model.source, tokenizer=tok, workspace=workspace, seed=seed)
    model = model.to(dtype=torch.bfloat16 if session.model.dtype == "bfloat16" else torch.float32)
    weights = ckpt.tensors(path)  # a sharded (fsdp) checkpoint's gathered whole
    if getattr(getattr(session, "lora", None), "enabled", False):
        from tuneterm.engine import dropout as drop
        from tuneterm.engine import layers as L
        from tuneterm.engine import lora

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations inside PEFT
            model = lora.attach(model, session, drop.DropoutContext(seed), "torch")
        lora.load_tensors(model, L.layer_groups(model), weights)
    else:
        model.load_state_dict(weights, strict=True)
    model.to(dev).eval()
    return LoadedRun(run_dir, session, tok, model, labels, path, state, dev, workspace,
                     [(p.name, why) for p, why in skipped])


def metrics_at(run_dir: Path, step: int) -> dict:
    """The validation metrics the run logged at ``step`` ({} when it did not evaluate there)."""
    for row in reversed(read_jsonl(RunDir(run_dir).metrics)):
        if row.get("kind") == "eval" and row.get("step") == step:
            return {k: v for k, v in row.items() if k.startswith("val_")}
    return {}


def pick(run_dir: Path, which: str = "best") -> tuple[Path, list[tuple[Path, str]]]:
    """The checkpoint a reader (eval, predict, export) asked for, verified as a resume
    verifies (``READ_FILES``), and the damaged newer ones it passed over as (path, reason).
    ``step-N``, and the best step's checkpoint for ``best``, are refused when damaged: one
    line naming it. ``last`` is the newest intact checkpoint; ``best`` the best step the
    newest intact state.json records (that checkpoint when the run never evaluated)."""
    root = RunDir(run_dir).checkpoints
    steps = checkpoint_steps(root)
    if not steps:
        raise UserError(f"{run_dir.name}: the run has no checkpoint yet")
    have = ", ".join(f"step-{s}" for s in steps)
    if which.startswith("step-") and which[5:].isdigit():
        n = int(which[5:])
        if n not in steps:
            raise UserError(f"--checkpoint {which}: {run_dir.name} has no checkpoint at step {n} (it has {have})")
        return _intact(run_dir, root / checkpoint_name(n), have), []
    if which not in ("best", "last"):
        raise UserError(f"--checkpoint {which!r}: expected best, last or step-N")
    skipped: list[tuple[Path, str]] = []
    for step in reversed(steps):
        path = root / checkpoint_name(step)
        # best needs only the newest trustworthy record of which step was best
        problem, _ = ckpt.verify(path, ckpt.READ_FILES if which == "last" else (ckpt.STATE,))
        if problem is None:
            break
        skipped.append((path, problem))
    else:
        listed = "; ".join(f"{p.name}: {why}" for p, why in skipped)
        raise UserError(f"{run_dir.name}: none of its {len(skipped)} checkpoints can be used ({listed})")
    if which == "last":
        return path, skipped
    best = (ckpt.read_state(path).get("early_stopping") or {}).get("best_step")
    if best is None:
        return _intact(run_dir, path, have), skipped
    if best not in steps:
        raise UserError(f"{run_dir.name}: the best step {best} has no checkpoint (checkpoint.keep_best = false?); "
                        f"use --checkpoint last or one of {have}")
    return _intact(run_dir, root / checkpoint_name(best), have), skipped


def _intact(run_dir: Path, path: Path, have: str) -> Path:
    problem, _ = ckpt.verify(path, ckpt.READ_FILES)
    if problem:
        raise UserError(f"{run_dir.name}: checkpoint {path.name} is damaged: {problem}; "
                        f"choose another with --checkpoint (last, or one of {have})")
    return path
