"""The task seam: what differs between kinds of fine-tuning (docs/architecture.md).

A task owns the data (loading, encoding), the model it builds, the loss on a batch and
the evaluation (metrics, and for generative tasks, samples). The trainer owns the rest —
the step plan, edits, the optimizer, checkpoints — and never looks inside a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class TaskData:
    train: Any  # a sized dataset; len() = the units an epoch's order permutes
    val: Any
    info: dict = field(default_factory=dict)  # facts for the start event and log.txt (labels=..., ...)
    warnings: list = field(default_factory=list)  # lines worth a warning at start (examples left out, ...)


class Task(Protocol):
    name: str
    metrics: tuple  # the metrics evaluate() reports, e.g. ("val_loss", "val_accuracy", "val_f1")

    def mode(self, metric: str) -> str:
        """"min" | "max": which way ``metric`` improves (early stopping, sweeps)."""

    def load_data(self, session, workspace, tokenizer) -> TaskData:
        """Read and encode the session's data; UserError (one line) on bad data."""

    def build_model(self, session, workspace, tokenizer, data: TaskData) -> torch.nn.Module: ...

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
