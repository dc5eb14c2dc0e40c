"""The actor that runs one worker attempt on a cluster node: the engine's worker as its
child process, stdin and stdout relayed through actor calls (imports no ray: the executor
wraps the class with ``ray.remote``)."""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import sys
from pathlib import Path

from tuneterm.errors import ExitCode
from tuneterm.rundir import RunDir
from tuneterm.runner.executor import _ROW_PREFIXES, WORKER_MODULE

READ_WAIT_S = 1.0  # how long one read() call waits for the worker's next line
_METRIC, _EVENT = b"\x00metric", b"\x00event"  # "look now" markers (rows travel by the files)

# The worker's launcher inside the actor: ask the kernel for SIGKILL when the actor (our
# parent) dies, give up if it already has (as a paused worker: resumable), then become the
# worker program.
_CHILD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(os.environ['TUNETERM_ACTOR_PID']):\n"
    f"    os._exit({int(ExitCode.PAUSED)})\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


class WorkerActor:
    """One worker attempt on some node: the engine's worker as a child process, its stdin
    and stdout relayed through actor calls. An async actor: a ``read`` that waits for the
    next line never blocks a ``send``."""

    def __init__(self, command: list[str] | None, extra_args: list[str], run_dir: str):
        self.command = list(command) if command else [sys.executable, "-m", WORKER_MODULE]
        self.extra_args = list(extra_args)
        self.run_dir = run_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: collections.deque = collections.deque()
        self.more: asyncio.Event | None = None
        self.eof: asyncio.Event | None = None
        self.node = socket.gethostname()

    async def where(self) -> dict:
        """This actor's node and a port free on it now (rank 0's: the group's rendezvous,
        MASTER_PORT; the tiny window before rank 0 binds it is the one torchrun has too)."""
        import ray  # inside an actor ray is there; this module imports none of it at import time

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "port": port}

    async def start(self, resume: bool, env: dict | None = None) -> dict:
        """Start the worker program; ``env``: what it gets on top of the actor's environment
        (a rank's torchrun variables)."""
        rd = Path(self.run_dir)
        if not RunDir(rd).session.is_file():
            return {"error": f"run directory {rd} is not visible on Ray node {self.node}: the workspace must be "
                             "on a filesystem every node mounts at the same path (docs/cluster.md)"}
        self.more, self.eof = asyncio.Event(), asyncio.Event()
        env = {**os.environ, **(env or {}), "TUNETERM_ACTOR_PID": str(os.getpid())}
        argv = [*self.command, str(rd), *(["--resume"] if resume else []), *self.extra_args]
        err = open(RunDir(rd).worker_stderr, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CHILD, *argv, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, cwd=str(rd), env=env,
                start_new_session=True, limit=1 << 24)
        finally:
            err.close()
        asyncio.ensure_future(self._pump())
        return self.info()

    def info(self) -> dict:
        return {"pid": os.getpid(), "worker_pid": self.proc.pid if self.proc else None, "node": self.node,
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    async def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                break
            if line.startswith(_ROW_PREFIXES):
                # A row only means "look at the run directory now": keep one marker per kind.
                line = _METRIC if b'"metric"' in line[:24] else _EVENT
                if line in self.lines:
                    continue
            self.lines.append(line)
            self.more.set()
        self.eof.set()
        self.more.set()

    async def read(self, wait_s: float = READ_WAIT_S) -> tuple[list[bytes], bool]:
        """The lines since the last call (waiting up to ``wait_s`` for one), and whether
        the worker has closed its stdout."""
        if self.more is None:
            return [], True
        if not self.lines and not self.eof.is_set():
            self.more.clear()
            try:
                await asyncio.wait_for(self.more.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        out = list(self.lines)
        self.lines.clear()
        return out, self.eof.is_set() and not self.lines

    async def send(self, line: bytes) -> bool:
        p = self.proc
        if p is None or p.stdin is None or p.stdin.is_closing() or p.returncode is not None:
            return False
        try:
            p.stdin.write(line)
            await p.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    async def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def wait(self) -> int | None:
        if self.proc is None:
            return None
        code = await self.proc.wait()
        try:
            await asyncio.wait_for(self.eof.wait(), 5.0)
        except asyncio.TimeoutError:
            pass
        return code
