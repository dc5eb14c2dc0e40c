"""The workspace layout of DESIGN.md (no torch, no textual).

    sessions/*.toml   runs/<run-id>/   .tuneterm/
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from tuneterm.errors import UserError


def resolve_workspace(arg: str | os.PathLike | None = None) -> Path:
    """--workspace DIR, else $TUNETERM_HOME, else the current directory."""
    raw = arg or os.environ.get("TUNETERM_HOME") or os.getcwd()
    return Path(raw).expanduser().resolve()


def runs_dir(ws: Path) -> Path:
    return ws / "runs"


def sessions_dir(ws: Path) -> Path:
    return ws / "sessions"


def state_dir(ws: Path) -> Path:
    """.tuneterm/: the queue database, the daemon's pid and log."""
    d = ws / ".tuneterm"
    d.mkdir(parents=True, exist_ok=True)
    return d


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def new_run_id(name: str) -> str:
    """<name>-<UTC timestamp>-<random>: sortable, unique, safe as a path component."""
    stem = _SAFE.sub("-", name).strip("-.") or "run"
    return f"{stem[:48]}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def inside(ws: Path, path: str | os.PathLike, what: str = "path") -> Path:
    """Resolve ``path`` relative to the workspace and refuse anything that escapes it."""
    p = Path(path)
    full = (p if p.is_absolute() else ws / p).resolve()
    try:
        full.relative_to(ws.resolve())
    except ValueError:
        raise UserError(f"{what} {str(path)!r} is outside the workspace {ws}") from None
    return full


def clash(path: str | os.PathLike, ws: Path, extra: tuple = ()) -> str | None:
    """How writing a folder at ``path`` would overwrite the workspace ``ws``: "is", "holds"
    or "lies inside" one of its own folders (runs/, sessions/, .tuneterm/; the workspace
    itself may only hold other folders), or one of ``extra`` ((what, folder) pairs: a run
    kept elsewhere). Symbolic links are resolved on both sides. None: no overlap."""
    p = Path(path).absolute().resolve()
    w = Path(ws).resolve()
    if p == w:
        return f"is the workspace {w}"
    if w.is_relative_to(p):
        return f"holds the workspace {w}"
    own = [("the workspace's runs/ folder", runs_dir(ws)), ("the workspace's sessions/ folder", sessions_dir(ws)),
           ("the workspace's .tuneterm/ folder", ws / ".tuneterm")]
    for what, folder in [*extra, *own]:  # the most precise name first: "lies inside the run"
        f = Path(folder).resolve()
        if p == f:
            return f"is {what} ({f})"
        if f.is_relative_to(p):
            return f"holds {what} ({f})"
        if p.is_relative_to(f):
            return f"lies inside {what} ({f})"
    return None


def find_run(ws: Path, ref: str) -> Path:
    """A run directory from a path, a run id, or a unique prefix of one."""
    p = Path(ref)
    if p.is_dir() and (p / "session.toml").exists():
        return p.resolve()
    rd = runs_dir(ws)
    if (rd / ref / "session.toml").exists():
        return (rd / ref).resolve()
    if rd.is_dir() and "/" not in ref:
        hits = sorted(d for d in rd.iterdir() if d.name.startswith(ref) and (d / "session.toml").exists())
        if len(hits) == 1:
            return hits[0].resolve()
        if len(hits) > 1:
            names = ", ".join(h.name for h in hits[:5])
            raise UserError(f"run {ref!r} is ambiguous: {names}")
    raise UserError(f"no run {ref!r} in {rd}")
