"""Run directories: create one from a session, train it (foreground or worker), replay it.

Used by `tuneterm run`/`replay` and by the worker process the runner starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path

from tuneterm import rundir
from tuneterm.engine.control import Sink
from tuneterm.errors import UserError
from tuneterm.session.io import load_session, save_session
from tuneterm.session.schema import Session
from tuneterm.states import RunEnd
from tuneterm.workspace import new_run_id, runs_dir


class RunLocked(UserError):
    """Another worker holds the run's lock."""


def create_run(workspace: Path, session: Session, *, run_id: str | None = None) -> Path:
    """runs/<run-id>/session.toml — the frozen session, written atomically."""
    rd = runs_dir(workspace) / (run_id or new_run_id(session.name))
    rd.mkdir(parents=True, exist_ok=False)
    save_session(session, rundir.RunDir(rd).session)
    return rd


class RunLock:
    """An exclusive flock on RUN_DIR/.lock for the worker's lifetime: never two workers
    on one run, even across a daemon crash (the kernel drops the lock when we die)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = rundir.RunDir(run_dir).lock
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def setup_logging(run_dir: Path, to_stderr: bool) -> None:
    """The run's log.txt (and, ``to_stderr``, tuneterm's own lines on stderr). The
    libraries' warnings go to log.txt only."""
    from tuneterm.engine.liblogs import OwnLines, route_library_warnings

    handlers: list[logging.Handler] = [logging.FileHandler(rundir.RunDir(run_dir).log, encoding="utf-8")]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].addFilter(OwnLines())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)
    route_library_warnings()


def train_run(run_dir: Path, workspace: Path, *, sinks: list[Sink], mailbox=None, resume: bool = False,
              kernels: str | None = None, device: str | None = None, replay_of: Path | None = None,
              lock: RunLock | None = None) -> tuple[int, RunEnd]:
    """Train a run directory to its end. Returns (exit code, how it ended). ``replay_of``: the
    run this one replays (a LoRA replay refuses another base model than that run's).
    ``lock``: the run's lock, already held by the caller (the worker holds it for its whole
    life); without one, train_run takes it and lets it go at the end."""
    from tuneterm.engine.trainer import Trainer

    session = load_session(rundir.RunDir(run_dir).session, workspace)
    # Rank 0 of a multi-process session holds the lock; the other ranks only compute.
    own = lock is None and os.environ.get("RANK", "0") in ("", "0")
    if own:
        lock = RunLock(run_dir)
        if not lock.acquire():
            raise RunLocked(f"{run_dir.name}: another worker is training this run")
    trainer = Trainer(session, run_dir, workspace, sinks=sinks, mailbox=mailbox, resume=resume,
                      kernels=kernels, device=device, replay_of=replay_of)
    try:
        trainer.setup()
    except Exception as e:
        trainer.close()  # its rows flushed before the end row below
        if own:
            lock.release()
        if own or lock is not None:
            _end_setup_failure(run_dir, e)
        raise
    try:
        end = trainer.train()
    finally:
        trainer.close()
        if own:
            lock.release()
    return int(end.exit_code), end


def _end_setup_failure(run_dir: Path, error: Exception) -> None:
    """An attempt that fails before training (no usable checkpoint, data gone, no CUDA)
    still ends its events.jsonl with why: the runner and the TUI read a run's outcome
    there, and would otherwise show the previous attempt's end."""
    import json
    import time

    events = rundir.RunDir(run_dir).events
    last = rundir.read_tail_rows(events)
    step = last[-1].get("step", 0) if last else 0
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    row = {"kind": "end", "step": step if isinstance(step, int) else 0, "state": RunEnd.FAILED,
           "reason": f"setup failed: {reason}", "time": round(time.time(), 3)}
    try:
        with open(events, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    except OSError:
        pass

