"""LoRA adapters (PEFT) that a person can steer while the run trains.

``attach`` wraps the model with PEFT's ``get_peft_model`` (PEFT's LoRA layers, names and
saved format; a classifier head is PEFT's ``modules_to_save`` copy, fully trained), then
swaps PEFT's ``nn.Dropout`` on each adapter's input for tuneterm's ``SeededDropout``: its
masks derive from (session seed, step, micro-batch, site, call), so they are the same on
the CPU and the GPU and on every replay, and ``p`` is live (``set_lora_dropout``).

A checkpoint holds only what trains (``checkpoint_tensors``): every adapter weight, plus
the base weights of the layer groups that have trained beside the adapters; the rest of the
model is rebuilt from its source, and ``fingerprint`` proves it is the same base.
"""

from __future__ import annotations

import difflib
import hashlib

import torch
from torch import nn

from tuneterm.engine import layers as L
from tuneterm.errors import UserError
from tuneterm.session.tasks import task_spec

# Adapter dropout sites are numbered from here, apart from the model's own dropout sites
# (whose numbers depend on the architecture), so their masks never collide.
SITE_BASE = 1 << 20
# fingerprint: values sampled per tensor (evenly strided over the flattened tensor).
FINGERPRINT_SAMPLES = 1024


def _linear_kinds() -> tuple:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def target_names(model: nn.Module) -> list[str]:
    """The short names (``q_proj``, ``query``, ``c_attn``) of the model's linear layers."""
    kinds = _linear_kinds()
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and isinstance(m, kinds)})


def targets_of(value) -> str | list[str]:
    """``[lora] target_modules`` as PEFT takes it: ``"all-linear"``, or a list of module
    names — a string other than "all-linear" is one name, never its characters."""
    if value == "all-linear":
        return value
    return [value] if isinstance(value, str) else list(value)


def tied_linears(model: nn.Module) -> dict[str, str]:
    """{short name of a linear layer: another name of its weight} for the linear layers
    whose weight is tied to another parameter (GPT-2's lm_head is its token embeddings)."""
    names: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    out = {}
    for n, m in model.named_modules():
        weight = getattr(m, "weight", None)
        if n and isinstance(m, _linear_kinds()) and weight is not None and len(names.get(id(weight), [])) > 1:
            out.setdefault(n.rsplit(".", 1)[-1], next(x for x in names[id(weight)] if x != f"{n}.weight"))
    return out


def check_targets(model: nn.Module, targets) -> None:
    """``"all-linear"`` or names of linear layers of this model whose weight is not tied to
    another parameter; else a one-line UserError."""
    targets = targets_of(targets)
    if targets == "all-linear":
        return  # PEFT's choice: every linear layer but the output layer
    if not targets:
        raise UserError(f"lora.target_modules: {targets!r}: expected \"all-linear\" or a non-empty list of module names")
    known = target_names(model)
    for t in targets:
        if t not in known:
            close = difflib.get_close_matches(t, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"lora.target_modules: no linear layer named {t!r} in this model; {hint}"
                            f"it has {', '.join(known)}")
    tied = tied_linears(model)
    for t in targets:
        if t in tied:
            # Merging W + BA into a tied matrix changes the other holder too (the input
            # embeddings), so a merged export would not be the model that trained.
            raise UserError(f"lora.target_modules: {t!r} is tied to {tied[t]} (one tensor): an adapter merged "
                            f"into it would change both; leave {t!r} out (lora.train_base can train the tied "
                            "matrix fully)")


def peft_config(session, model: nn.Module | None = None):
    """The PEFT ``LoraConfig`` of a session's ``[lora]`` table (also what a plain PEFT run
    of the same configuration uses: tests and the benchmark build theirs with it)."""
    from peft import LoraConfig, TaskType

    lo = session.lora
    targets = targets_of(lo.target_modules)
    if model is not None:
        check_targets(model, targets)
    task = getattr(TaskType, task_spec(session.model.task).peft_task_type)
    # use_dora: PEFT's DoRA (a magnitude vector per adapted layer, an adapter parameter like A and B)
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                      use_rslora=lo.use_rslora, use_dora=lo.use_dora, task_type=task, bias="none")


def attach(model: nn.Module, session, dctx, impl: str) -> nn.Module:
    """The model wrapped with PEFT LoRA adapters (a ``PeftModel``), adapter dropout seeded.

    The adapters' random init (PEFT's Kaiming-uniform A, zero B) is drawn from the session
    seed on the CPU, so it is the same on every device and every replay.
    """
    import warnings

    from peft import get_peft_model

    config = peft_config(session, model)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # GPT-2's Conv1D: PEFT sets fan_in_fan_out itself and says so.
        warnings.filterwarnings("ignore", message="fan_in_fan_out")
        torch.manual_seed(session.session.seed)
        wrapped = get_peft_model(model, config)
    seed_dropout(wrapped, dctx, session.lora.dropout, impl)
    return wrapped


