"""Kept importable for older callers: the trainer lives in tuneterm.engine.trainer (and
plan, edits, state, early_stop, tasks); the run summary in tuneterm.engine.metrics."""

from tuneterm.engine.metrics import summary
from tuneterm.engine.trainer import Paused, Trainer, resolve_device
from tuneterm.rundir import WALL_CLOCK_FIELDS

__all__ = ["Paused", "Trainer", "WALL_CLOCK_FIELDS", "resolve_device", "summary"]
