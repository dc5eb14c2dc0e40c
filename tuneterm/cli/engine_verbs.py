"""Verbs of this group (placeholder until implemented)."""

from __future__ import annotations


def register(sub) -> None:
    pass
