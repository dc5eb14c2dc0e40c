"""The task seam: what differs between kinds of fine-tuning (docs/architecture.md).

A task owns the data (loading, encoding), the model it builds, the loss on a batch and
the evaluation (metrics, and for generative tasks, samples). The trainer owns the rest —
the step plan, edits, the optimizer, checkpoints — and never looks inside a batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class TaskData:
    train: Any  # a sized dataset; len() = the units an epoch's order permutes
    val: Any
    info: dict = field(default_factory=dict)  # facts for the start event and log.txt (labels=..., ...)
    warnings: list = field(default_factory=list)  # lines worth a warning at start (examples left out, ...)


@dataclass
class TaskEnv:
    """What the trainer decided that a task's second model (preference tuning's reference)
    or its work before step 1 must follow: device, dtype, accel (kernels, precision,
    compile), where the run lives, the evaluation batch size, and the strategy (the ranks'
    sums for values of a step; rank 0 alone writes files)."""
    device: Any
    dtype: Any
    acc: Any  # engine/accel.Accel
    run_dir: Any  # Path
    workspace: Any  # Path | None
    eval_batch_size: int
    lora: bool  # the model gets LoRA adapters after bind()
    replay_of: Any = None  # the run a replay retrains (Path | None)
    strategy: Any = None  # engine/strategy's Single | DDP; None: one process


class Task(Protocol):
    name: str
    metrics: tuple  # the metrics evaluate() reports, e.g. ("val_loss", "val_accuracy", "val_f1")
    impl: str | None  # the trainer's kernels ("triton" | "torch"), set before load_data
    knobs: dict  # the task's live-editable knobs and their current values (preference: beta, sft_weight)

    def mode(self, metric: str) -> str:
        """"min" | "max": which way ``metric`` improves (early stopping, sweeps)."""

    def load_data(self, session, workspace, tokenizer) -> TaskData:
        """Read and encode the session's data; UserError (one line) on bad data."""

    def build_model(self, session, workspace, tokenizer, data: TaskData) -> torch.nn.Module: ...

    def bind(self, model, env: TaskEnv) -> None:
        """The model as built, on the trainer's device and dtype, before dropout and LoRA."""

    def prepare(self, model, data: TaskData, env: TaskEnv) -> None:
        """Work before step 1 on the finished model (LoRA attached), before a resume loads a
        checkpoint into it; facts for the start event go into ``data.info``."""

    def collate(self, dataset, indices, device) -> dict:
        """A batch of tensors on ``device`` from the units ``indices`` of ``dataset``."""

    def batch_weight(self, batch: dict) -> int:
        """The units ``loss(batch)`` is a mean over (examples; trained tokens for an LM)."""

    def loss(self, model, batch: dict) -> torch.Tensor:
        """The mean loss over ``batch_weight(batch)`` units, an fp32 scalar."""

    def evaluate(self, model, data: TaskData, device, batch_size: int) -> dict:
        """Every metric of ``metrics`` over the validation set."""

    def samples(self, model, data: TaskData, device, session, step: int) -> list:
        """Rows for samples.jsonl (``[]``: none)."""

    def step_metrics(self) -> dict:
        """Values for the training row of the step just computed (beside loss, lr, ...),
        from the ``loss`` calls since the last call, which it forgets. Called on every rank
        at the same points (a rank with no rows too): the global batch's values, summed
        over ranks with ``env.strategy``."""

    def forget_step_metrics(self) -> None:
        """Drop what ``loss`` counted since the last ``step_metrics`` (this rank only)."""

    def evaluate_file(self, run, path) -> dict:
        """`tuneterm eval`: {"run", "checkpoint", "step", "data", "examples", *the metrics without
        their val_}, and whatever else the task reports, for a loaded run on a file."""

    def predict_file(self, run, path, *, probs: bool, max_new_tokens, make_progress) -> tuple[list, list]:
        """`tuneterm predict`: (output rows, input columns) for the rows of a file."""


class BaseTask:
    """What a task that needs none of the optional hooks does with them."""
    impl: str | None = None

    def __init__(self) -> None:
        self.knobs: dict = {}

    def bind(self, model, env: TaskEnv) -> None:
        pass

    def prepare(self, model, data: TaskData, env: TaskEnv) -> None:
        pass

    def step_metrics(self) -> dict:
        return {}

    def forget_step_metrics(self) -> None:
        """Drop what ``loss`` counted since the last row (a step redone after running out
        of memory): on this rank alone, no collective."""

    def uncounted(self):
        """A ``loss`` call in this context leaves the step's values as they were (FSDP's
        weight-0 row on a rank with no rows of a micro-batch)."""
        return contextlib.nullcontext()
