"""Checks on session values, driven by the schema's field metadata (no torch, no textual).

Everything here works on plain values and dotted key paths; ``io`` turns the findings into
``Problem``s with file and line. The same per-field check serves the static validator, a
``[[edits]]`` entry's ``set`` table, and a live edit (``check_set_values``), so a value the
file would reject is rejected live too.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from tuneterm.errors import UserError
from tuneterm.session import schema
from tuneterm.session.prompt import template_problem
from tuneterm.session.schema import LIVE_KEYS, SECTIONS, editable_path
from tuneterm.session.task_checks import NO_LORA, set_problems, task_problems  # noqa: F401  (NO_LORA re-exported)

# section -> field name -> dataclasses.Field, in schema order
FIELDS: dict[str, dict[str, dataclasses.Field]] = {
    sec: {f.name: f for f in dataclasses.fields(cls)} for sec, cls in SECTIONS.items()
}
EDIT_KEYS = ("step", "set", "freeze", "unfreeze", "stop")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
DATA_SUFFIXES = (".csv", ".jsonl", ".parquet")  # or a datasets save_to_disk folder
MAX_STEPS = 10**9  # max_steps above this never finishes: a typo or 2**63-1, not a plan
LM_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # task = "causal-lm"


def kind(f: dataclasses.Field) -> str:
    """'int' | 'float' | 'bool' | 'str' | 'list' (annotations are strings here)."""
    return str(f.type).split("[")[0]


def fmt(v: Any) -> str:
    """A value as it reads in a message: numbers plainly, strings quoted."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return repr(v)
    return str(v)


def toml_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return "a date/time"


def _bound(v: Any) -> str:
    """A range bound, compactly: 0.0 -> 0, 1e-08 stays."""
    if v == 2**63 - 1:
        return "2^63-1"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return fmt(v)


def range_text(meta: dict) -> str | None:
    """`[0, 1)`, `(0, 1]`, `>= 1`, ...; None when the field has no range."""
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None:
        left = "(" if meta.get("min_open") else "["
        right = ")" if meta.get("max_open") else "]"
        return f"{left}{_bound(lo)}, {_bound(hi)}{right}"
    if lo is not None:
        return f"{'>' if meta.get('min_open') else '>='} {_bound(lo)}"
    return f"{'<' if meta.get('max_open') else '<='} {_bound(hi)}"


