"""Where a trainer's rows go: the run directory's files (metrics.jsonl, events.jsonl,
samples.jsonl), any extra sinks (the daemon's stdout channel, a progress bar), and a
human line per event worth reading in log.txt (logger ``tuneterm.engine``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

from tuneterm.engine.control import RunFiles, Sink
from tuneterm.engine.logbook import describe
from tuneterm.rundir import RunDir

log = logging.getLogger("tuneterm.engine")
WARNINGS = ("error", "skip", "reject", "warning")


class Outputs:
    def __init__(self, run_dir: Path, extra_sinks: list[Sink], step_of: Callable[[], int]) -> None:
        self.files = RunFiles(run_dir)
        self.sinks: list[Sink] = [self.files, *extra_sinks]
        self.samples_path = RunDir(run_dir).samples
        self.step_of = step_of

    def metric(self, row: dict) -> None:
        for s in self.sinks:
            s.metric(row)

    def event(self, kind: str, **fields) -> None:
        row = {"kind": kind, "step": self.step_of(), **fields, "time": round(time.time(), 3)}
        line = describe(row)
        if line:
            (log.warning if kind in WARNINGS else log.info)(line)
        for s in self.sinks:
            s.event(row)

    def reply(self, msg: dict) -> None:
        for s in self.sinks:
            s.reply(msg)

    def samples(self, rows: list) -> None:
        """Generated samples (generative tasks) for samples.jsonl, one row each."""
        if rows:
            with open(self.samples_path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))

    def sync(self) -> None:
        self.files.sync()

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class NoOutputs:
    """A rank other than 0 computes only: its rows, events and replies go nowhere."""

    def metric(self, row: dict) -> None: ...
    def event(self, kind: str, **fields) -> None: ...
    def reply(self, msg: dict) -> None: ...
    def samples(self, rows: list) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
