"""Session files: TOML in (checked, every problem with its line), TOML out (atomic).

    load_session(path, workspace=None) -> Session        raises SessionError
    run_session(run_dir, workspace=None, applied=None) -> Session   a run's settings: its
        session.toml with the edit log applied (what export, eval, predict, layers read)
    loads_session(text, filename="<string>", workspace=None) -> Session
    check_session_file(path, workspace=None) -> (Session | None, [Problem])   never raises
    dumps_session(session) -> str;  save_session(session, path)

With a ``workspace``, local model/data paths are resolved against it, must stay inside it
and must exist; without one those checks are skipped (the session is still fully typed and
range-checked). No torch, no textual.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tuneterm.session.check import (  # noqa: F401  (check_set_values & co. re-exported)
    DATA_SUFFIXES,
    EDIT_KEYS,
    LM_DATA_SUFFIXES,
    apply_set_values,
    check_set_values,
    coerce_value,
    validate_layer_names,
    FIELDS,
    check_source,
    check_value,
    cross_checks,
    did_you_mean,
    editable_field,
    fmt,
    kind,
    toml_type,
)
from tuneterm.session.effective import edit_problems, effective
from tuneterm.session.locate import Locator
from tuneterm.session.problems import Problem, SessionError
from tuneterm.session.tasks import task_spec
from tuneterm.session.schema import (
    BUILTIN_DATA,
    BUILTIN_MODELS,
    LIVE_KEYS,
    SECTIONS,
    Edit,
    Session,
    editable_path,
)

_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


# -- reading ----------------------------------------------------------------------------

def loads_session(text: str, filename: str = "<string>", workspace: Path | None = None) -> Session:
    session, problems = check_session_text(text, filename, workspace)
    if problems:
        raise SessionError(problems)
    return session


def load_session(path: str | os.PathLike, workspace: Path | None = None) -> Session:
    session, problems = check_session_file(path, workspace)
    if problems:
        raise SessionError(problems)
    return session


def run_session(run_dir: str | os.PathLike, workspace: Path | None = None, applied: int | None = None) -> Session:
    """A run's settings: its session.toml with the edit log applied — the first ``applied``
    edits (a checkpoint's ``edits_applied``), or all. A live ``set train_base`` lives only in
    the log, so every reader of a run's settings goes through here. Raises SessionError."""
    from tuneterm.rundir import RunDir

    return effective(load_session(RunDir(Path(run_dir)).session, workspace), applied)


def check_session_file(path: str | os.PathLike, workspace: Path | None = None
                       ) -> tuple[Session | None, list[Problem]]:
    """Read and check one file. Unreadable files, folders and bad UTF-8 are problems too."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, [Problem(name, 1, "file", "no such file")]
    except IsADirectoryError:
        return None, [Problem(name, 1, "file", "is a directory, not a session file")]
    except OSError as e:
        return None, [Problem(name, 1, "file", f"cannot read: {e.strerror or e}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return None, [Problem(name, line, "file", f"not UTF-8 text (byte 0x{data[e.start]:02x})")]
    return check_session_text(text, name, workspace)


def check_session_text(text: str, filename: str = "<string>", workspace: Path | None = None
                       ) -> tuple[Session | None, list[Problem]]:
    """Parse and check; (the session, []) or (None, every problem found)."""
    text = text.removeprefix("\ufeff")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return None, [_syntax_problem(filename, text, str(e))]
    except RecursionError:
        return None, [Problem(filename, 1, "syntax", "arrays or tables nested too deeply")]
    loc = Locator(text)
    session, found = build_session(raw, Path(workspace) if workspace is not None else None)
    problems = [Problem(filename, loc.line(path), path, msg) for path, msg in found]
    if problems:
        return None, sorted(problems, key=lambda p: p.line)
    object.__setattr__(session, "_origin", (filename, loc))  # for validate_layer_names
    return session, []


def _syntax_problem(filename: str, text: str, msg: str) -> Problem:
    m = _TOML_POS.search(msg)
    if m:
        return Problem(filename, int(m.group(1)), "syntax", f"{msg[: m.start()]} (column {m.group(2)})")
    m = _TOML_END.search(msg)
    if m:
        return Problem(filename, max(1, text.count("\n") + (0 if text.endswith("\n") else 1)), "syntax",
                       f"{msg[: m.start()]} at the end of the file")
    return Problem(filename, 1, "syntax", msg)


def build_session(raw: dict, workspace: Path | None = None) -> tuple[Session, list[tuple[str, str]]]:
    """The Session from a parsed TOML dict, and every problem as (key path, message)."""
    s = Session()
    out: list[tuple[str, str]] = []
    valid: set[str] = set()  # paths whose value passed its own check
    for key, value in raw.items():
        if key in ("edits", "sweep"):
            # [sweep] belongs to `tuneterm sweep` (tuneterm/sweep/, docs/sweep.md), which
            # checks it; a session file that carries one is still an ordinary session.
            continue
        if key not in SECTIONS:
            out.append((key, _unknown_top(key, value)))
            continue
        if not isinstance(value, dict):
            out.append((key, f"expected a table [{key}], got {toml_type(value)} {fmt(value)}"))
            continue
        obj = getattr(s, key)
        for k, v in value.items():
            path = f"{key}.{k}"
            f = FIELDS[key].get(k)
            if f is None:
                out.append((path, _unknown_key(key, k)))
                continue
            conv, msg = check_value(f, v)
            if msg:
                out.append((path, msg))
            else:
                setattr(obj, k, conv)
                valid.add(path)
    if "edits" in raw:
        s.edits = _build_edits(raw["edits"], out)
    # Sources: only where the value itself was fine.
    if "model.source" in valid:
        out += check_source("model.source", s.model.source, BUILTIN_MODELS, workspace, data=False)
    suffixes = LM_DATA_SUFFIXES if task_spec(s.model.task).records else DATA_SUFFIXES
    # (a causal-lm session on an encoder built-in is refused by the engine when it loads
    # the model: a saved session lists every key, so it cannot be told apart here)
    if "data.source" in valid:
        out += check_source("data.source", s.data.source, BUILTIN_DATA, workspace, data=True, suffixes=suffixes)
    if "data.validation" in valid:
        out += check_source("data.validation", s.data.validation, None, workspace, data=True, optional=True,
                            suffixes=suffixes)
    if not out:  # constraints between fields: only meaningful once every field is valid
        out += cross_checks(s)
    if not out:  # ... and after each edit, as the run will see them
        out += edit_problems(s)
    return s, out


def _unknown_top(key: str, value: Any) -> str:
    if isinstance(value, dict) or (key == "edit" and isinstance(value, list)):
        return "unknown table" + (did_you_mean(key, [*SECTIONS, "edits"], show=lambda c: f"[{c}]")
                                  or f"; tables: {', '.join(SECTIONS)}, [[edits]]")
    homes = [sec for sec, fields in FIELDS.items() if key in fields]
    if homes:
        return f"a key outside any table; it belongs in [{homes[0]}]"
    return "unknown key outside any table" + did_you_mean(key, SECTIONS, show=lambda c: f"[{c}]")


def _unknown_key(section: str, key: str) -> str:
    hint = did_you_mean(key, FIELDS[section])
    if not hint:
        homes = [sec for sec, fields in FIELDS.items() if key in fields]
        hint = f"; it belongs in [{homes[0]}]" if homes else f"; [{section}] has: {', '.join(FIELDS[section])}"
    return "unknown key" + hint


def _build_edits(raw: Any, out: list[tuple[str, str]]) -> list[Edit]:
    if not isinstance(raw, list):
        out.append(("edits", f"expected [[edits]] tables, got {toml_type(raw)}"))
        return []
    edits: list[Edit] = []
    prev: int | None = None
    for i, e in enumerate(raw):
        p = f"edits[{i}]"
        if not isinstance(e, dict):
            out.append((p, f"expected a table, got {toml_type(e)} {fmt(e)}"))
            continue
        unknown = [k for k in e if k not in EDIT_KEYS]
        for k in unknown:
            out.append((f"{p}.{k}", "unknown key" + (did_you_mean(k, EDIT_KEYS)
                                                     or f"; an edit has: {', '.join(EDIT_KEYS)}")))
        step = e.get("step")
        if "step" not in e:
            out.append((p, "missing step (the optimizer step the edit applies after)"))
            step = None
        elif isinstance(step, bool) or not isinstance(step, int):
            out.append((f"{p}.step", f"expected an integer, got {toml_type(step)} {fmt(step)}"))
            step = None
        elif step < 0:
            out.append((f"{p}.step", f"{step} is out of range: must be >= 0"))
            step = None
        elif prev is not None and step < prev:
            out.append((f"{p}.step", f"step {step} comes after an edit at step {prev}; "
                                     "edits must be in step order"))
        if step is not None:
            prev = step
        values: dict = {}
        if "set" in e:
            if not isinstance(e["set"], dict) or not e["set"]:
                out.append((f"{p}.set", "expected a non-empty table of key = value"))
            else:
                for k, v in e["set"].items():
                    if editable_path(k) is None:
                        out.append((f"{p}.set.{k}", "cannot be changed while a run trains"
                                    + (did_you_mean(k, LIVE_KEYS) or f"; editable: {', '.join(LIVE_KEYS)}")))
                        continue
                    conv, msg = check_value(editable_field(k), v)
                    if msg:
                        out.append((f"{p}.set.{k}", msg))
                    else:
                        values[k] = conv
        lists = {}
        for k in ("freeze", "unfreeze"):
            v = e.get(k, [])
            if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
                if k in e:
                    out.append((f"{p}.{k}", f"expected a non-empty list of layer names, got {fmt(v)}"))
                v = []
            lists[k] = list(v)
        stop = e.get("stop", False)
        if not isinstance(stop, bool):
            out.append((f"{p}.stop", f"expected true or false, got {toml_type(stop)} {fmt(stop)}"))
            stop = False
        if not unknown and not any(k in e for k in ("set", "freeze", "unfreeze", "stop")):
            out.append((p, "an edit needs set, freeze, unfreeze or stop"))
        edits.append(Edit(step=step if step is not None else 0, set=values, stop=stop, **lists))
    return edits


# -- writing ----------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps_session(session: Session) -> str:
    """The session as TOML: every table in schema order with every key (a frozen session
    must not depend on defaults that may change), then the ``[[edits]]`` log. Written by
    hand rather than by tomli-w so that short lists stay on one line and each edit's
    ``set`` stays an inline table — one edit, one block."""
    lines: list[str] = []
    for sec, cls in SECTIONS.items():
        obj = getattr(session, sec)
        lines.append(f"[{sec}]")
        for f in dataclasses.fields(cls):
            lines.append(f"{_key(f.name)} = {_value(_typed(kind(f), getattr(obj, f.name)))}")
        lines.append("")
    for e in session.edits:
        lines.append("[[edits]]")
        lines.append(f"step = {_value(e.step)}")
        if e.set:
            items = ", ".join(f"{_key(k)} = {_value(_typed(_edit_kind(k), v))}" for k, v in e.set.items())
            lines.append(f"set = {{ {items} }}")
        for k in ("freeze", "unfreeze"):
            if getattr(e, k):
                lines.append(f"{k} = {_value(list(getattr(e, k)))}")
        if getattr(e, "stop", False):
            lines.append("stop = true")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def save_session(session: Session, path: str | os.PathLike) -> None:
    """Write atomically: a temporary file in the same folder, fsync, rename, fsync the
    folder. A reader sees the old file or the new one, never half of one."""
    from tuneterm.rundir import write_atomic

    write_atomic(path, dumps_session(session))


def _edit_kind(key: str) -> str:
    return kind(editable_field(key)) if editable_path(key) is not None else ""


def _typed(k: str, v: Any) -> Any:
    # An int given for a float field is written as a float, so load(dump(s)) == s.
    if k == "float" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} into a session file")
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} into a session file")
