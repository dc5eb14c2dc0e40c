"""What the TUI knows about a run, kept apart from widgets (no textual, no torch).

The run directory is the source of truth (docs/architecture.md); the socket stream is a
live view of it. ``RunView`` folds the rows of both into series for the charts, the
current knob values, the layer states and the timeline, so that the same code serves a
live run, a reconnect (history first) and the replay comparison.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tuneterm.compare import fmt_duration
from tuneterm.rundir import RunDir, SessionState, compare_metrics, is_finished, read_jsonl
from tuneterm.tui.guidance import overfitting_advice
from tuneterm.tui.series import MinMaxSeries

# The seven knobs of DESIGN.md as the hyperparameter panel shows them (freezing has its own
# panel). warmup_ratio stands for "schedule with warmup"; patience is early stopping.
KNOBS = ("learning_rate", "batch_size", "epochs", "dropout", "weight_decay", "schedule",
         "warmup_ratio", "warmup_steps", "max_steps", "patience")
LORA_KNOBS = ("lora_dropout", "lora_lr_ratio")  # shown too when the run trains LoRA adapters
EVAL_KEYS = ("val_loss", "val_accuracy", "val_f1", "val_perplexity", "val_token_accuracy")  # a task's own first

# A session's state, the JSON-lines reader and the metrics comparison are the run
# directory's (tuneterm.rundir); re-exported here for the screens.
__all__ = ["compare_metrics", "is_finished", "read_jsonl", "RunView"]


# ---------------------------------------------------------------------------- formatting

def fmt_num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def fmt_axis(v: float) -> str:
    """Short axis labels: 4.5e-5, 0.133, 1.67e3."""
    text = f"{v:.3g}"
    if "e" in text:
        text = f"{v:.1e}"
    return text.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def fmt_eta(s: Any) -> str:
    if s is None or not isinstance(s, (int, float)) or s < 0 or not math.isfinite(s):
        return ""
    return fmt_duration(s)


def fmt_params(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def fmt_best(best: Any) -> str:
    """best_metric may be None, {"name", "value"}, a (name, value) pair, or a string."""
    if best is None:
        return ""
    if isinstance(best, dict):
        return f"{best.get('name', '')} {fmt_num(best.get('value'), 3)}".strip()
    if isinstance(best, (list, tuple)) and len(best) == 2:
        return f"{best[0]} {fmt_num(best[1], 3)}"
    return str(best)


def fmt_progress(s: dict, epoch: bool = True) -> str:
    step, total = s.get("step") or 0, s.get("total_steps")
    text = f"{step}/{total}" if total else str(step)
    ep = s.get("epoch")
    if epoch and isinstance(ep, (int, float)) and s.get("state") != SessionState.QUEUED:
        text += f" ep {ep:.1f}" if isinstance(ep, float) else f" ep {ep}"
    eta = fmt_eta(s.get("eta_s")) if s.get("state") == SessionState.RUNNING else ""
    if eta:
        text += f" {eta}"
    return text


def short_source(src: Any) -> str:
    s = str(src or "")
    s = s.removeprefix("builtin:")
    return Path(s).name if "/" in s else s


# ---------------------------------------------------------------------------- files

def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return {}


def read_layers(run_dir: Path) -> list[dict]:
    try:
        data = json.loads(RunDir(run_dir).layers.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []
    out = []
    for row in data if isinstance(data, list) else []:
        if isinstance(row, dict) and "name" in row:
            out.append({"name": str(row["name"]), "params": int(row.get("params") or 0),
                        "frozen": bool(row.get("frozen"))})
    return out


# ---------------------------------------------------------------------------- the run

@dataclass
class TimelineEntry:
    step: int
    kind: str
    text: str


@dataclass
class RunView:
    """Everything the session screen shows about one run, fed row by row."""

    train_loss: MinMaxSeries = field(default_factory=MinMaxSeries)
    lr: MinMaxSeries = field(default_factory=MinMaxSeries)
    val_loss: MinMaxSeries = field(default_factory=MinMaxSeries)
    val_accuracy: MinMaxSeries = field(default_factory=MinMaxSeries)
    chart_train: MinMaxSeries = field(default_factory=MinMaxSeries)  # the accuracy chart's training-row metric
    extra_train: MinMaxSeries = field(default_factory=MinMaxSeries)  # a task's second chart (preference: margin)
    extra_val: MinMaxSeries = field(default_factory=MinMaxSeries)
    knobs: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)  # [{"name", "params", "frozen"}]
    timeline: list = field(default_factory=list)  # [TimelineEntry]
    evals: list = field(default_factory=list)  # eval rows
    step: int = 0
    epoch: float | None = None
    last_loss: float | None = None
    state: str = ""
    knob_keys: tuple = KNOBS  # the Knobs tab's rows: KNOBS, plus LORA_KNOBS for a LoRA run
    accuracy_key: str = "val_accuracy"  # the accuracy chart's metric (causal LM: val_token_accuracy)
    charts: tuple = ()  # the task's charts beside the loss (session/tasks.py: Chart rows)
    eval_keys: tuple = EVAL_KEYS  # the metrics an eval row shows in the timeline
    version: int = 0  # bumped on every change: widgets repaint when it moves

    def clear(self) -> None:
        """Forget every row (before a stream replays the history again). The series are
        cleared in place: the charts hold them."""
        for s in (self.train_loss, self.lr, self.val_loss, self.val_accuracy, self.chart_train, self.extra_train,
                  self.extra_val):
            s.__init__()
        self.knobs, self.layers, self.timeline, self.evals = {}, [], [], []
        self.step, self.epoch, self.last_loss = 0, None, None
        self.version += 1

    # -- initial state from the run directory
    def load_session_toml(self, data: dict) -> None:
        from tuneterm.session.schema import SECTIONS, EarlyStopping, Hyperparameters, LoraSpec, ModelSpec
        from tuneterm.session.tasks import TASK_TABLE

        # a key left out of the file has the schema's default
        hp = {**vars(Hyperparameters()), **(data.get("hyperparameters", {}) or {})}
        es = {**vars(EarlyStopping()), **(data.get("early_stopping", {}) or {})}
        for k in KNOBS:
            self.knobs[k] = es[k] if k == "patience" else hp.get(k)
        lora = {**vars(LoraSpec()), **(data.get("lora", {}) or {})}
        self.knob_keys = KNOBS + LORA_KNOBS if lora.get("enabled") else KNOBS
        if lora.get("enabled"):
            self.knobs["lora_dropout"], self.knobs["lora_lr_ratio"] = lora.get("dropout"), lora.get("lr_ratio")
        spec = TASK_TABLE.get((data.get("model", {}) or {}).get("task") or ModelSpec().task)
        self.charts = spec.charts if spec else ()
        self.accuracy_key = self.charts[0].val if self.charts else ""
        self.eval_keys = tuple(spec.metrics)[:3] if spec else EVAL_KEYS
        if spec and spec.live_knobs:  # the task's own knobs (preference: beta, sft_weight)
            own = {**vars(SECTIONS[spec.section]()), **(data.get(spec.section, {}) or {})}
            self.knob_keys += spec.live_knobs
            self.knobs.update({k: own.get(k) for k in spec.live_knobs})
        for e in data.get("edits", []) or []:
            if isinstance(e, dict):
                self._apply_edit(e, timeline=False)
        self.version += 1

    def set_layers(self, layers: list[dict]) -> None:
        self.layers = [dict(x) for x in layers]
        self.version += 1

    # -- rows
    def add_metric(self, row: dict) -> None:
        kind = row.get("kind")
        step = row.get("step")
        if not isinstance(step, int):
            return
        if kind == "train":
            loss = row.get("loss")
            if isinstance(loss, (int, float)):
                self.train_loss.add(step, float(loss))
                self.last_loss = float(loss)
            lr = row.get("lr")
            if isinstance(lr, (int, float)):
                self.lr.add(step, float(lr))
            self.step = step
            if isinstance(row.get("epoch"), (int, float)):
                self.epoch = row["epoch"]
            self._chart_points(row, step, ((self.chart_train, 0, "train"), (self.extra_train, 1, "train")))
        elif kind == "eval":
            if isinstance(row.get("val_loss"), (int, float)):
                self.val_loss.add(step, float(row["val_loss"]))
            if isinstance(row.get(self.accuracy_key), (int, float)):
                self.val_accuracy.add(step, float(row[self.accuracy_key]))
            self._chart_points(row, step, ((self.extra_val, 1, "val"),))
            # a resumed attempt re-emits steps after its checkpoint: keep the newest
            self.evals = [e for e in self.evals if e["step"] < step] + [row]
            parts = [f"{k.removeprefix('val_')} {fmt_num(row[k])}"
                     for k in self.eval_keys if isinstance(row.get(k), (int, float))]
            self._timeline(step, "eval", ", ".join(parts))
        self.version += 1

    def _chart_points(self, row: dict, step: int, where: tuple) -> None:
        """(series, chart index, "train" | "val"): the row's value of that chart's metric."""
        for series, i, side in where:
            key = getattr(self.charts[i], side) if i < len(self.charts) else None
            if key and isinstance(row.get(key), (int, float)):
                series.add(step, float(row[key]))

    def add_event(self, row: dict) -> None:
        kind = str(row.get("kind", "?"))
        step = row.get("step") if isinstance(row.get("step"), int) else self.step
        if kind == "edit":
            self._apply_edit(row.get("edit") if isinstance(row.get("edit"), dict) else row, step=step)
        elif kind == "reject":
            self._timeline(step, "reject", str(row.get("reason", "")))
        elif kind == "checkpoint":
            self._timeline(step, "checkpoint", str(row.get("path", "") or "saved").rsplit("/", 1)[-1])
        elif kind == "eval_best":
            what = row.get("metric", "")
            self._timeline(step, "best", f"{what} {fmt_num(row.get('value'))}".strip())
        elif kind == "early_stop":
            self._timeline(step, "early stop", str(row.get("reason", "") or "validation stopped improving"))
        elif kind == "error":
            self._timeline(step, "error", str(row.get("reason") or row.get("message") or ""))
        elif kind == "end":
            self.state = str(row.get("state", ""))
            self._timeline(step, "end", f"{row.get('state', '')} {row.get('reason', '') or ''}".strip())
        elif kind == "start":
            self._timeline(step, "start", "resumed" if row.get("resumed") or step else "started")
        else:
            self._timeline(step, kind, "")
        self.version += 1

    def _apply_edit(self, edit: dict, step: int | None = None, timeline: bool = True) -> None:
        step = edit.get("step", step) if step is None else step
        values = edit.get("set") or {}
        parts = []
        for k, v in values.items():
            self.knobs[k] = v
            parts.append(f"{k}={fmt_num(v)}")
        frozen = set(edit.get("freeze") or [])
        unfrozen = set(edit.get("unfreeze") or [])
        for layer in self.layers:
            if layer["name"] in frozen:
                layer["frozen"] = True
            if layer["name"] in unfrozen:
                layer["frozen"] = False
        if frozen:
            parts.append("freeze " + " ".join(sorted(frozen, key=self._layer_order)))
        if unfrozen:
            parts.append("unfreeze " + " ".join(sorted(unfrozen, key=self._layer_order)))
        if timeline and parts:
            self._timeline(step if isinstance(step, int) else self.step, "edit", ", ".join(parts))

    def _layer_order(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer["name"] == name:
                return i
        return len(self.layers)

    def _timeline(self, step: int, kind: str, text: str) -> None:
        entry = TimelineEntry(step, kind, text)
        # history replays and live rows may overlap after a reconnect: no duplicates
        if self.timeline and any(e == entry for e in self.timeline[-50:]):
            return
        self.timeline.append(entry)

    # -- derived
    def trainable(self) -> tuple[int, int]:
        total = sum(x["params"] for x in self.layers)
        return sum(x["params"] for x in self.layers if not x["frozen"]), total

    def guidance(self) -> str | None:
        return overfitting_advice(self.evals, self.train_loss)
