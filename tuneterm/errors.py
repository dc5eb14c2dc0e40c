"""Errors shared by every layer (no torch, no textual)."""

from __future__ import annotations


class TunetermError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; the message is one line."""

    exit_code = 1


class UserError(TunetermError):
    """Bad input: usage, an invalid session file, an unknown run. Exit code 2, no traceback.

    ``field``: the session key at fault (``data.source``, ``data.text_field``), when there
    is one; the message then starts with it, and `validate` points at that key's line."""

    exit_code = 2

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class TrainingError(TunetermError):
    """The run failed (non-finite loss under `stop`, a worker crash, ...). Exit code 1."""

    exit_code = 1
