"""Advice from a run's curves, kept apart from widgets (no textual, no torch): the session
screen's Guidance tab and its overfitting banner."""

from __future__ import annotations

from tuneterm.tui.series import MinMaxSeries

GUIDANCE = (
    "Nothing to flag yet. What the knobs are for:\n"
    "• Start from the model's defaults; validate on a held-out set.\n"
    "• Validation loss rising while training loss falls is overfitting: more weight_decay or "
    "dropout, freeze more of the lower layers, a lower learning_rate, or stop early.\n"
    "• Loss flat or noisy: a lower learning_rate or a larger batch_size; loss falling slowly: "
    "a higher learning_rate or warmup.\n"
    "• Start small: a smoke run (max_samples, max_steps) before a night run."
)


def overfitting_advice(evals: list[dict], train: MinMaxSeries, *, window: int = 3) -> str | None:
    """When the validation loss rises over the last evaluations while the training loss
    falls, say so, and what the session file's knobs can do about it."""
    vals = [(e["step"], e["val_loss"]) for e in evals if isinstance(e.get("val_loss"), (int, float))]
    if len(vals) < window:
        return None
    recent = vals[-window:]
    best = min(v for _, v in vals)
    rising = all(b[1] > a[1] for a, b in zip(recent, recent[1:])) and recent[-1][1] > best
    if not rising:
        return None
    # training loss: mean over the span before the first and after the last of those evals
    before = train.mean_between(None, recent[0][0])
    after = train.mean_between(recent[0][0], recent[-1][0])
    if before is None or after is None or not after < before:
        return None
    return ("Overfitting: validation loss rose from {:.4g} to {:.4g} over the last {} "
            "evaluations while the training loss fell ({:.4g} → {:.4g}). Try more weight_decay or "
            "dropout, freeze more of the lower layers, a lower learning_rate, or stop early "
            "([early_stopping] enabled = true, patience = 2).").format(
                recent[0][1], recent[-1][1], window, before, after)
