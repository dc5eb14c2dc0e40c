"""Runs side by side, from their directories alone (no torch, no textual): the session
keys that differ, the edit logs, best and final metrics, steps and wall time.
`tuneterm compare`, the TUI's compare screen and `tuneterm report` share this module.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.rundir import RunDir, read_jsonl
from tuneterm.session.tasks import METRIC_MODES
from tuneterm.states import RunEnd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



def read_session(run_dir: Path) -> dict:
    """The run's session as TOML ({} when it cannot be read: `report` still lists the run)."""
    try:
        return session_of(run_dir)
    except UserError:
        return {}


def session_of(run_dir: Path) -> dict:
    """The run's session.toml, or a UserError naming it when it is not a readable session
    (`compare` must not show a run it could not read as one with nothing in it)."""
    path = RunDir(run_dir).session
    try:
        with open(path, "rb") as fh:
            session = tomllib.load(fh)
    except OSError as e:
        raise UserError(f"{path}: cannot read the run's session ({e.strerror or e})") from None
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError
        raise UserError(f"{path}: not a session file ({(str(e).splitlines() or [type(e).__name__])[0]})") from None
    for key, value in session.items():  # every section a table, the edit log a list of them
        edits = key == "edits"
        if not (isinstance(value, list) and all(isinstance(e, dict) for e in value) if edits
                else isinstance(value, dict)):
            raise UserError(f"{path}: not a session file ({key} is not {'a list of tables' if edits else 'a table'})")
    return session


def flatten(d: dict, prefix: str = "") -> dict:
    """{"hyperparameters.learning_rate": 5e-5, ...} without the edit log."""
    out = {}
    for k, v in d.items():
        if not prefix and k == "edits":
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def edit_parts(e: dict, value=str, names: str = " ") -> list[str]:
    """One edit of a log (its [[edits]] table, or an edit event's ``edit``) in words, a part
    per change: "learning_rate=2e-05", "unfreeze layer.1", "stop". ``value`` writes a set
    value, ``names`` joins layer names. compare, log.txt, the trackers and the replay screen
    each join the parts their way."""
    parts = [f"{k}={value(v)}" for k, v in (e.get("set") or {}).items()]
    for verb in ("freeze", "unfreeze"):
        if e.get(verb):
            parts.append(f"{verb} " + names.join(e[verb]))
    if e.get("stop"):
        parts.append("stop")
    return parts


def edit_text(e: dict) -> str:
    """One edit as a person writes it: "learning_rate=2e-05, unfreeze layer.1"."""
    return ", ".join(edit_parts(e)) or "(empty)"


def metric_mode(metric: str, session: dict) -> str:
    mode = (session.get("early_stopping") or {}).get("mode") or ""
    return mode or METRIC_MODES.get(metric, "max")  # which way each task's metric improves


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_summary(run_dir: Path, session: dict | None = None) -> dict:
    """What one run did: its state, steps, best and final metrics, edits, wall time."""
    rd = RunDir(run_dir)
    session = read_session(rd.path) if session is None else session
    metrics, events = read_jsonl(rd.metrics), read_jsonl(rd.events)
    train = [r for r in metrics if r.get("kind") == "train"]
    evals = [r for r in metrics if r.get("kind") == "eval"]
    metric = (session.get("early_stopping") or {}).get("metric") or "val_loss"
    mode = metric_mode(metric, session)
    scored = [r for r in evals if _finite(r.get(metric))]
    best = None
    if scored:
        pick = min if mode == "min" else max
        row = pick(scored, key=lambda r: r[metric])
        best = {"metric": metric, "value": row[metric], "step": row.get("step")}
    final = {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("val_")}
    ends = [e for e in events if e.get("kind") == "end"]
    end = ends[-1] if ends else None
    times = [r["time"] for r in metrics + events if _finite(r.get("time"))]
    starts = [e["time"] for e in events if e.get("kind") == "start" and _finite(e.get("time"))]
    t0 = starts[0] if starts else (min(times) if times else None)
    t1 = end["time"] if end and _finite(end.get("time")) else (max(times) if times else None)
    state = end.get("state") if end else ("running" if events else "not started")
    failure = end.get("reason") if end and end.get("state") == RunEnd.FAILED else None
    return {
        "run": rd.name, "run_dir": str(rd.path), "name": (session.get("session") or {}).get("name", rd.name),
        "model": (session.get("model") or {}).get("source"), "data": (session.get("data") or {}).get("source"),
        "state": state, "steps": train[-1].get("step", 0) if train else 0,
        "final_loss": train[-1].get("loss") if train else None, "best": best, "final": final,
        "edits": [{"step": e.get("step"), "text": edit_text(e)} for e in session.get("edits") or []],
        "wall_s": round(t1 - t0, 3) if t0 is not None and t1 is not None else None,
        "started": t0, "ended": t1 if end else None, "failure": failure,
    }


