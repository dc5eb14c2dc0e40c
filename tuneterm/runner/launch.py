"""Starting the workspace's daemon from a client (no torch, no textual): the detached process,
and the wait until it serves or says why it cannot (its one line on --ready-fd: paths.READY_*).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from tuneterm.runner.paths import READY_ERROR, READY_OK, READY_RUNNING, RunnerUnavailable, config_path, log_path
from tuneterm.workspace import Workspace

RAY_START_S = 180.0


def _uses_ray(ws: Workspace) -> bool:
    try:
        with open(config_path(ws), "rb") as fh:
            runner = tomllib.load(fh).get("runner", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return isinstance(runner, dict) and (runner.get("executor") == "ray" or "ray" in runner)


def start_daemon(workspace: Workspace | Path, *, timeout: float = 10.0, slots: int | None = None) -> dict:
    """Start the detached daemon for ``workspace`` and wait until it serves (or says why not).

    Returns {"pid": N, "started": bool}; ``started`` is False when one was already running.
    Raises RunnerUnavailable with the daemon's own one-line reason when it refuses to start
    (a corrupt queue database, an unusable runtime folder, ...).
    """
    ws = Workspace.resolve(workspace)
    if _uses_ray(ws):
        timeout = max(timeout, RAY_START_S)  # connecting to Ray, perhaps starting a local head
    rfd, wfd = os.pipe()
    cmd = [sys.executable, "-m", "tuneterm.runner.daemon", "--workspace", str(ws), "--ready-fd", str(wfd)]
    if slots is not None:
        cmd += ["--slots", str(slots)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(wfd,), start_new_session=True,
                                close_fds=True, cwd="/")
    finally:
        os.close(wfd)
    # The daemon double-forks: this child exits at once; the grandchild writes one line to
    # the pipe when it serves ("ok PID" / "running PID") or cannot start ("error MESSAGE").
    deadline = time.monotonic() + timeout
    data = b""
    with os.fdopen(rfd, "rb", buffering=0) as r:
        os.set_blocking(r.fileno(), False)
        while time.monotonic() < deadline:
            try:
                chunk = r.read(4096)
            except BlockingIOError:
                chunk = None
            if chunk:
                data += chunk
                if b"\n" in data:
                    break
            elif chunk == b"":  # every writer closed
                break
            else:
                time.sleep(0.02)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    line = data.decode(errors="replace").strip()
    if line.startswith(READY_OK):
        return {"pid": int(line.split()[1]), "started": True}
    if line.startswith(READY_RUNNING):
        return {"pid": int(line.split()[1]), "started": False}
    if line.startswith(READY_ERROR):
        raise RunnerUnavailable(line[len(READY_ERROR):].strip())
    raise RunnerUnavailable(f"the runner daemon did not start within {timeout:.0f}s; see {log_path(ws)}")
