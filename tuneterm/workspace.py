"""The workspace layout of DESIGN.md (no torch, no textual).

    sessions/*.toml   runs/<run-id>/   .tuneterm/ (the runner's: queue, daemon, config)

A command resolves its workspace once, into a ``Workspace`` that carries these paths, and
passes it down; nothing below resolves it again.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.rundir import RunDir

RUNS, SESSIONS, STATE = "runs", "sessions", ".tuneterm"


@dataclass(frozen=True)
class Workspace:
    """A resolved workspace: its root (absolute, links resolved) and the paths of its
    layout. ``os.fspath(ws)`` and ``str(ws)`` are the root."""

    root: Path

    @classmethod
    def resolve(cls, arg: "str | os.PathLike | Workspace | None" = None) -> "Workspace":
        """--workspace DIR, else $TUNETERM_HOME, else the current directory. A Workspace is
        resolved already: it comes back as it is."""
        if isinstance(arg, Workspace):
            return arg
        raw = arg or os.environ.get("TUNETERM_HOME") or os.getcwd()
        return cls(Path(raw).expanduser().resolve())

    runs = property(lambda self: self.root / RUNS)
    sessions = property(lambda self: self.root / SESSIONS)
    # .tuneterm/: the runner's files (docs/runner.md, "Files")
    state = property(lambda self: self.root / STATE)
    queue_db = property(lambda self: self.state / "queue.db")          # the queue (SQLite, WAL)
    daemon_pid = property(lambda self: self.state / "daemon.pid")      # the running daemon's pid
    daemon_lock = property(lambda self: self.state / "daemon.lock")    # flock held by the daemon (one per workspace)
    daemon_log = property(lambda self: self.state / "daemon.log")
    daemon_sock = property(lambda self: self.state / "daemon.sock")    # the socket the daemon bound (its path)
    config = property(lambda self: self.state / "config.toml")         # [runner], [callback]
    callback_log = property(lambda self: self.state / "callback.log")
    ray_head = property(lambda self: self.state / "ray-head.json")     # the workspace's single-node Ray
    tmp = property(lambda self: self.state / "tmp")                    # the pre-flight check's copies

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def made(self) -> "Workspace":
        """The workspace with its .tuneterm/ folder created."""
        self.state.mkdir(parents=True, exist_ok=True)
        return self

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)


def resolve_workspace(arg: "str | os.PathLike | Workspace | None" = None) -> Path:
    """The root of ``Workspace.resolve(arg)``, for code that wants a plain path."""
    return Workspace.resolve(arg).root


def runs_dir(ws: os.PathLike) -> Path:
    return Path(ws) / RUNS


def sessions_dir(ws: os.PathLike) -> Path:
    return Path(ws) / SESSIONS


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def new_run_id(name: str) -> str:
    """<name>-<UTC timestamp>-<random>: sortable, unique, safe as a path component."""
    stem = _SAFE.sub("-", name).strip("-.") or "run"
    return f"{stem[:48]}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def inside(ws: os.PathLike, path: str | os.PathLike, what: str = "path") -> Path:
    """Resolve ``path`` relative to the workspace and refuse anything that escapes it."""
    ws, p = Path(ws), Path(path)
    full = (p if p.is_absolute() else ws / p).resolve()
    try:
        full.relative_to(ws.resolve())
    except ValueError:
        raise UserError(f"{what} {str(path)!r} is outside the workspace {ws}") from None
    return full


def clash(path: str | os.PathLike, ws: Path, extra: tuple = ()) -> str | None:
    """How writing at ``path`` (a folder, or a file) would overwrite the workspace ``ws``:
    "is", "holds" or "lies inside" one of its own folders (runs/, sessions/, .tuneterm/; the
    workspace itself may only hold other folders), one of ``extra`` ((what, folder) pairs:
    a run kept elsewhere), or any run directory (``RunDir.is_run``; one holding it: two
    levels down at most). Symbolic links are resolved on both sides. None: no overlap."""
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
    # any other run, wherever it is kept (another workspace, a folder of copied runs)
    for f in (p, *p.parents):
        if RunDir(f).is_run():
            return f"is the run directory {f}" if f == p else f"lies inside the run directory {f}"
    held = next((d for d in _folders_below(p, depth=2) if RunDir(d).is_run()), None)
    return f"holds the run directory {held}" if held else None


def _folders_below(path: Path, depth: int):
    """The folders under ``path``, ``depth`` levels deep at most (a runs/ folder and its runs;
    a workspace holding runs/ is found by its own check)."""
    try:
        subs = [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:  # absent, a file, or unreadable
        return
    for d in subs:
        yield d
        if depth > 1:
            yield from _folders_below(d, depth - 1)


def find_run(ws: os.PathLike, ref: str) -> Path:
    """A run directory from a path, a run id, or a unique prefix of one."""
    p = Path(ref)
    if p.is_dir() and RunDir(p).session.exists():
        return p.resolve()
    rd = runs_dir(ws)
    if RunDir(rd / ref).session.exists():
        return (rd / ref).resolve()
    if rd.is_dir() and "/" not in ref:
        hits = sorted(d for d in rd.iterdir() if d.name.startswith(ref) and RunDir(d).session.exists())
        if len(hits) == 1:
            return hits[0].resolve()
        if len(hits) > 1:
            names = ", ".join(h.name for h in hits[:5])
            raise UserError(f"run {ref!r} is ambiguous: {names}")
    raise UserError(f"no run {ref!r} in {rd}")