def did_you_mean(word: str, options, show=repr) -> str:
    """`; did you mean 'x'?` for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {show(close[0])}?" if close else ""


def check_value(f: dataclasses.Field, value: Any) -> tuple[Any, str | None]:
    """Check one value against its field; return (the value converted to the field's
    type, None) or (None, a message). An int is fine where a float is expected; a bool
    is never a number."""
    k, meta = kind(f), f.metadata
    given = value  # messages show the value as written
    if k == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"expected a number, got {toml_type(value)} {fmt(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return None, f"{fmt(value)} is not allowed (use a finite number)"
        value = float(value)
    elif k == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and not math.isfinite(value):
                return None, f"{fmt(value)} is not allowed (use a finite whole number)"
            return None, f"expected an integer, got {toml_type(value)} {fmt(value)}"
        if not -(2**63) <= value <= 2**63 - 1:  # the engine keeps counters in int64
            return None, f"{value} is too large (the limit is 2^63-1)"
    elif k == "bool":
        if not isinstance(value, bool):
            return None, f"expected true or false, got {toml_type(value)} {fmt(value)}"
    elif k == "str":
        if not isinstance(value, str):
            return None, f"expected a string, got {toml_type(value)} {fmt(value)}"
        if meta.get("nonempty") and not value.strip():
            return None, "must not be empty"
        if meta.get("format_template") and template_problem(value):
            return None, template_problem(value)
    elif k == "list" and meta.get("or_string") and isinstance(value, str):
        if not value.strip():
            return None, "must not be empty"
        return value, None
    elif k == "list":
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            return None, f"expected a list of strings, got {toml_type(value)} {fmt(value)}"
        allowed = meta.get("item_choices")
        for x in value:
            if allowed is not None and x not in allowed:
                return None, (f"{fmt(x)} is not one of {', '.join(allowed)}" + did_you_mean(x, allowed))
            if not x.strip():
                return None, "an empty name is not allowed"
        return list(value), None
    # ranges, choices, patterns
    rt = range_text(meta)
    if rt is not None and k in ("int", "float"):
        lo, hi = meta.get("min"), meta.get("max")
        bad = (lo is not None and (value <= lo if meta.get("min_open") else value < lo)) or (
            hi is not None and (value >= hi if meta.get("max_open") else value > hi)
        )
        if bad:
            if rt[0] in "[(":
                return None, f"{fmt(given)} is out of range {rt}"
            return None, f"{fmt(given)} is out of range: must be {rt}"
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = ", ".join(c if c else "'' (empty)" for c in choices)
        return None, f"{fmt(value)} is not one of {shown}" + did_you_mean(str(value), [c for c in choices if c])
    pattern = meta.get("pattern")
    if pattern is not None and not re.match(pattern, value):
        return None, f"{fmt(value)} is not allowed: {meta.get('pattern_help') or 'must match ' + pattern}"
    return value, None


# -- live edits -------------------------------------------------------------------------

def editable_field(key: str) -> dataclasses.Field:
    sec, name = editable_path(key)
    return FIELDS[sec][name]


def check_set_values(values: dict, session: "schema.Session | None" = None) -> list[str]:
    """Check the values of a live ``set`` edit; one ``key: message`` per problem (empty:
    fine). With ``session``, also check the result as a whole (e.g. epochs and max_steps
    both 0). The engine, the runner and the TUI share this, and ``[[edits]]`` use it too."""
    out: list[str] = []
    if not isinstance(values, dict) or not values:
        return ["set: expected a non-empty table of key = value"]
    for key, value in values.items():
        if editable_path(key) is None:
            out.append(f"{key}: cannot be changed while a run trains" + _editable_hint(key))
            continue
        _, msg = check_value(editable_field(key), value)
        if msg:
            out.append(f"{key}: {msg}")
    if not out and session is not None:
        out += set_problems(values, session)  # what the run would refuse when the edit came due
        trial = apply_set_values(session, values)
        out += [f"{path.rsplit('.', 1)[-1]}: {msg}" for path, msg in cross_checks(trial, edit=True)]
    return out


def _editable_hint(key: str) -> str:
    hint = did_you_mean(key, LIVE_KEYS)
    return hint or f"; editable: {', '.join(LIVE_KEYS)}"


def apply_set_values(session: "schema.Session", values: dict) -> "schema.Session":
    """A copy of ``session`` with a (checked) ``set`` edit applied."""
    s = session.copy()
    for key, value in values.items():
        f = editable_field(key)
        conv, _ = check_value(f, value)
        sec, name = editable_path(key)
        setattr(getattr(s, sec), name, value if conv is None else conv)
    return s


def coerce_value(key: str, text: str) -> Any:
    """Parse the value of a command-line ``key=value`` for an editable key into the
    field's type (``"2e-5"`` -> 2e-05, ``"32"`` -> 32). Raises UserError (one line) on an
    unknown key or a value that does not parse; ranges are ``check_set_values``'s job."""
    key = key.strip()
    if editable_path(key) is None:
        raise UserError(f"{key}: cannot be changed while a run trains" + _editable_hint(key))
    k = kind(editable_field(key))
    t = text.strip()
    try:
        if k == "int":
            if re.fullmatch(r"[+-]?\d[\d_]*", t):
                return int(t.replace("_", ""))
            raise ValueError
        if k == "float":
            v = float(t)
            if not math.isfinite(v):
                raise UserError(f"{key}: {t} is not allowed (use a finite number)")
            return v
        if k == "bool":
            if t.lower() in ("true", "false"):
                return t.lower() == "true"
            raise ValueError
        if k == "list":  # `train_base=layer.0,layer.1`, or as in TOML: `train_base=["layer.0"]`; empty: []
            if t.startswith("["):
                try:
                    items = json.loads(t)
                except json.JSONDecodeError:
                    raise ValueError from None
                if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                    raise ValueError
                return [x.strip() for x in items if x.strip()]
            return [x.strip() for x in t.split(",") if x.strip()]
    except ValueError:
        what = {"int": "an integer", "float": "a number", "bool": "true or false",
                "list": 'layer names, as layer.0,layer.1 or ["layer.0", "layer.1"]'}[k]
        raise UserError(f"{key}: expected {what}, got {text!r}") from None
    return t


