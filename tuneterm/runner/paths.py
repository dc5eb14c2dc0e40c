"""Where the runner keeps its files, and finding the workspace's daemon (no torch, no textual).

    WS/.tuneterm/...             the queue, the daemon's pid, lock, log and socket record, the
                                 configuration: ``tuneterm.workspace.Workspace`` names them
    RUNTIME/<hash>.sock          the socket: RUNTIME is an owner-only (0700) per-user folder,
                                 $TUNETERM_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tuneterm,
                                 else /tmp/tuneterm-<uid>

The socket cannot live in the workspace: Unix socket paths are limited to ~107 bytes and
workspaces can be deep. The file name is a hash of the workspace's resolved path.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from tuneterm.errors import TunetermError
from tuneterm.rundir import write_atomic
from tuneterm.workspace import Workspace

SOCKET_PATH_MAX = 107
# The one line a starting daemon writes to its --ready-fd: "ok PID" (it serves), "running PID"
# (another daemon already serves the workspace) or "error MESSAGE" (it cannot start).
READY_OK, READY_RUNNING, READY_ERROR = "ok", "running", "error"


class RunnerUnavailable(TunetermError):
    """The runner daemon cannot be reached or started. Exit code 1."""


def runtime_dir() -> Path:
    """The per-user runtime folder, created 0700 and checked to be ours and private."""
    env = os.environ.get("TUNETERM_RUNTIME_DIR")
    if env:
        d = Path(env)
    elif os.environ.get("XDG_RUNTIME_DIR") and len(os.environ["XDG_RUNTIME_DIR"]) < 60:
        d = Path(os.environ["XDG_RUNTIME_DIR"]) / "tuneterm"
    else:
        d = Path(f"/tmp/tuneterm-{os.getuid()}")
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise RunnerUnavailable(f"cannot create the runtime folder {d}: {e.strerror}") from None
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        # Someone else created /tmp/tuneterm-<uid> (or a symlink there): never use it.
        raise RunnerUnavailable(f"runtime folder {d} is not a directory owned by uid {os.getuid()}; remove it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(d, 0o700)
    return d


def socket_path(ws: Workspace | Path) -> Path:
    digest = hashlib.sha256(str(Workspace.resolve(ws).root).encode()).hexdigest()[:20]
    p = runtime_dir() / f"{digest}.sock"
    if len(str(p)) > SOCKET_PATH_MAX:
        raise RunnerUnavailable(f"socket path {p} is longer than {SOCKET_PATH_MAX} bytes; "
                                "set TUNETERM_RUNTIME_DIR to a short folder")
    return p


# The runner's files under WS/.tuneterm/, that folder made when missing (a Path is resolved
# first; a Workspace is resolved already).

def db_path(ws: Workspace | Path) -> Path:
    return Workspace.resolve(ws).made().queue_db


def pid_path(ws: Workspace | Path) -> Path:
    return Workspace.resolve(ws).made().daemon_pid


def lock_path(ws: Workspace | Path) -> Path:
    return Workspace.resolve(ws).made().daemon_lock


def log_path(ws: Workspace | Path) -> Path:
    return Workspace.resolve(ws).made().daemon_log


def config_path(ws: Workspace | Path) -> Path:
    return Workspace.resolve(ws).made().config


def read_pid(ws: Workspace | Path) -> int | None:
    try:
        return int(pid_path(ws).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def socket_record_path(ws: Workspace | Path) -> Path:
    return Workspace.resolve(ws).made().daemon_sock


def record_socket(ws: Workspace | Path, sock: Path) -> None:
    """Written by the daemon once it serves: the socket it bound, so that a shell with
    another TUNETERM_RUNTIME_DIR / XDG_RUNTIME_DIR still finds it from the workspace."""
    write_atomic(socket_record_path(ws), f"{sock}\n", durable=False)


def lock_holder(ws: Workspace | Path) -> int | None:
    """The pid holding the workspace's daemon lock, read from /proc/locks (taking the lock
    to test it would race a daemon that is starting); None when nobody holds it."""
    ws = Workspace.resolve(ws)
    try:
        st = os.stat(ws.daemon_lock)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a "->" marks a waiter)
        if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:
            continue
        try:
            pid, inode = int(parts[4]), int(parts[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if inode == st.st_ino:
            return read_pid(ws) or pid
    return None


def daemon_socket(ws: Workspace | Path) -> Path:
    """Where clients find the workspace's daemon: the socket it recorded when a daemon
    holds the workspace lock, else where this shell's runtime folder puts it."""
    ws = Workspace.resolve(ws)
    if lock_holder(ws):
        try:
            recorded = Path(socket_record_path(ws).read_text().strip())
        except OSError:
            recorded = None
        if recorded and recorded.is_socket():
            return recorded
    return socket_path(ws)