def compare_runs(run_dirs: list[Path]) -> dict:
    """The runs' summaries and the session keys whose values differ between them."""
    sessions = [session_of(Path(d)) for d in run_dirs]
    flats = [flatten(s) for s in sessions]
    keys = sorted(set().union(*flats)) if flats else []
    diff = {}
    for k in keys:
        values = [f.get(k) for f in flats]
        if any(v != values[0] for v in values[1:]):
            diff[k] = values
    return {"runs": [run_summary(Path(d), s) for d, s in zip(run_dirs, sessions)], "differences": diff}


# ---------------------------------------------------------------------------- text

def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def fmt_wall(s) -> str:
    if s is None:
        return "–"
    s = float(s)
    return f"{s:.1f}s" if s < 60 else fmt_duration(s)


def fmt_duration(s: float) -> str:
    """Whole seconds as "42s", "5m03s" or "1h02m" (a run's wall time, the TUI's time left)."""
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def table_rows(cmp: dict) -> list[tuple[str, list[str]]]:
    """(label, one cell per run) rows of the comparison table; "" labels head a section."""
    runs = cmp["runs"]
    rows: list[tuple[str, list[str]]] = [("run", [r["run"] for r in runs])]
    rows.append(("# session differences", []))
    if not cmp["differences"]:
        rows.append(("(none)", ["" for _ in runs]))
    for k, values in cmp["differences"].items():
        rows.append((k, [fmt(v) for v in values]))
    rows.append(("# edits", []))
    n_edits = max((len(r["edits"]) for r in runs), default=0)
    if n_edits == 0:
        rows.append(("(none)", ["" for _ in runs]))
    for i in range(n_edits):
        rows.append((f"edit {i + 1}", [f"step {r['edits'][i]['step']}: {r['edits'][i]['text']}"
                                       if i < len(r["edits"]) else "" for r in runs]))
    rows.append(("# results", []))
    rows.append(("state", [str(r["state"]) for r in runs]))
    rows.append(("steps", [str(r["steps"]) for r in runs]))
    rows.append(("wall time", [fmt_wall(r["wall_s"]) for r in runs]))
    rows.append(("best", [f"{r['best']['metric']} {fmt(r['best']['value'])} @ {r['best']['step']}"
                          if r["best"] else "–" for r in runs]))
    rows.append(("final loss", [fmt(r["final_loss"]) for r in runs]))
    names = sorted(set().union(*[r["final"] for r in runs])) if runs else []
    for k in names:
        rows.append((f"final {k}", [fmt(r["final"].get(k)) for r in runs]))
    return rows


def format_table(cmp: dict) -> str:
    rows = table_rows(cmp)
    n = len(cmp["runs"])
    label_w = max(len(label) for label, _ in rows)
    widths = [max([len(cells[i]) for label, cells in rows if cells] + [4]) for i in range(n)]
    out = []
    for label, cells in rows:
        if not cells:
            out.append(label.lstrip("# ").upper())
            continue
        out.append("  ".join([label.ljust(label_w)] + [c.ljust(w) for c, w in zip(cells, widths)]).rstrip())
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- report

def parse_since(text: str) -> float:
    """"12h", "30m", "2d", "90s" -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    if len(t) >= 2 and t[-1] in units:
        try:
            n = float(t[:-1])
        except ValueError:
            n = -1
        if n > 0:
            return n * units[t[-1]]
    from tuneterm.errors import UserError

    raise UserError(f"--since {text!r}: expected a duration such as 12h, 30m, 2d")


def report(runs_root: Path, since_s: float, now: float | None = None) -> list[dict]:
    """Summaries of the runs that started or ended within the last ``since_s`` seconds,
    oldest first."""
    now = time.time() if now is None else now
    out = []
    if not runs_root.is_dir():
        return out
    for d in sorted(runs_root.iterdir()):
        if not RunDir(d).session.is_file():
            continue
        try:
            if d.stat().st_mtime < now - since_s and RunDir(d).events.stat().st_mtime < now - since_s:
                continue
        except OSError:
            continue
        s = run_summary(d)
        last = s["ended"] or s["started"]
        if last is not None and last >= now - since_s:
            out.append(s)
    out.sort(key=lambda s: s["started"] or 0)
    return out


REPORT_COLUMNS = ["run", "state", "steps", "best", "edits", "wall"]


def report_cells(r: dict) -> dict:
    return {"run": r["run"], "state": str(r["state"]), "steps": str(r["steps"]),
            "best": f"{r['best']['metric']} {fmt(r['best']['value'])}" if r["best"] else "–",
            "edits": str(len(r["edits"])), "wall": fmt_wall(r["wall_s"])}


def report_footer(rows: list[dict], since: str) -> list[str]:
    """The totals by state, then one line per failure with its reason."""
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines = [f"{len(rows)} runs in the last {since}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    lines += [f"failed: {r['run']}: {r['failure']}" for r in rows if r["failure"]]
    return lines
