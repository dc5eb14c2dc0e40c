"""Fixtures for engine tests: tiny sessions in a temporary workspace, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = """
[session]
name = "{name}"
seed = 3

[model]
source = "{model}"

[data]
source = "builtin:bbc-news"
max_length = 24
max_samples = 96
max_eval_samples = 32

[hyperparameters]
learning_rate = 2e-3
batch_size = 8
epochs = {epochs}
dropout = 0.1
weight_decay = 0.01
schedule = "linear"
warmup_steps = 2

[evaluation]
interval_steps = 4

[checkpoint]
interval_steps = 4
keep_last = 2

[runtime]
kernels = "torch"
"""


@pytest.fixture
def tiny_session(workspace: Path):
    """Write a tiny-model session into the workspace; returns its path."""

    def make(name: str = "tiny", model: str = "builtin:tiny-bert", extra: str = "", epochs: float = 2) -> Path:
        path = workspace / "sessions" / f"{name}.toml"
        path.write_text(TINY.format(name=name, model=model, epochs=epochs) + extra)
        return path

    return make
