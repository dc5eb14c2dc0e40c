"""Fixtures for engine tests: tiny sessions in a temporary workspace, run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_sessions import tiny_session_toml


@pytest.fixture
def tiny_session(workspace: Path):
    """Write a tiny-model session into the workspace; returns its path."""

    def make(name: str = "tiny", model: str = "builtin:tiny-bert", extra: str = "", epochs: float = 2) -> Path:
        path = workspace / "sessions" / f"{name}.toml"
        path.write_text(tiny_session_toml(name, model=model, seed=3, epochs=epochs, eval_interval=4,
                                          checkpoint_interval=4, keep_last=2, threads=None) + extra)
        return path

    return make
