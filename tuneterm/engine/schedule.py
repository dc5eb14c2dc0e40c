"""The learning rate as a pure function of the step (no scheduler object to fight).

``lr(step) = learning_rate * factor(step)`` where ``factor`` ramps linearly from 0 over
the warmup, then follows the schedule down to the end of training. A live edit of the
learning rate re-bases the function; an edit of the schedule, warmup or length changes
``factor`` from the next step on. The shapes follow the conventions of transformers'
schedules (same names, same formulas) so that results compare with the Trainer.
"""

from __future__ import annotations

import math


def warmup_steps(total: int, warmup_steps_: int, warmup_ratio: float) -> int:
    if warmup_steps_ > 0:
        return warmup_steps_
    return int(math.ceil(total * warmup_ratio))


def factor(step: int, *, schedule: str, total: int, warmup: int, num_cycles: float = 1.0,
           power: float = 1.0, lr_end_ratio: float = 0.0) -> float:
    """The multiplier for the update that runs as optimizer step ``step + 1``
    (``step`` steps done so far), matching transformers' LambdaLR convention."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        timescale = warmup or 10_000
        shift = timescale - warmup
        return 1.0 / math.sqrt((step + shift) / timescale)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if schedule == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))
    if schedule == "polynomial":
        if step >= total:
            return lr_end_ratio
        return (1.0 - lr_end_ratio) * (1.0 - progress) ** power + lr_end_ratio
    raise ValueError(f"unknown schedule {schedule!r}")


def learning_rate(step: int, hp, total: int) -> float:
    """``hp`` is the session's Hyperparameters (as currently edited)."""
    w = warmup_steps(total, hp.warmup_steps, hp.warmup_ratio)
    end = hp.lr_end / hp.learning_rate if hp.learning_rate > 0 else 0.0
    return hp.learning_rate * factor(step, schedule=hp.schedule, total=total, warmup=w,
                                     num_cycles=hp.num_cycles, power=hp.power, lr_end_ratio=min(end, 1.0))
