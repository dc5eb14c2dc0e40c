"""A trainer's checkpoints: writing one (and pruning the older ones), loading one into the
live trainer (weights, TrainState, frozen groups, dropout, LoRA and task knobs, optimizer),
and where an attempt started with ``resume`` begins — the newest checkpoint that verifies
and loads, each damaged newer one set aside with an event saying why, the rows a killed
attempt wrote after that checkpoint dropped. The files' format is checkpoint.py's; what
state.json holds, state.py's."""

from __future__ import annotations

from pathlib import Path

from tuneterm.engine import checkpoint as ckpt
from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.engine.control import truncate_after
from tuneterm.errors import UserError
from tuneterm.rundir import CHECKPOINTS, RunDir, checkpoint_name


def save(t, reason: str) -> Path:
    """A checkpoint of trainer ``t`` at its step; the older ones beyond checkpoint.keep_last
    (and not the best, with keep_best) removed; the run's rows synced first."""
    tensors, t.state.optimizer = t.opt.state_tensors()
    st = t.state
    path = t.paths.checkpoints / checkpoint_name(st.step)
    if t.strategy.name == "fsdp":  # every rank writes its shards (fsdp.py)
        from tuneterm.engine import fsdp

        fsdp.save(path, t.weights.state_dict(), tensors, st.to_json(), t.strategy)
    elif t.strategy.is_leader:  # every rank holds the same weights: rank 0 writes them
        ckpt.save(t.paths.checkpoints, st.step, t.weights, tensors, st.to_json())
    t.last_ckpt_step = st.step
    if t.strategy.is_leader:
        es = st.early_stopping
        keep = {es.best_step} if (es.best_step is not None and t.session.checkpoint.keep_best) else set()
        ckpt.prune(t.paths.checkpoints, t.session.checkpoint.keep_last, keep)
        t.out.sync()
        t.event("checkpoint", path=f"{CHECKPOINTS}/{path.name}", reason=reason)
    t.strategy.barrier()
    return path


def load(t, path: Path) -> None:
    """The checkpoint at ``path`` into trainer ``t``; a UserError when it is another base
    model's (LoRA) or its state.json does not fit."""
    fingerprint = t.state.lora_fingerprint
    if t.strategy.name == "fsdp":  # into this rank's shards, from a checkpoint of any process count
        from tuneterm.engine import fsdp

        saved = ckpt.read_state(path)
        params = t.opt.params
        opt_like = {f"{k}/{n}": params[n] for n in (saved.get("optimizer") or {}).get("steps", {})
                    for k in ("exp_avg", "exp_avg_sq")}
        tensors = fsdp.load_into(path, t.weights, opt_like)
    else:
        tensors, saved = ckpt.load(path, t.weights, t.device)
    if saved.get("lora_fingerprint") != fingerprint:
        raise UserError(f"{path.name}: the checkpoint's LoRA base weights (fingerprint "
                        f"{saved.get('lora_fingerprint')}) are not this model's ({fingerprint})")
    try:
        t.state.load_json(saved)
    except (ValueError, TypeError) as e:
        raise UserError(f"{path.name}: {e}") from None
    t.state.kernels = t.impl  # this attempt's (auto resolves per machine; the optimizer state carries over)
    drop.set_p(t.model, t.sites, t.hp.dropout)
    frozen = t.state.frozen
    t.set_frozen(L.group_names(t.groups), False)
    t.set_frozen(frozen, True)
    for name, value in t.state.lora.items():
        t.lora_edit(name, value)
    t.task.knobs.update(t.state.task_knobs)
    t.last_ckpt_step = t.state.step
    try:
        t.opt.load_state(tensors, t.state.optimizer)
    except (ValueError, KeyError) as e:
        raise UserError(f"{path.name}: the optimizer state does not fit this run: {e}") from None


def starting_point(t) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the checkpoint trainer ``t`` resumed from, the damaged newer ones as (path, reason));
    (None, []) for a fresh attempt. Before the run's outputs open: a resume drops the rows
    written after its checkpoint, which the attempt writes again."""
    if t.lora is not None:  # another base model is no damage: one line, now
        if t.resume:
            t.lora.check_base(t.paths.checkpoints, t.state.lora_fingerprint)
        if t.replay_of is not None:
            t.lora.check_base(RunDir(t.replay_of).checkpoints, t.state.lora_fingerprint, verb="replay")
    if not t.resume:
        return None, []
    start, skipped = ckpt.latest_intact(t.paths.checkpoints, t.load_checkpoint)
    if skipped and start is None:
        raise UserError(ckpt.unusable_message(skipped))
    for path in (t.paths.metrics, t.paths.events, t.paths.samples) if t.strategy.is_leader else ():
        truncate_after(path, t.state.step)
    return start, skipped


def set_aside(t, skipped: list[tuple[Path, str]]) -> None:
    """Each damaged checkpoint a resume passed over renamed out of the listing, with a
    ``checkpoint_skipped`` event saying why (once the run's outputs are open)."""
    for path, why in skipped:
        moved = ckpt.set_aside(path)
        t.event("checkpoint_skipped", checkpoint=path.name, reason=why, moved_to=f"{CHECKPOINTS}/{moved.name}")
