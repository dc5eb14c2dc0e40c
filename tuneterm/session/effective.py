"""A run's settings as its edit log leaves them (no torch, no textual).

A run directory's session.toml is the session as written *plus* its ``[[edits]]``: a live
``set train_base=[...]`` or ``freeze`` lives only in the log. Whatever reads a run's
settings (export, eval, predict, layers) reads them through ``io.run_session`` (which
applies ``effective``), never the file's tables alone; the checks that follow a session
through its log (``edit_problems``, the engine's nothing-to-train check) step with ``walk``.

    apply_edit(session, edit) -> Session        one edit's knobs and freezing applied (a copy)
    walk(session) -> [(i, edit, Session)]       the session after each edit, in log order
    effective(session, applied=None) -> Session the first ``applied`` edits applied (None: all)
    edit_problems(session) -> [(key path, message)]  what an [[edits]] entry cannot do
"""

from __future__ import annotations

from tuneterm.session.check import NO_LORA, apply_set_values, cross_checks
from tuneterm.session.schema import Edit, Session, editable_path


def apply_edit(session: Session, edit: Edit) -> Session:
    """A copy of ``session`` with one edit's ``set`` values and freezing applied, in the
    engine's order: the values, then ``freeze``, then ``unfreeze``. The edit log is kept."""
    s = apply_set_values(session, edit.set) if edit.set else session.copy()
    frozen = [n for n in s.freeze.layers if n not in edit.unfreeze]
    frozen += [n for n in edit.freeze if n not in frozen and n not in edit.unfreeze]
    s.freeze.layers = frozen
    return s


def walk(session: Session) -> list[tuple[int, Edit, Session]]:
    """(index, edit, the session as that edit leaves it) for each entry of the edit log."""
    out, cur = [], session
    for i, e in enumerate(session.edits):
        cur = apply_edit(cur, e)
        out.append((i, e, cur))
    return out


def effective(session: Session, applied: int | None = None) -> Session:
    """The session with its first ``applied`` edits applied (None: the whole log) — the
    knobs a run trained with at that point. ``edits`` still lists the whole log."""
    cur = session.copy()
    for e in session.edits[: len(session.edits) if applied is None else max(0, int(applied))]:
        cur = apply_edit(cur, e)
    origin = getattr(session, "_origin", None)
    if origin is not None:
        object.__setattr__(cur, "_origin", origin)
    return cur


def edit_problems(session: Session) -> list[tuple[str, str]]:
    """What the edit log asks that a run would refuse when it got there, as (key path,
    message): a LoRA knob in a session that trains no adapters, and the cross-field rules
    (warmup against max_steps, ...) on the knobs as each edit leaves them."""
    out: list[tuple[str, str]] = []
    for i, e, cur in walk(session):
        for key in e.set:
            where = editable_path(key)
            if where and where[0] == "lora" and not session.lora.enabled:
                out.append((f"edits[{i}].set.{key}", NO_LORA))
        if e.set:
            for path, msg in cross_checks(cur, edit=True):
                key = path.rsplit(".", 1)[-1]
                at = f"edits[{i}].set.{key}" if key in e.set else f"edits[{i}].set"
                out.append((at, f"after this edit: {msg}"))
    return out
