"""Executors start workers; the daemon only ever talks to a ``WorkerHandle`` (no torch).

The interface is what the Ray executor (ray_executor.py: one Ray actor per attempt, the
run directory on shared storage) implements as well: start a worker for a run directory, send it
control lines, receive its protocol lines, signal it, wait for its exit code, and find a
worker again after a daemon restart. The queue and the protocol never see which executor
ran a worker.

``LocalExecutor`` runs ``python -m tuneterm.engine.worker RUN_DIR [--resume]`` as a child
process in its own session (a hang-up or a Ctrl-C aimed at the daemon never reaches it),
with stdin/stdout pipes for the JSON lines and stderr appended to RUN_DIR/worker.stderr.
"""

from __future__ import annotations

import abc
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import AsyncIterator

from tuneterm import protocol
from tuneterm.rundir import RunDir

WORKER_MODULE = "tuneterm.engine.worker"
# How protocol.encode starts a row message (compact separators, "v" first).
_ROW_PREFIXES = (b'{"v":1,"type":"metric"', b'{"v":1,"type":"event"')


class WorkerHandle(abc.ABC):
    """One running worker."""

    pid: int | None = None
    pid_start: str | None = None
    adopted: bool = False  # found again after a daemon restart: no pipes, only signals

    @abc.abstractmethod
    async def send(self, msg: dict) -> bool:
        """Write one control message; False when the worker can no longer read it."""

    @abc.abstractmethod
    def messages(self) -> AsyncIterator[dict]:
        """The worker's protocol lines until it closes stdout: ack/reject in full; for
        metric/event lines only ``{"type": ...}`` is promised (the rows are in the run
        directory)."""

    @abc.abstractmethod
    def signal(self, sig: int) -> None:
        """Deliver a signal (SIGTERM = pause, SIGUSR1 = checkpoint, SIGKILL)."""

    @abc.abstractmethod
    async def wait(self) -> int | None:
        """The exit code (negative: killed by that signal); None when unknowable (adopted)."""


class Executor(abc.ABC):
    @abc.abstractmethod
    async def start(self, run_dir: Path, *, resume: bool, slot: int) -> WorkerHandle:
        """Start a worker on ``run_dir`` (continuing from its checkpoint with ``resume``)."""

    @abc.abstractmethod
    async def adopt(self, run_dir: Path, pid: int | None, pid_start: str | None) -> WorkerHandle | None:
        """The worker a previous daemon started on ``run_dir``, when it still runs (async:
        finding it may take a scan of /proc or calls to a cluster)."""

    def describe(self) -> dict:
        """What ``daemon status`` shows about the executor."""
        return {"executor": "local"}

    def close(self) -> None:
        """Called once when the daemon stops cleanly (after every worker has stopped)."""


# -- local processes ------------------------------------------------------------------------


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): with the pid it identifies a
    process across pid reuse. None when the process is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, D, T for stopped, Z, ...); None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()[0]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class LocalWorker(WorkerHandle):
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.pid = self.local_pid = proc.pid
        self.pid_start = proc_start_time(proc.pid)

    async def send(self, msg: dict) -> bool:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing() or self.proc.returncode is not None:
            return False
        try:
            stdin.write(protocol.encode(msg))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    async def messages(self) -> AsyncIterator[dict]:
        assert self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # an absurdly long line: skip it
                continue
            if not line:
                return
            # Rows are read from the run directory; their stdout copy only says "look now",
            # so it is not parsed (most lines are rows: this keeps the daemon's CPU low).
            if line.startswith(_ROW_PREFIXES):
                yield {"type": "metric" if b'"metric"' in line[:24] else "event"}
                continue
            try:
                yield protocol.decode(line)
            except protocol.ProtocolError:
                continue  # not a protocol line (stray print): the run dir has the truth

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def wait(self) -> int | None:
        return await self.proc.wait()


class AdoptedWorker(WorkerHandle):
    """A worker started by a daemon that died: it keeps training (stdin EOF does not stop
    it) but its pipes are gone. The daemon follows it through the run directory and reaches
    it with signals only; ``wait`` polls /proc (it is not our child)."""

    adopted = True

    def __init__(self, pid: int, pid_start: str):
        self.pid = self.local_pid = pid
        self.pid_start = pid_start

    async def send(self, msg: dict) -> bool:
        return False

    async def messages(self) -> AsyncIterator[dict]:
        return
        yield  # pragma: no cover

    def signal(self, sig: int) -> None:
        if proc_start_time(self.pid) == self.pid_start:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    async def wait(self) -> int | None:
        while proc_start_time(self.pid) == self.pid_start:
            await asyncio.sleep(0.2)
        return None


class LocalExecutor(Executor):
    def __init__(self, command: list[str] | None = None, extra_args: list[str] | None = None,
                 gpus: int = 0):
        # ``command``: the worker program (default: this Python running the engine's worker).
        self.command = list(command) if command else [sys.executable, "-m", WORKER_MODULE]
        self.extra_args = list(extra_args or [])
        self.gpus = gpus

    async def start(self, run_dir: Path, *, resume: bool, slot: int) -> WorkerHandle:
        argv = [*self.command, str(run_dir), *(["--resume"] if resume else []), *self.extra_args]
        env = dict(os.environ)
        if self.gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)  # one slot per device
        err = open(RunDir(run_dir).worker_stderr, "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                cwd=str(run_dir), env=env, start_new_session=True, limit=1 << 24)
        finally:
            err.close()
        return LocalWorker(proc)

    def describe(self) -> dict:
        return {"executor": "local", "gpus": self.gpus}

    async def adopt(self, run_dir: Path, pid: int | None, pid_start: str | None) -> WorkerHandle | None:
        return await asyncio.to_thread(self._find, str(run_dir), pid, pid_start)

    def _find(self, run: str, pid: int | None, pid_start: str | None) -> WorkerHandle | None:
        if pid and pid_start and proc_start_time(pid) == pid_start and run in _cmdline(pid):
            return AdoptedWorker(pid, pid_start)
        # A worker whose pid never reached the queue (started just before a daemon died):
        # find it by its command line — the worker program and this run directory.
        marker = self.command[-1]
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            argv = _cmdline(int(entry.name))
            if run in argv and marker in argv:
                start = proc_start_time(int(entry.name))
                if start:
                    return AdoptedWorker(int(entry.name), start)
        return None


def gpu_count() -> int:
    """NVIDIA GPUs the driver reports (without importing torch)."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


SIGNALS = {"pause": signal.SIGTERM, "checkpoint": signal.SIGUSR1}
