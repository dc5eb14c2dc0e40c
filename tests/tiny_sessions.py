"""The tiny-BERT session files the engine, runner and TUI tests train (a few ms a step on
the CPU). One template, so that a change of schema touches one place."""

from __future__ import annotations


def tiny_session_toml(name: str, *, model: str = "builtin:tiny-bert", seed: int = 5, steps: int | None = None,
                      epochs: float = 2, eval_interval: int = 10, checkpoint_interval: int = 5, keep_last: int = 3,
                      threads: int | None = 1) -> str:
    """``steps`` sets max_steps; without it the run lasts ``epochs`` over 96 examples (12 steps each)."""
    length = f"max_steps = {steps}" if steps is not None else f"epochs = {epochs}"
    runtime = 'kernels = "torch"\n' + ('device = "cpu"\n' if threads is not None else "")
    if threads is not None:
        runtime += f"threads = {threads}\n"
    return f"""\
[session]
name = "{name}"
seed = {seed}

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
{length}
dropout = 0.1
weight_decay = 0.01
schedule = "linear"
warmup_steps = 2

[evaluation]
interval_steps = {eval_interval}

[checkpoint]
interval_steps = {checkpoint_interval}
keep_last = {keep_last}

[runtime]
{runtime}"""
