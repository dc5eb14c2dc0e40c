"""A trial's session: the sweep's base session with the sampled knobs, the step budget
and the trial's name (no torch, no optuna)."""

from __future__ import annotations

from typing import Any

from tuneterm.session.schema import Session
from tuneterm.session.tasks import TASK_KNOBS
from tuneterm.sweep.spec import LORA_KNOBS, Sweep


def trial_session(sweep: Sweep, params: dict, number: int) -> Session:
    """The base session with the sampled knobs, the step budget and the trial's name."""
    s = sweep.base.copy()
    s.edits = []
    s.session.name = sweep.trial_name(number)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    s.session.description = f"sweep {sweep.name} trial {number}: {shown}"
    h = s.hyperparameters
    h.max_steps = sweep.max_steps
    for k, v in params.items():
        if k == "freeze_depth":
            depth = int(v)
            frozen = list(s.freeze.layers)
            for g in sweep.layer_groups[:depth]:
                if g not in frozen:
                    frozen.append(g)
            s.freeze.layers = frozen
        elif k in LORA_KNOBS:
            setattr(s.lora, LORA_KNOBS[k], v)
        elif k in TASK_KNOBS:  # preference: beta, sft_weight
            setattr(getattr(s, TASK_KNOBS[k][0]), TASK_KNOBS[k][1], v)
        else:
            if k == "warmup_ratio":
                h.warmup_steps = 0
            setattr(h, k, v)
    return s


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
