"""The epoch/step plan: which examples each optimizer step trains on, and how many steps
are left — pure functions of the knobs and the position, no trainer, no torch.

The training order of an epoch is a permutation (``data.epoch_order``); a *position* is
(steps done, epoch, cursor into that epoch's order). A step takes up to
``gradient_accumulation`` micro-batches of ``batch_size`` units from the cursor, never
across the end of an epoch, so a batch-size edit mid-epoch keeps the order. A fractional
``epochs`` (2.5) trains the last epoch on the first ``round(0.5 * n)`` units of its order.
With ``max_steps > 0`` epochs are ignored: training goes round the data until
``max_steps`` steps are done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Knobs:
    """What the plan depends on (the current, possibly edited, hyperparameters)."""
    n: int  # units in an epoch (examples, or packed rows)
    epochs: float
    max_steps: int
    batch_size: int
    gradient_accumulation: int = 1

    @classmethod
    def of(cls, hp, n: int) -> "Knobs":
        return cls(n=n, epochs=hp.epochs, max_steps=hp.max_steps, batch_size=hp.batch_size,
                   gradient_accumulation=hp.gradient_accumulation)


@dataclass(frozen=True)
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    cursor: int = 0  # units of this epoch's order already trained on


@dataclass(frozen=True)
class StepPlan:
    """One optimizer step: ``slices`` are [start, end) ranges of epoch ``epoch``'s order,
    one per micro-batch; ``after`` is the position once the step is done."""
    epoch: int
    slices: tuple
    epoch_ended: bool  # the step used up its epoch (end-of-epoch evaluation is due)
    after: Position

    @property
    def units(self) -> int:
        return sum(b - a for a, b in self.slices)


def epoch_limit(k: Knobs, epoch: int) -> int:
    """How many units of epoch ``epoch`` are trained on (the fractional last epoch)."""
    if k.max_steps > 0 or epoch + 1 <= k.epochs:
        return k.n
    if epoch < k.epochs:
        return max(1, int(round((k.epochs - epoch) * k.n)))
    return 0


def last_epoch(k: Knobs, epoch: int) -> bool:
    return k.max_steps == 0 and epoch + 1 >= math.ceil(k.epochs)


def rolled(k: Knobs, pos: Position) -> Position:
    """The position moved to the next epoch when this one is used up and training goes on."""
    if pos.cursor >= epoch_limit(k, pos.epoch) and not last_epoch(k, pos.epoch):
        return Position(pos.step, pos.epoch + 1, 0)
    return pos


def done(k: Knobs, pos: Position) -> bool:
    """Whether training is over at ``pos`` (no side effect: rolling is the caller's)."""
    if k.max_steps > 0:
        return pos.step >= k.max_steps
    p = rolled(k, pos)
    return p.cursor >= epoch_limit(k, p.epoch)


def total_steps(k: Knobs, pos: Position) -> int:
    """Steps done plus the steps the knobs leave from ``pos``."""
    if k.max_steps > 0:
        return k.max_steps
    per = k.batch_size * k.gradient_accumulation
    steps, e, c = pos.step, pos.epoch, pos.cursor
    while True:
        limit = epoch_limit(k, e)
        if limit <= c:
            if limit == 0 or e >= math.ceil(k.epochs):
                break
            e, c = e + 1, 0
            continue
        steps += math.ceil((limit - c) / per)
        e, c = e + 1, 0
    return steps


def next_step(k: Knobs, pos: Position) -> StepPlan:
    """The micro-batches of the step after ``pos`` (``pos`` already rolled) and where it
    leaves the position (rolled into the next epoch when this one is used up)."""
    limit = epoch_limit(k, pos.epoch)
    slices, c = [], pos.cursor
    for _ in range(k.gradient_accumulation):
        if c >= limit:
            break
        end = min(limit, c + k.batch_size)
        slices.append((c, end))
        c = end
    after = rolled(k, Position(pos.step + 1, pos.epoch, c))
    return StepPlan(pos.epoch, tuple(slices), c >= limit, after)


def progress(k: Knobs, pos: Position) -> float:
    """Epochs done, as the metrics rows report it."""
    return pos.epoch + pos.cursor / k.n
