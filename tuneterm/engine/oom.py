"""Out of memory at a training step: halve the micro-batch, double the gradient
accumulation (the same examples per optimizer step, in the same order), record that as an
edit — so a replay or a resume does the same at the same step — and redo the step.

An odd batch size halves down (5 -> 2 x 2 micro-batches: 4 examples a step from then on);
at batch size 1 there is nothing left to halve and the run fails with a clear message.

For tests on the CPU, ``TUNETERM_FAULT_OOM_AT_STEP=N`` raises a fake CUDA OOM once, in
the last micro-batch of optimizer step N (1-based: the step that ends with N steps done);
with ``TUNETERM_FAULT_OOM_RANK=R`` only rank R of a multi-process session raises it.
"""

from __future__ import annotations

import os

import torch

from tuneterm.errors import TrainingError, UserError
from tuneterm.session.schema import Edit

FAULT_ENV = "TUNETERM_FAULT_OOM_AT_STEP"
FAULT_RANK_ENV = "TUNETERM_FAULT_OOM_RANK"
OutOfMemory = torch.cuda.OutOfMemoryError


class FaultInjector:
    """The fake OOM of ``TUNETERM_FAULT_OOM_AT_STEP`` (fires once per process)."""

    def __init__(self) -> None:
        raw = os.environ.get(FAULT_ENV, "").strip()
        try:
            self.at = int(raw) if raw else 0
        except ValueError:
            raise UserError(f"{FAULT_ENV}={raw!r}: expected a step number") from None
        rank = os.environ.get(FAULT_RANK_ENV, "").strip()
        if rank and rank != (os.environ.get("RANK", "0") or "0"):
            self.at = 0

    def maybe_fail(self, step: int, last_micro: bool) -> None:
        """Called before each micro-batch's forward pass of optimizer step ``step`` (1-based)."""
        if self.at and step == self.at and last_micro:
            self.at = 0
            raise OutOfMemory(f"CUDA out of memory (fault injected by {FAULT_ENV})")


def halving_edit(hp, steps_done: int) -> Edit:
    """The edit that halves the micro-batch and doubles accumulation, applied before the
    step after ``steps_done``; TrainingError when the batch is already 1."""
    if hp.batch_size <= 1:
        raise TrainingError(f"out of memory at step {steps_done + 1} with batch_size 1 "
                            f"(gradient_accumulation {hp.gradient_accumulation}): nothing left to halve; "
                            "use a smaller max_length, model or dtype")
    return Edit(step=steps_done, set={"batch_size": hp.batch_size // 2,
                                      "gradient_accumulation": hp.gradient_accumulation * 2})


def halve_micro_batch(trainer, message: str) -> None:
    """After an out-of-memory error in the forward/backward pass of the step after
    ``trainer.state.step``: free what it held, record and apply the halving edit."""
    trainer.opt.zero_grad()
    if trainer.device.type == "cuda":
        torch.cuda.empty_cache()
    st, hp = trainer.state, trainer.hp
    edit = halving_edit(hp, st.step)
    problem = trainer.desk.check(edit)
    if problem:
        raise TrainingError(f"out of memory at step {st.step + 1}; cannot halve the batch: {problem}")
    trainer.desk.apply(edit)
    trainer.desk.record(edit, source="oom")
    trainer.event("warning", message=f"{message} at step {st.step + 1}: micro-batch halved to {hp.batch_size} x "
                                     f"{hp.gradient_accumulation} accumulated; step redone")
