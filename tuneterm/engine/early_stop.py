"""Early stopping: the best value of the watched metric, and how many evaluations in a row
failed to beat it. ``patience`` is live-editable; the rest comes from the session."""

from __future__ import annotations

from dataclasses import dataclass

# What a checkpoint holds of it (the configuration is the session's).
STATE_FIELDS = ("best", "best_step", "bad_evals", "patience")


@dataclass
class EarlyStopping:
    metric: str
    mode: str  # "min" | "max"
    patience: int
    min_delta: float = 0.0
    enabled: bool = True
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"early stopping mode {self.mode!r}: expected min or max")

    @classmethod
    def of(cls, spec, mode: str) -> "EarlyStopping":
        """From the session's [early_stopping]; ``mode`` when the spec leaves it empty."""
        return cls(metric=spec.metric, mode=spec.mode or mode, patience=spec.patience, min_delta=spec.min_delta,
                   enabled=spec.enabled)

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, step: int) -> bool:
        """Record an evaluation; True when it is the new best."""
        if self.improves(value):
            self.best, self.best_step, self.bad_evals = value, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in STATE_FIELDS}

    def load_state_dict(self, d: dict) -> None:
        missing = [k for k in STATE_FIELDS if k not in d]
        if missing:
            raise ValueError(f"early stopping state: missing {missing[0]!r}")
        for k in STATE_FIELDS:
            setattr(self, k, d[k])