# -- whole-session checks ---------------------------------------------------------------

def cross_checks(s: "schema.Session", edit: bool = False) -> list[tuple[str, str]]:
    """Constraints between fields, as (path, message). ``edit``: only those a live edit
    can break (a session may carry both warmup keys; an edit may set either)."""
    out: list[tuple[str, str]] = []
    hp = s.hyperparameters
    if hp.max_steps == 0 and hp.epochs == 0:
        out.append(("hyperparameters.epochs", "epochs and max_steps are both 0; set one of them > 0"))
    if hp.max_steps > MAX_STEPS:
        out.append(("hyperparameters.max_steps",
                    f"{hp.max_steps} is more than 10^9 steps, which no run finishes (30 years at one step a "
                    "second); use at most 1000000000, or epochs"))
    elif hp.max_steps > 0 and hp.warmup_steps >= hp.max_steps:
        out.append(("hyperparameters.warmup_steps",
                    f"{hp.warmup_steps} warmup steps leave nothing of max_steps = {hp.max_steps}"))
    if edit:
        return out
    if hp.warmup_steps > 0 and hp.warmup_ratio > 0:
        out.append(("hyperparameters.warmup_steps", "set warmup_steps or warmup_ratio, not both"))
    out += task_problems(s)
    if hp.warmup_ratio >= 1:
        out.append(("hyperparameters.warmup_ratio", f"{fmt(hp.warmup_ratio)} leaves no steps after warmup; use < 1"))
    es = s.early_stopping
    lower_better = schema.metric_mode(es.metric) == "min"
    if es.mode == "max" and lower_better:
        out.append(("early_stopping.mode", f"'max' does not fit {es.metric} (lower is better); use 'min' or ''"))
    if es.mode == "min" and not lower_better:
        out.append(("early_stopping.mode", f"'min' does not fit {es.metric} (higher is better); use 'max' or ''"))
    msg = metric_problem(s, es.metric)
    if msg and (es.enabled or es.metric not in schema.TASK_METRICS[s.model.task]):
        out.append(("early_stopping.metric", msg))
    return out


def metric_problem(s: "schema.Session", metric: str) -> str | None:
    """Why ``metric`` is not reported by this session (its task's metrics; for
    classification also ``evaluation.metrics``), or None when it is. Early stopping and
    sweep objectives share this."""
    task = s.model.task
    known = schema.TASK_METRICS[task]
    if metric not in known:
        return f"{metric} is not a {task} metric; one of {', '.join(known)}" + did_you_mean(metric, known)
    if task == "sequence-classification":
        needed = metric.removeprefix("val_")
        if needed not in s.evaluation.metrics:
            return f"{metric} is not computed; add {needed!r} to evaluation.metrics"
    return None


def machine_checks(s: "schema.Session") -> list[tuple[str, str]]:
    """Limits of the machine that checks the session (`validate`, `run`, the runner's
    pre-flight) — not made when a saved session is only read, which may happen elsewhere."""
    cpus = cpu_count()
    threads = s.runtime.threads
    if threads > cpus:
        return [("runtime.threads", f"{threads} is more than the {cpus} CPUs here: threads beyond the CPUs wait "
                                    f"for each other and slow training down; use at most {cpus} (0: torch's default)")]
    return []


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


