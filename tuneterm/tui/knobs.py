"""Checking a live edit before it is sent: the session package's own checks (the ones
`tuneterm validate`, `tuneterm set` and the engine use), with the schema's metadata for
help text. No textual here."""

from __future__ import annotations

import dataclasses
from typing import Any

from tuneterm.errors import UserError
from tuneterm.session import schema


def _field(key: str) -> dataclasses.Field | None:
    where = schema.editable_path(key)  # lora_dropout -> ("lora", "dropout")
    if where is None:
        return None
    for f in dataclasses.fields(schema.SECTIONS[where[0]]):
        if f.name == where[1]:
            return f
    return None


def knob_help(key: str) -> str:
    f = _field(key)
    if f is None:
        return f"{key}: not editable while a run trains"
    meta = f.metadata
    parts = [str(meta.get("help", ""))]
    if "choices" in meta:
        parts.append("one of: " + ", ".join(map(str, meta["choices"])))
    else:
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None or hi is not None:
            left = "(" if meta.get("min_open") else "["
            right = ")" if meta.get("max_open") else "]"
            parts.append(f"range {left}{'' if lo is None else lo}, {'' if hi is None else hi}{right}")
    return " · ".join(p for p in parts if p)


def check_knob(key: str, text: str) -> tuple[Any, str | None]:
    """(value, None) when ``key = text`` may be sent; (None, problem) otherwise."""
    from tuneterm.session.check import check_set_values, coerce_value

    try:
        value = coerce_value(key, text)
    except UserError as e:
        return None, str(e)
    problems = check_set_values({key: value})
    if problems:
        return None, "; ".join(problems)
    return value, None
