"""Fixtures for the trust tests (issue 14): tiny sessions in a temporary workspace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # trust_helpers
from tiny_sessions import tiny_session_toml


@pytest.fixture
def session_file(workspace: Path):
    """Write a tiny-model session (3 steps) into the workspace, with ``replace`` pairs
    applied to its text and ``extra`` appended; returns its path."""

    def make(name: str = "t", *, replace: dict | None = None, extra: str = "", steps: int = 3) -> Path:
        text = tiny_session_toml(name, steps=steps, eval_interval=0, checkpoint_interval=0)
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path = workspace / "sessions" / f"{name}.toml"
        path.write_text(text + extra)
        return path

    return make

