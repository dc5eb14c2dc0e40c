"""Following a run directory's metrics.jsonl and events.jsonl (no torch, no textual).

The run directory is the source of truth; the daemon streams what these files gain, for
workers it started (their stdout only tells it *when* to look) and for re-adopted ones
alike. Only complete lines are consumed (a row being written is read on the next look).

A worker that resumes after a crash rewrites both files without the rows the crashed
attempt wrote after its checkpoint (``os.replace``: a new inode). The tailer then re-reads
the new file and forwards only rows it has not forwarded before: metrics rows with a step
beyond the newest one forwarded for their kind (a re-trained step has the same values, only
its wall-clock fields differ), and event rows whose exact text is new. So a subscriber
never sees a step twice.
"""

from __future__ import annotations

import time
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from collections import deque
from pathlib import Path

from tuneterm.rundir import JsonlTail, RunDir, last_end_event, latest_checkpoint_step, parse_rows
from tuneterm.session.tasks import METRIC_MODES  # which way each task's metric improves

__all__ = ["Tailer", "last_end_event", "latest_checkpoint_step"]


class Tailer:
    """Follows one run directory and keeps the figures `queue ls` shows."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        rd = RunDir(run_dir)
        self.files = {"metric": JsonlTail(rd.metrics), "event": JsonlTail(rd.events)}
        self.max_step: dict[str, int] = {}  # newest step forwarded per metrics kind
        self.seen_events: set[int] = set()
        self.metric: str | None = None  # the early-stopping metric, read on the first eval row
        self.mode = "min"
        self.step = 0
        self.epoch: float | None = None
        self.loss: float | None = None
        self.best: dict | None = None
        self.total_steps: int | None = None
        self.end: dict | None = None  # the last "end" event
        self.last_event: dict | None = None
        self.began: float | None = None  # the wall time of this attempt's start/resume event
        self._recent: deque = deque(maxlen=32)  # (time, step) of recent train rows

    def refresh(self) -> list[tuple[str, dict]]:
        """New rows since the last call, as ("metric" | "event", row), oldest first."""
        out: list[tuple[str, dict]] = []
        for kind, f in self.files.items():
            rewritten, data = f.read_new()
            if not data:
                continue
            for line, row in parse_rows(data):
                if kind == "metric":
                    # Steps of one kind only grow within an attempt; a resumed attempt
                    # re-writes steps up to the newest one already forwarded.
                    k, step = row.get("kind"), _step(row)
                    if step <= self.max_step.get(k, -1):
                        continue
                    self.max_step[k] = step
                else:
                    h = hash(line)
                    if rewritten and h in self.seen_events:
                        continue
                    self.seen_events.add(h)
                self._note(kind, row)
                out.append((kind, row))
        return out

    def history(self) -> list[tuple[str, dict]] | None:
        """Every row the tailer has consumed, from the files, in step order (metrics before
        events on a tie); None when a file changed since the last refresh."""
        rows = []
        for kind, f in self.files.items():
            data = f.read_upto_offset()
            if data is None:
                return None
            rows += [(kind, row) for _, row in parse_rows(data)]
        rows.sort(key=lambda kr: _step(kr[1]))
        return rows

    def _note(self, kind: str, row: dict) -> None:
        step = _step(row)
        if kind == "metric" and row.get("kind") == "train":
            self.step = max(self.step, step)
            self.epoch = row.get("epoch", self.epoch)
            self.loss = row.get("loss", self.loss)
            if isinstance(row.get("time"), (int, float)):
                self._recent.append((row["time"], step))
        elif kind == "metric" and row.get("kind") == "eval":
            if self.metric is None:
                self._read_metric()
            v = row.get(self.metric)
            if isinstance(v, (int, float)):
                better = self.best is None or (v < self.best["value"] if self.mode == "min" else v > self.best["value"])
                if better:
                    self.best = {"name": self.metric, "value": v, "step": step}
        elif kind == "event":
            self.last_event = row
            if isinstance(row.get("total_steps"), int):
                self.total_steps = row["total_steps"]
            if row.get("kind") == "end":
                self.end = row
            elif row.get("kind") in ("start", "resume"):
                self.end = None
                self.began = row.get("time") if isinstance(row.get("time"), (int, float)) else None
                self._recent.clear()

    def _read_metric(self) -> None:
        metric, mode = "val_loss", ""
        try:
            with open(RunDir(self.run_dir).session, "rb") as fh:
                es = tomllib.load(fh).get("early_stopping", {})
            metric, mode = str(es.get("metric") or metric), str(es.get("mode") or "")
        except (OSError, tomllib.TOMLDecodeError):
            pass
        self.metric = metric
        self.mode = mode or METRIC_MODES.get(metric) or ("min" if metric.endswith("loss") else "max")

    def eta_s(self) -> float | None:
        if self.total_steps is None or len(self._recent) < 2:
            return None
        (t0, s0), (t1, s1) = self._recent[0], self._recent[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        rate = (s1 - s0) / (t1 - t0)
        # Wall-clock since the last row counts too, so a stalled run's ETA grows.
        return max(0.0, (self.total_steps - self.step) / rate - max(0.0, time.time() - t1))


def _step(row: dict) -> int:
    s = row.get("step")
    return s if isinstance(s, int) else 0