def check_source(path: str, source: str, builtins, workspace: Path | None, *, data: bool,
                 optional: bool = False, suffixes: tuple = DATA_SUFFIXES) -> list[tuple[str, str]]:
    """A model/data source or a validation file: a known builtin, a hub id (models only),
    or a local path inside the workspace (relative paths resolve against it)."""
    from tuneterm.workspace import inside

    if not source:
        return [] if optional else [(path, "must not be empty")]
    if source.startswith("builtin:"):
        if builtins is None:
            return [(path, f"{fmt(source)}: no builtin here; give a local {'/'.join(suffixes)} file")]
        if source not in builtins:
            return [(path, f"unknown builtin {fmt(source)}; known: {', '.join(builtins)}"
                     + did_you_mean(source, builtins))]
        return []
    looks_local = source.startswith(("./", "../", "/", "~")) or data
    local = None
    if workspace is not None:
        p = Path(source).expanduser()
        local = p if p.is_absolute() else workspace / p
        looks_local = looks_local or local.exists()
    if not looks_local and HUB_ID.match(source):
        return []  # a hub id (`org/name`): resolved by the engine when online
    # A name without a suffix may be a folder written by datasets' save_to_disk (checked below).
    suffix = Path(source).suffix.lower()
    if data and suffix not in suffixes and (suffix or (local is not None and not local.is_dir())):
        text = [s for s in suffixes if s != ".parquet"]
        return [(path, f"{fmt(source)}: expected a {' or '.join(text)} file, a .parquet file or a datasets "
                       "save_to_disk folder")]
    if workspace is None:
        return []
    try:
        full = inside(workspace, Path(source).expanduser(), what="path")
    except UserError:
        return [(path, f"{fmt(source)} is outside the workspace {workspace}")]
    if not full.exists():
        return [(path, f"{fmt(source)} does not exist (relative paths start at the workspace {workspace})")]
    if data and full.is_dir() and not suffix:
        from tuneterm.session.datafiles import folder_problem

        problem = folder_problem(full, shown=source)
        return [(path, problem)] if problem else []
    if data and not full.is_file():
        return [(path, f"{fmt(source)} is not a file")]
    if not data and not full.is_dir():
        return [(path, f"{fmt(source)} is not a model folder")]
    return []


def validate_layer_names(session: "schema.Session", known: list[str]) -> list:
    """Check the layer names of ``[freeze]`` and of the edits' freeze/unfreeze lists against
    the model's layer groups (``known``, from the engine); returns ``Problem``s with the
    file and lines the session was loaded from."""
    from tuneterm.session.problems import Problem

    origin = getattr(session, "_origin", None)
    file = origin[0] if origin else "<session>"
    locate = origin[1].line if origin else (lambda path: 1)
    out = []
    known_set = set(known)

    def check(path: str, names: list[str]) -> None:
        for j, name in enumerate(names):
            if name not in known_set:
                msg = f"unknown layer {name!r}" + did_you_mean(name, known)
                if not msg.endswith("?"):
                    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                    msg += f"; layers: {shown} (see `tuneterm layers`)"
                out.append(Problem(file, locate(f"{path}[{j}]"), path, msg))

    check("freeze.layers", session.freeze.layers)
    if known and known_set <= set(session.freeze.layers):
        out.append(Problem(file, locate("freeze.layers"), "freeze.layers",
                           "freezes every layer group: nothing would train"))
    check("lora.train_base", session.lora.train_base)
    for i, e in enumerate(session.edits):
        check(f"edits[{i}].freeze", e.freeze)
        check(f"edits[{i}].unfreeze", e.unfreeze)
        if isinstance(e.set.get("train_base"), list):
            check(f"edits[{i}].set.train_base", e.set["train_base"])
    return out
