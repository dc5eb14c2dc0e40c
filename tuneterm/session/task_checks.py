"""Checks that depend on the session's task (no torch, no textual): its `[data] format`
values, a task's own knobs (`[preference]`), and live edits of knobs that belong to
another task or that the task cannot take while it trains."""

from __future__ import annotations

from tuneterm.session.schema import editable_path
from tuneterm.session.tasks import TASK_KNOBS, TASK_TABLE

NO_LORA = "a LoRA knob, but this session trains no LoRA adapters (lora.enabled = false)"
NEEDS_REFERENCE = ("dpo", "ipo", "hinge")
# Under LoRA, reference = "auto" is the base model with the adapters switched off: base
# weights trained beside the adapters would move the reference with the policy.
AUTO_REF_TRAIN_BASE = ("reference = \"auto\" under LoRA is the base model with the adapters off; training base "
                       "weights would move it (use preference.reference = \"precompute\")")


def task_problems(s) -> list[tuple[str, str]]:
    """(path, message) for what the session's task does not take (the schema's choices
    refuse a task not in the table; a test's own task has no rules here)."""
    spec = TASK_TABLE.get(s.model.task)
    out = []
    if spec is None:
        return out
    if spec.records and s.data.format not in spec.formats:  # (a classifier reads tables: no format)
        out.append(("data.format", f"{s.data.format!r} is not a {spec.name} format; one of "
                                   f"{', '.join(spec.formats)}"))
    if spec.name != "preference":
        return out
    p = s.preference
    if p.loss in NEEDS_REFERENCE and p.reference == "none":
        out.append(("preference.reference", f"the {p.loss} loss compares the policy with a reference model; use "
                                            "\"auto\" or \"precompute\" (simpo and orpo need none)"))
    if p.loss not in NEEDS_REFERENCE and p.reference == "precompute":
        out.append(("preference.reference", f"the {p.loss} loss uses no reference model: nothing to precompute; "
                                            "use \"auto\" or \"none\""))
    if s.lora.enabled and s.lora.train_base and p.reference == "auto" and p.loss in NEEDS_REFERENCE:
        out.append(("lora.train_base", AUTO_REF_TRAIN_BASE))
    return out


def set_problems(values: dict, session) -> list[str]:
    """``key: message`` for the knobs of a live ``set`` this session cannot take: LoRA's
    without adapters, another task's, what the task cannot change while it trains."""
    spec = TASK_TABLE.get(session.model.task)
    out = [f"{k}: {NO_LORA}" for k in values if not session.lora.enabled and editable_path(k)[0] == "lora"]
    live = spec.live_knobs if spec else ()
    out += [f"{k}: a {TASK_KNOBS[k][0]} knob, but this session's task is {session.model.task}"
            for k in values if k in TASK_KNOBS and k not in live]
    p = session.preference
    if (session.model.task == "preference" and values.get("train_base") and session.lora.enabled
            and p.reference == "auto" and p.loss in NEEDS_REFERENCE):
        out.append(f"train_base: {AUTO_REF_TRAIN_BASE}")
    return out
