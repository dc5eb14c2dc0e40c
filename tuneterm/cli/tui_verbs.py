"""Verbs of this group (placeholder until implemented)."""

from __future__ import annotations


def register(sub) -> None:
    pass


def cmd_tui(args) -> int:
    from tuneterm.errors import UserError

    raise UserError("the TUI is not built yet")
