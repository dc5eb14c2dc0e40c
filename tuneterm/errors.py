"""Errors and exit codes shared by every layer (no torch, no textual)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every exit status tuneterm gives a meaning to, the CLI's and the worker's alike (the
    worker's are its contract with the runner: docs/architecture.md, "The worker contract")."""

    OK = 0          # finished: done, early-stopped, or stopped by a `stop` message
    FAILED = 1      # a training error (the reason is in events.jsonl), or any other failure
    BAD_INPUT = 2   # bad usage, session or run directory
    GROUP_LOST = 70  # a rank of a multi-process session vanished mid-collective: a crash, resumable
    LOCKED = 73     # another worker holds RUN_DIR/.lock
    PAUSED = 75     # paused at a checkpoint (resumable)


class TunetermError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; the message is one line."""

    exit_code = ExitCode.FAILED


class UserError(TunetermError):
    """Bad input: usage, an invalid session file, an unknown run. Exit code 2, no traceback.

    ``field``: the session key at fault (``data.source``, ``data.text_field``), when there
    is one; the message then starts with it, and `validate` points at that key's line."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class TrainingError(TunetermError):
    """The run failed (non-finite loss under `stop`, a worker crash, ...). Exit code 1."""
