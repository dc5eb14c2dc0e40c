"""Helpers for runner tests (put on sys.path by tests/runner/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tiny_sessions import tiny_session_toml

HERE = Path(__file__).parent
FAKE_WORKER = HERE / "fake_worker.py"
DAEMON = "-m tuneterm.runner"

# A tiny BERT session: a few ms per step on the CPU; checkpoints every 5 steps.
def tiny(name: str, steps: int) -> str:
    return tiny_session_toml(name, steps=steps)


FAKE = """\
[session]
name = "{name}"

[hyperparameters]
max_steps = {steps}

[checkpoint]
interval_steps = 5

[fake]
step_s = {step_s}
{extra}
"""


def wait_for(pred, timeout: float = 60.0, what: str = "condition", interval: float = 0.02):
    """Poll ``pred`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as e:  # a daemon restarting, a file being replaced
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    p = Path(run_dir) / name
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def strip_clock(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s", "elapsed")} for r in rs]


class Harness:
    def __init__(self, ws: Path):
        self.ws = ws
        self.clients: list = []

    # -- processes -------------------------------------------------------------------
    def pids(self, needle: str = "") -> list[int]:
        """Processes of this workspace (daemon, workers, checks) whose command line also
        contains ``needle``."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                c = cmdline(int(d.name))
                if str(self.ws) in c and needle in c and alive(int(d.name)):
                    out.append(int(d.name))
        return out

    def worker_pids(self, run_dir: Path | str | None = None) -> list[int]:
        return [p for p in self.pids(str(run_dir) if run_dir else "") if DAEMON not in cmdline(p)
                and "validate" not in cmdline(p)]

    def daemon_pid(self) -> int | None:
        ps = self.pids(DAEMON)  # `python -m tuneterm.runner` (or its old name, tuneterm.runner.daemon)
        return ps[0] if ps else None

    def tt(self, *args: str, env: dict | None = None, timeout: float = 120):
        """The CLI in a subprocess on this workspace."""
        cmd = [sys.executable, "-m", "tuneterm", *args, "--workspace", str(self.ws)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})

    def kill_daemon(self) -> None:
        pid = self.daemon_pid()
        assert pid, "no daemon to kill"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, "the daemon to die")

    # -- clients ---------------------------------------------------------------------
    def client(self, start: bool = True):
        from tuneterm.runner.client import RunnerClient

        c = RunnerClient.connect(self.ws, start=start, timeout=20.0)
        self.clients.append(c)
        return c

    def session(self, name: str, steps: int = 40, fake: bool = False, step_s: float = 0.01, extra: str = "") -> Path:
        p = self.ws / "sessions" / f"{name}.toml"
        text = FAKE.format(name=name, steps=steps, step_s=step_s, extra=extra) if fake else tiny(name, steps)
        p.write_text(text)
        return p

    def use_fake_worker(self, **runner) -> None:
        cfg = {"worker": [sys.executable, str(FAKE_WORKER)], **runner}
        lines = ["[runner]"] + [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
        (self.ws / ".tuneterm").mkdir(exist_ok=True)
        (self.ws / ".tuneterm" / "config.toml").write_text("\n".join(lines) + "\n")

    def cleanup(self) -> None:
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        for _ in range(3):  # the daemon first (it would start workers), then the rest
            d = self.daemon_pid()
            if d:
                os.kill(d, signal.SIGKILL)
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not self.pids():
                break
            time.sleep(0.1)


