"""Run directories: create one from a session, train it (foreground or worker), replay it.

Used by `tuneterm run`/`replay` and by the worker process the runner starts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
from pathlib import Path

from tuneterm.errors import TrainingError, UserError
from tuneterm.session.io import load_session, save_session
from tuneterm.session.schema import Session
from tuneterm.workspace import new_run_id, runs_dir

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LOCKED, EXIT_PAUSED = 0, 1, 2, 73, 75


class RunLocked(UserError):
    """Another worker holds the run's lock."""


def create_run(workspace: Path, session: Session, *, run_id: str | None = None) -> Path:
    """runs/<run-id>/session.toml — the frozen session, written atomically."""
    rd = runs_dir(workspace) / (run_id or new_run_id(session.name))
    rd.mkdir(parents=True, exist_ok=False)
    save_session(session, rd / "session.toml")
    return rd


class RunLock:
    """An exclusive flock on RUN_DIR/.lock for the worker's lifetime: never two workers
    on one run, even across a daemon crash (the kernel drops the lock when we die)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
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
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "log.txt", encoding="utf-8")]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def train_run(run_dir: Path, workspace: Path, *, sinks: list, mailbox=None, resume: bool = False,
              kernels: str | None = None, device: str | None = None) -> tuple[int, str]:
    """Train a run directory to its end. Returns (exit code, end state)."""
    from tuneterm.engine.loop import Trainer

    session = load_session(run_dir / "session.toml", workspace)
    lock = RunLock(run_dir)
    if not lock.acquire():
        raise RunLocked(f"{run_dir.name}: another worker is training this run")
    trainer = Trainer(session, run_dir, workspace, sinks=sinks, mailbox=mailbox, resume=resume,
                      kernels=kernels, device=device)
    try:
        trainer.setup()
        state = trainer.train()
    except TrainingError:
        trainer.close()
        lock.release()
        raise
    trainer.close()
    lock.release()
    return (EXIT_PAUSED if state == "paused" else EXIT_OK), state


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def comparable(row: dict) -> dict:
    from tuneterm.engine.loop import WALL_CLOCK_FIELDS

    return {k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS}


def compare_metrics(original: list[dict], replay: list[dict]) -> str | None:
    """None when equal (wall-clock fields aside), else a one-line description of the
    first difference, naming its step."""
    for a, b in zip(original, replay):
        ca, cb = comparable(a), comparable(b)
        if ca != cb:
            keys = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
            k = keys[0]
            return (f"step {a.get('step')} ({a.get('kind')}): {k} differs: "
                    f"original {ca.get(k)!r}, replay {cb.get(k)!r}")
    if len(original) != len(replay):
        longer, which = (original, "original") if len(original) > len(replay) else (replay, "replay")
        extra = longer[min(len(original), len(replay))]
        return f"step {extra.get('step')} ({extra.get('kind')}): only the {which} has this row " \
               f"({len(original)} rows vs {len(replay)})"
    return None
