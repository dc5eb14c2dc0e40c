"""A single-node Ray for the workspace (``address = "local"``): started by the first daemon
that needs it, found again by the next one, stopped by ``daemon stop`` (imports no ray)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.rundir import write_atomic
from tuneterm.runner.ray_config import RayConfig, workspace_tag
from tuneterm.workspace import Workspace

log = logging.getLogger("tuneterm.runner")


def _head_state_path(ws: Path) -> Path:
    return Workspace.resolve(ws).ray_head


def _pids_under(temp_dir: str, *, head_only: bool = False) -> list[int]:
    """Processes of this user that belong to the Ray instance whose files are under
    ``temp_dir``: its command line names the folder, or (Ray's agents and workers retitle
    themselves) one of its open files lies there. ``head_only``: the GCS server alone,
    whose presence means the instance is up."""
    out = []
    root = temp_dir.rstrip("/")
    for d in os.scandir("/proc"):
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if os.stat(d.path).st_uid != os.getuid():
                continue
            cmd = Path(d.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        named = root + "/" in cmd or cmd.rstrip().endswith(root)
        if head_only:
            if named and "gcs_server" in cmd:
                out.append(int(d.name))
            continue
        if not named:
            try:
                named = any(os.readlink(f.path).startswith(root + "/") for f in os.scandir(Path(d.path, "fd")))
            except OSError:
                named = False
        if named:
            out.append(int(d.name))
    return out


def _kill_all(pids_of, wait_s: float = 10.0) -> None:
    pids = pids_of()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (pids := pids_of()):
            time.sleep(0.1)
        if not pids:
            return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_head(ws: Path, cfg: RayConfig) -> str:
    """The address of this workspace's single-node Ray, started now unless a previous
    daemon's still runs. Its files go under ``temp_dir`` (default
    /tmp/tuneterm-ray-UID-WSHASH); usage statistics are off."""
    state_path = _head_state_path(ws)
    temp_dir = cfg.temp_dir or f"/tmp/tuneterm-ray-{os.getuid()}-{workspace_tag(ws)}"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = None
    if state and state.get("temp_dir") == temp_dir and _pids_under(temp_dir, head_only=True):
        return state["address"]
    # None runs (or only leftovers of one whose GCS died): start afresh.
    _kill_all(lambda: _pids_under(temp_dir), 5.0)
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
            f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
            "--object-store-memory=100000000"]
    log.info("starting a local Ray head: %s", " ".join(argv[3:]))
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"[runner.ray] address = \"local\": cannot start Ray ({e})") from None
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or f"exit code {r.returncode}").splitlines()[-1]
        raise UserError(f"[runner.ray] address = \"local\": `ray start --head` failed: {last}")
    address = f"127.0.0.1:{port}"
    write_atomic(state_path, json.dumps({"address": address, "temp_dir": temp_dir}) + "\n", durable=False)
    return address


def stop_local_head(ws: Path) -> bool:
    """Stop the single-node Ray that ``start_local_head`` started for ``ws`` (only its own
    processes: other Ray instances of this user are left alone)."""
    path = _head_state_path(ws)
    try:
        temp_dir = json.loads(path.read_text())["temp_dir"]
    except (OSError, ValueError, KeyError):
        return False
    _kill_all(lambda: _pids_under(temp_dir))
    path.unlink(missing_ok=True)
    return True
