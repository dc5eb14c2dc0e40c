"""Checks that need the model or the data: layer names and limits from a weightless copy
of the model, a deep check (tokenizer, data, model loaded) and a smoke step.

`tuneterm.cli.session_verbs.engine_problems` calls these for `validate`, for `run` and
`replay` before they write anything, and so for the runner's pre-flight (`queue add` runs
`validate --deep|--smoke` in a subprocess: the runner never imports torch).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.session.schema import Session


def model_layer_names(session: Session, workspace: Path | None) -> list[str]:
    """The layer groups' names of the session's model, from a weightless (meta-device) copy."""
    from tuneterm.engine.layer_report import meta_model
    from tuneterm.engine.layers import layer_groups

    return [g.name for g in layer_groups(meta_model(session, workspace))]


def position_limit(config) -> int | None:
    """The longest input the model has positions for (None: no fixed limit)."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int):
        return None
    if "roberta" in str(getattr(config, "model_type", "")) or getattr(config, "model_type", "") == "camembert":
        limit -= 2  # RoBERTa's positions start after the padding index
    return limit


def _limit_problems(session: Session, config) -> list[tuple[str, str]]:
    limit = position_limit(config)
    n = session.data.max_length
    if limit is not None and n > limit:
        return [("data.max_length", f"{n} is more than {session.model.source} has positions for ({limit}); "
                                    f"use at most {limit}")]
    return []


def _training_problems(session: Session, groups: list) -> list[tuple[str, str]]:
    """Nothing left to train — at the start or after an edit of the log (freezing,
    ``set train_base``) — crashes the run at its next step, so it is refused before the run
    starts. Counted on the model's groups (LoRA: adapters and trained bases), not by names."""
    from tuneterm.engine import layers as L
    from tuneterm.session.effective import walk

    lora = session.lora.enabled
    names = L.group_names(groups)

    def why(s: Session) -> str | None:
        return L.untrained_reason(groups, s.freeze.layers, s.lora.train_base if lora else None)

    first = why(session)
    if first:
        return [("freeze.layers" if session.freeze.layers else "lora.target_modules", f"nothing would train: {first}")]
    for i, e, s in walk(session):
        reason = why(s)
        if reason is None:
            continue
        if e.freeze and set(names) <= set(s.freeze.layers):
            return [(f"edits[{i}].freeze", f"at step {e.step} this freezes every layer group: nothing would train")]
        key = f"edits[{i}].freeze" if e.freeze else f"edits[{i}].set.train_base" if "train_base" in e.set else f"edits[{i}]"
        return [(key, f"at step {e.step} nothing would be left to train: {reason}")]
    return []


def model_problems(session: Session, workspace: Path | None) -> list[tuple[str, str]]:
    """What the model shows beyond its layer names, as (key path, message): LoRA target
    modules it lacks or whose weight is tied (lora.check_targets), nothing left to train at
    the start or after an edit, data.max_length beyond the model's positions, a model folder
    whose weights are pickles. Raises UserError when the model does not load."""
    from tuneterm.engine import layers as L
    from tuneterm.engine.layer_report import meta_model

    model = meta_model(session, workspace)
    limits = _limit_problems(session, model.config)
    if session.lora.enabled:
        from tuneterm.engine import dropout as drop
        from tuneterm.engine import lora

        try:
            lora.check_targets(model, session.lora.target_modules)
        except UserError as e:
            return [("lora.target_modules", str(e).removeprefix("lora.target_modules:").strip())] + limits
        model = lora.attach(model, session, drop.DropoutContext(session.session.seed), "torch")
    return _training_problems(session, L.layer_groups(model)) + limits


def deep_check(session: Session, workspace: Path, smoke: bool = False) -> None:
    """Load model, tokenizer and data (and with ``smoke`` train one step in a throwaway
    run directory). Raises UserError with a one-line reason."""
    from tuneterm.engine.control import Mailbox
    from tuneterm.engine.trainer import Trainer
    from tuneterm.errors import TrainingError
    from tuneterm.rundir import RunDir
    from tuneterm.session.io import save_session

    s = session.copy()
    s.edits = []
    s.hyperparameters.max_steps = 1
    s.checkpoint.interval_steps = 0
    s.evaluation.interval_steps = 0
    s.data.max_eval_samples = min(s.data.max_eval_samples or 8, 8)
    with tempfile.TemporaryDirectory(prefix="tuneterm-check-") as tmp:
        rd = Path(tmp)
        save_session(s, RunDir(rd).session)
        trainer = Trainer(s, rd, workspace, sinks=[], mailbox=Mailbox(), tracking=False)
        try:
            trainer.setup()
            if trainer.trainable_params() == 0:  # else the step fails deep in autograd, naming nothing
                raise _nothing_trains(s)
            if smoke:
                trainer.train_step()
        except TrainingError as e:
            raise UserError(f"smoke step failed: {e}") from None
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        finally:
            trainer.close()


def _nothing_trains(session: Session) -> UserError:
    """The session's freezing (or, without any, its LoRA targets) leaves no parameter to train."""
    lora = session.lora.enabled
    if session.freeze.layers:
        what = "every layer group with LoRA adapters" if lora else "every layer group that has parameters"
        return UserError(f"freezes {what}: nothing would train", field="freeze.layers")
    if lora:
        return UserError("no LoRA adapter in this model: nothing would train", field="lora.target_modules")
    return UserError("the model has no trainable parameter: nothing would train", field="model.source")