def seed_dropout(model: nn.Module, dctx, p: float, impl: str) -> int:
    """Replace each adapter's input dropout (PEFT's ``nn.Dropout``, or ``nn.Identity`` at
    p = 0) with a ``SeededDropout``; returns how many. ``dctx`` is the loop's DropoutContext."""
    from tuneterm.engine.dropout import site as drop_site

    n = 0
    for mod in model.modules():
        drops = getattr(mod, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for key in list(drops.keys()):
            site = SITE_BASE + n
            live = drop_site(p, site, dctx, impl)
            live._tt_lora = True
            drops[key] = live
            n += 1
    return n


def set_lora_dropout(model: nn.Module, p: float) -> None:
    """The live edit ``lora_dropout``: every adapter's input dropout to ``p``."""
    for mod in model.modules():
        if getattr(mod, "_tt_lora", False):
            mod.p = float(p)


def lr_scale(groups: list, ratio: float) -> dict[str, float]:
    """LoRA+: {parameter name: learning-rate factor} — ``ratio`` for every B matrix — for
    ``optim.build`` (either optimizer: torch's parameter groups, the flat one's per-segment
    factor). Given even at ratio 1 (x * 1.0 == x: the same arithmetic), so that a live
    ``lora_lr_ratio`` knows its parameters."""
    return {n: float(ratio) for g in groups for n in g.adapter if ".lora_B." in n or ".lora_embedding_B." in n}


# ---------------------------------------------------------------------- live edits
def check_edit(groups: list, name: str, value) -> str | None:
    """Why a live LoRA edit cannot apply (None: it can). ``name`` is the [lora] field."""
    if name == "train_base":
        names = L.group_names(groups)
        for n in value:
            if n not in names:
                return f"train_base: unknown layer group {n!r}; this model has {', '.join(names)}"
    return None


def apply_edit(trainer, name: str, value) -> None:
    """A live edit of a [lora] field on a running trainer (``dropout``, ``lr_ratio``,
    ``train_base``); the optimizer's state of a base weight that starts training starts
    afresh, as on unfreeze."""
    if name == "dropout":
        set_lora_dropout(trainer.model, float(value))
    elif name == "lr_ratio":
        trainer.opt.set_lr_scale(float(value))
    elif name == "train_base":
        problem = check_edit(trainer.groups, name, value)
        if problem:
            raise UserError(problem)
        on, off = L.set_train_base(trainer.groups, list(value))
        if on:
            trainer.opt.set_frozen(on, False)
        if off:
            trainer.opt.set_frozen(off, True)
    else:
        raise UserError(f"lora.{name}: not a live-editable LoRA knob")


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- checkpoints
def checkpoint_tensors(model: nn.Module, groups: list) -> dict[str, torch.Tensor]:
    """What a LoRA checkpoint holds: every adapter weight, and the base weights of each
    group that has trained beside the adapters (now or earlier: its weights moved)."""
    out = {}
    for g in groups:
        keep = g.params if g.base_trained else g.adapter_params()
        for n, p in keep:
            out[n] = p.detach().contiguous().cpu().clone()
    return out


def load_tensors(model: nn.Module, groups: list, tensors: dict) -> None:
    """Copy a LoRA checkpoint's tensors into the model (the rest stays as built from the
    source). Every adapter must be there; a group whose base weights are there has trained
    them (it is kept in later checkpoints too)."""
    params = dict(model.named_parameters())
    stranger = [n for n in tensors if n not in params]
    if stranger:
        raise UserError(f"checkpoint: tensor {stranger[0]!r} is not a parameter of this model "
                        "(was it written with another [lora] configuration?)")
    missing = [n for g in groups for n in sorted(g.adapter) if n not in tensors]
    if missing:
        raise UserError(f"checkpoint: adapter tensor {missing[0]!r} is missing "
                        "(was it written with another [lora] configuration?)")
    for g in groups:
        if any(n in tensors for n, _ in g.base_params()):
            g.base_trained = True
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def fingerprint(model: nn.Module) -> str:
    """sha256 of the base weights: every base parameter's name, shape and dtype, and
    ``FINGERPRINT_SAMPLES`` values per tensor taken at an even stride over the flattened
    tensor (first and last included). Fast (~ms for 135M parameters), and any real change
    of base model — another checkpoint, architecture, fine-tune, dtype — changes it.
    Call it before training starts (the base of a ``train_base`` group moves later)."""
    h = hashlib.sha256()
    for n, p in model.named_parameters(remove_duplicate=True):
        if L.is_adapter(n) or L.SHADOW_MARKER in n:
            continue
        # Name without PEFT's wrapper prefix: the same base fingerprints the same either way.
        h.update(n.removeprefix("base_model.model.").encode())
        h.update(repr((tuple(p.shape), str(p.dtype))).encode())
        with torch.no_grad():  # an FSDP shard is gathered whole (every rank calls this, in order)
            flat = (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().reshape(-1)
        if flat.numel():
            h.update(flat[sample_index(flat.numel()).to(flat.device)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:32]


def sample_index(n: int, k: int = FINGERPRINT_SAMPLES) -> torch.Tensor:
    """``min(k, n)`` indices spread evenly over ``range(n)``, first and last included, in
    exact integer arithmetic (a float32 linspace rounds past the end above 2^24)."""
    k = min(k, n)
    if k == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.arange(k, dtype=torch.long) * (n - 1) // (k - 1)


def check_base(ckpt_root, current: str, verb: str = "run --resume") -> None:
    """Before a resume tries its checkpoints (or a replay retrains a run): when every readable
    checkpoint was written on another base model, refuse in one line (that is not a damaged
    checkpoint, and a replay on another base would not be the same run)."""
    import json

    from tuneterm.rundir import CHECKPOINT_DONE, checkpoint_name, checkpoint_steps

    seen = set()
    for step in checkpoint_steps(ckpt_root):
        try:
            saved = json.loads((ckpt_root / checkpoint_name(step) / CHECKPOINT_DONE).read_text())
        except (OSError, ValueError):
            continue  # damaged: latest_intact says so
        if isinstance(saved, dict) and saved.get("lora_fingerprint"):
            seen.add(saved["lora_fingerprint"])
    if seen and current not in seen:
        again = "resume" if "resume" in verb else "replay"
        raise UserError(f"{verb}: the base model is not the one this run trained its adapters on (base "
                        f"fingerprint {current}, the checkpoints' {sorted(seen)[0]}); {again} with the same "
                        "model.source weights")
