"""A run's rows (metrics.jsonl, events.jsonl) as what a tracker writes: scalars at their
step, the knobs, each edit at its step, the end state. One translation for the live sink
and for `tuneterm track`, so both write the same thing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm import rundir
from tuneterm.compare import edit_parts
from tuneterm.session.tasks import TASK_TABLE

# The training row's fields that are numbers worth a curve (step, time, total_steps aside).
# the trainer's own, then every task's (preference: reward_accuracy, reward_margin, ...)
TRAIN_FIELDS = ("loss", "lr", "grad_norm", "epoch", "batch_size", "samples_per_s",
                *dict.fromkeys(m for spec in TASK_TABLE.values() for m in spec.train_metrics))


@dataclass(frozen=True)
class Scalars:
    step: int
    values: dict  # tag ("train/loss", "eval/val_loss") -> float
    wall: float | None


@dataclass(frozen=True)
class EditMark:
    step: int
    text: str           # this edit: "learning_rate=0.0001, freeze layer.0"
    at_step: tuple      # every edit applied at this step so far, in order


@dataclass(frozen=True)
class Started:
    row: dict           # the start/resume event


@dataclass(frozen=True)
class Ended:
    state: str
    step: int
    reason: str
    wall: float | None


@dataclass
class RunInfo:
    """What a tracker knows about the run before its first row."""
    run_id: str                      # the run directory's name: the key that makes `track` idempotent
    name: str                        # the session's name
    knobs: dict = field(default_factory=dict)  # flat "section.key" -> bool | int | float | str
    resumed: bool = False            # an attempt that continues earlier ones (run --resume, a worker restarted)
    started: float | None = None     # when the run started (None: now)


def knobs_of(session) -> dict:
    """The session's settings as flat ``section.key`` values (lists as text), without
    [tracking] (where the run reports, not what it trains) and, when LoRA is off, [lora]."""
    out: dict = {}
    for section, table in session.to_dict().items():
        if section in ("edits", "tracking") or (section == "lora" and not table.get("enabled")):
            continue
        for key, value in table.items():
            if isinstance(value, (list, tuple)):
                value = ", ".join(map(str, value)) if value else "[]"
            out[f"{section}.{key}"] = value
    return out


def _value(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list) else str(v)


def edit_text(edit: dict) -> str:
    """One edit of the log, the way a person reads it."""
    return ", ".join(edit_parts(edit, _value, ", ")) or "(nothing)"


class Translator:
    """Rows in, tracker calls out. Keeps the edits seen per step: a resumed attempt applies
    again the edits of its checkpoint's step, which the log already holds once."""

    def __init__(self) -> None:
        self.edits: dict[int, list] = {}
        self._seen: set = set()

    def metric(self, row: dict) -> list:
        step = row.get("step")
        if not isinstance(step, int):
            return []
        if row.get("kind") == "train":
            values = {f"train/{k}": row[k] for k in TRAIN_FIELDS if _number(row.get(k))}
        elif row.get("kind") == "eval":
            values = {f"eval/{k}": v for k, v in row.items() if k.startswith("val_") and _number(v)}
        else:
            return []
        return [Scalars(step, values, row.get("time"))] if values else []

    def event(self, row: dict) -> list:
        kind, step = row.get("kind"), row.get("step", 0)
        if kind in ("start", "resume"):
            return [Started(row)]
        if kind == "edit" and isinstance(row.get("edit"), dict):
            key = (step, json.dumps(row["edit"], sort_keys=True))
            if key in self._seen:
                return []
            self._seen.add(key)
            text = edit_text(row["edit"])
            self.edits.setdefault(step, []).append(text)
            return [EditMark(step, text, tuple(self.edits[step]))]
        if kind == "end":
            return [Ended(str(row.get("state")), int(step or 0), str(row.get("reason") or ""), row.get("time"))]
        return []


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_RANK = {"start": 0, "resume": 0}  # at one step: an attempt's start, its metrics, then its events


def run_calls(run_dir: Path) -> tuple[list, float | None, Translator]:
    """Every tracker call of a run directory's rows in the order the live sink saw them, the
    run's start time, and the translator (which has seen its edits)."""
    rd = rundir.RunDir(run_dir)
    rows = [(r.get("step", 0), 1, i, "metric", r) for i, r in enumerate(rundir.read_jsonl(rd.metrics))]
    rows += [(r.get("step", 0), _RANK.get(r.get("kind"), 2), i, "event", r)
             for i, r in enumerate(rundir.read_jsonl(rd.events))]
    rows.sort(key=lambda t: (t[0] if isinstance(t[0], int) else 0, t[1], t[2]))
    tr, calls = Translator(), []
    for _, _, _, what, row in rows:
        calls += tr.metric(row) if what == "metric" else tr.event(row)
    started = next((c.row.get("time") for c in calls if isinstance(c, Started)), None)
    return calls, started, tr
