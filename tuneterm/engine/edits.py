"""Edits: control messages turned into checked ``Edit``s, applied to the live training
state, and recorded in the run's edit log (its session.toml) so that a replay or a resume
applies them at the same step.

Edits land only at optimizer-step boundaries. A control message is shape-checked by
``tuneterm.protocol.Command.parse``; an edit's values by ``tuneterm.session.check`` against
the knobs as currently edited (the same rules as a session file's ``[[edits]]``); layer
names against the model's groups.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from tuneterm import protocol
from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.errors import TrainingError
from tuneterm.session.schema import Edit, editable_path
from tuneterm.states import RunEnd

# Knobs whose change changes the step plan (total_steps is recomputed).
PLAN_KEYS = ("batch_size", "gradient_accumulation", "epochs", "max_steps")


@dataclass
class Command:
    """What one control message asks for: ``kind`` is edit | checkpoint | pause | stop, or
    ``problem`` says why it is refused (shape; an edit's values are checked later)."""
    id: str | None
    kind: str
    edit: Edit | None = None
    problem: str | None = None
    request: dict | None = None  # the message, for the reject event
    logged: bool = True  # whether a refusal goes to events.jsonl (not for unparseable lines)


def command(msg: dict, step: int) -> Command:
    mid, t = msg.get("id"), msg.get("type")
    if t == "_invalid":
        return Command(None, "invalid", problem=msg["reason"], logged=False)
    try:
        cmd = protocol.Command.parse(msg)
    except protocol.ProtocolError as e:
        return Command(mid, str(t), problem=str(e))
    if cmd.type in ("checkpoint", "pause"):
        return Command(cmd.id, cmd.type)
    if cmd.type == "stop":
        return Command(cmd.id, cmd.type, edit=Edit(step=step, stop=True))  # recorded: a replay stops there too
    edit = Edit(step=step, set=dict(cmd.values), freeze=list(cmd.layers) if cmd.type == "freeze" else [],
                unfreeze=list(cmd.layers) if cmd.type == "unfreeze" else [])
    return Command(cmd.id, "edit", edit=edit, request={k: v for k, v in msg.items() if k != "v"})


def clamped(edit: Edit) -> Edit:
    """``max_steps`` below the steps already done means "stop now": it becomes the current
    step (recorded as such, so the log says what happened: the run ends at step N of N)."""
    ms = edit.set.get("max_steps")
    if isinstance(ms, int) and not isinstance(ms, bool) and 0 < ms < edit.step:
        return replace(edit, set={**edit.set, "max_steps": edit.step})
    return edit


class EditDesk:
    """Checks, applies and records edits for one trainer (which owns the objects)."""

    def __init__(self, trainer) -> None:
        self.t = trainer

    # -- live control messages ------------------------------------------------------------
    def handle(self, msg: dict):
        """Answer one control message (ack or reject) and act on it; returns (state,
        reason) when the run is to stop."""
        t = self.t
        cmd = command(msg, t.state.step)
        if cmd.problem is None and cmd.kind == "edit":
            cmd.edit = clamped(cmd.edit)
            cmd.problem = self.check(cmd.edit)
        if cmd.problem is not None:
            t.reply(protocol.reject(cmd.id, cmd.problem))
            if cmd.logged:
                extra = {"request": cmd.request} if cmd.request else {}
                t.event("reject", id=cmd.id, reason=cmd.problem, **extra)
            return None
        if cmd.kind == "checkpoint":
            path = t.save_checkpoint("request")
            t.reply(protocol.ack(cmd.id, t.state.step, checkpoint=path.name))
        elif cmd.kind == "pause":
            t.reply(protocol.ack(cmd.id, t.state.step))
            t.pause_requested = True
        elif cmd.kind == "stop":
            self.record(cmd.edit)
            t.reply(protocol.ack(cmd.id, t.state.step))
            return (RunEnd.STOPPED, "stopped on request")
        else:
            self.apply(cmd.edit)
            self.record(cmd.edit)
            t.reply(protocol.ack(cmd.id, t.state.step, total_steps=t.state.total_steps,
                                 trainable_params=t.trainable_params()))
        return None

    # -- the recorded log -----------------------------------------------------------------
    def due(self) -> list:
        """The recorded edits due at this boundary, in log order (the caller checks each
        with ``check_recorded``, applies it and counts it applied)."""
        t = self.t
        edits, st = t.session.edits, t.state
        out = []
        i = st.edits_applied
        while i < len(edits) and edits[i].step <= st.step:
            e = edits[i]
            if e.step < st.step:
                raise TrainingError(f"edit log: an edit at step {e.step} was not applied before step {st.step}")
            out.append(e)
            i += 1
        return out

    def check_recorded(self, e: Edit) -> None:
        problem = self.check(e)
        if problem:
            raise TrainingError(f"edit log: the edit at step {e.step} cannot apply: {problem}")

    def record(self, edit: Edit, source: str = "live") -> None:
        """Insert a live edit into the log (before any recorded edit still pending) and
        rewrite the run's session.toml atomically."""
        from tuneterm.session.io import save_session

        t = self.t
        t.session.edits.insert(t.state.edits_applied, edit)
        t.state.edits_applied += 1
        if t.strategy.is_leader:  # every rank keeps the log; rank 0 writes the file
            save_session(t.session, t.paths.session)
        t.event("edit", edit=edit.to_dict(), source=source)

    # -- rules ----------------------------------------------------------------------------
    def current_session(self):
        """The session with the knobs as currently edited (what values are checked against)."""
        t = self.t
        current = t.session.copy()
        current.hyperparameters = replace(t.state.hyperparameters)
        current.early_stopping.patience = t.state.early_stopping.patience
        for name, value in t.state.lora.items():
            setattr(current.lora, name, copy.deepcopy(value))
        for name, value in t.state.task_knobs.items():
            setattr(getattr(current, editable_path(name)[0]), name, value)
        return current

    def check(self, e: Edit) -> str | None:
        """Why the edit cannot apply now (None: it can)."""
        from tuneterm.session.check import check_set_values

        if e.set:
            problems = check_set_values(e.set, self.current_session())
            if problems:
                return problems[0]
            for k, v in e.set.items():
                section, name = editable_path(k)
                if section == "lora":
                    if self.t.lora is None:
                        return f"{k}: this run trains no LoRA adapters"
                    problem = self.t.lora.check_edit(self.t.groups, name, v)
                    if problem:
                        return problem
        groups = self.t.groups
        names = L.group_names(groups)
        for n in [*e.freeze, *e.unfreeze]:
            if n not in names:
                return f"unknown layer group {n!r}; this model has {', '.join(names)}"
        if e.freeze or "train_base" in e.set:
            # Counted, not named: refused here, the edit is never applied nor logged (a
            # logged one would crash the next step of every retry, resume and replay).
            frozen = (set(L.frozen_names(groups)) | set(e.freeze)) - set(e.unfreeze)
            if all(n in frozen for n in names):
                return "freezing every layer group would leave nothing to train"
            why = L.untrained_reason(groups, frozen, e.set.get("train_base"))
            if why:
                return f"this edit would leave nothing to train: {why}"
        return None

    def apply(self, e: Edit) -> None:
        t = self.t
        hp = t.state.hyperparameters
        replan = False
        for k, v in e.set.items():
            section, name = editable_path(k)
            if section == "early_stopping":
                t.state.early_stopping.patience = int(v)
            elif section == "lora":
                t.state.lora[name] = copy.deepcopy(v)
                t.lora_edit(name, v)  # lora.apply_edit: the adapters' live knobs
            elif name in t.task.knobs:  # the task's own (preference: beta, sft_weight)
                t.state.task_knobs[name] = t.task.knobs[name] = type(t.task.knobs[name])(v)
            else:
                setattr(hp, name, type(getattr(hp, name))(v))
                if name == "dropout":
                    drop.set_p(t.model, t.sites, float(v))
                replan = replan or name in PLAN_KEYS
        if e.freeze:
            t.set_frozen(e.freeze, True)
        if e.unfreeze:
            t.set_frozen(e.unfreeze, False)
        if replan:
            t.replan()
