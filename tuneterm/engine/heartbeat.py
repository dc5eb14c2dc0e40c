"""Each rank's heartbeat: a tiny file per rank, kept current after every optimizer step.

Per-rank health is out of band on purpose: a rank that stalls cannot report through a
collective (rank 0 would be blocked in that collective, waiting for it), so every rank
writes its own ``heartbeats/rank-<r>.json`` (rundir.RunDir.rank_beat) and the runner, the
CLI and the TUI read the files (runner/health.py judges them). The only files a rank other
than 0 writes.

Cheap by design: one small JSON object written to a fixed temporary name and renamed over
the file (readers see the old beat or the new one), no fsync (a heartbeat lost in a power cut
is worth nothing), and at most one write per ``EVERY_S`` — on the first step of an attempt,
on the last planned step, and on the first step that ends ``EVERY_S`` after the previous
write. A rename costs 0.3-0.4 ms on this busy VM's disk, ~1 % of a 35 ms tiny 2-process step
if written every step; throttled, under 0.1 % (benchmarks/RESULTS.md, "Per-rank heartbeat").
The beats are for a stall rule of tens of seconds (runner/health.py), so a second of lag
costs nothing. A single-process run writes none: its health is the run's own metrics
rows; it removes a folder an earlier multi-process attempt of the run left, so a resume on
one process shows no stale ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import deque
from pathlib import Path

from tuneterm.rundir import RANK_BEAT_PREFIX, RunDir

RECENT = 32  # step times a median is taken over (the stall rule's "usual" step)
EVERY_S = 1.0  # at most one write per this many seconds (the TUI polls once a second)


class Heart:
    """One rank's writer."""

    def __init__(self, run_dir: Path, rank: int, world: int) -> None:
        rd = RunDir(run_dir)
        self.rank, self.world = rank, world
        self.path = rd.rank_beat(rank)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.recent: deque[float] = deque(maxlen=RECENT)
        self.written = float("-inf")  # monotonic time of the last write
        self.fixed = {"rank": rank, "world": world, "pid": os.getpid(), "host": socket.gethostname()}
        rd.heartbeats.mkdir(exist_ok=True)
        if rank == 0:  # a previous attempt on more processes left files of ranks that are gone
            for name in os.listdir(rd.heartbeats):
                n = name[len(RANK_BEAT_PREFIX):-len(".json")]
                if name.startswith(RANK_BEAT_PREFIX) and n.isdigit() and int(n) >= world:
                    _unlink(rd.heartbeats / name)

    def beat(self, step: int, seconds: float, last: bool = False) -> None:
        self.recent.append(seconds)
        now = time.monotonic()
        if now - self.written < EVERY_S and not last:
            return
        self.written = now
        ordered = sorted(self.recent)  # only when writing: a skipped step costs an append
        row = {**self.fixed, "step": step, "seconds": round(seconds, 6),
               "median_s": round(ordered[len(ordered) // 2], 6), "time": round(time.time(), 3)}
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, json.dumps(row).encode())
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except OSError:  # a full disk must not end training over a health display
            pass


class _Quiet:
    def beat(self, step: int, seconds: float, last: bool = False) -> None:
        pass


def beat(trainer, seconds: float) -> None:
    """After each optimizer step (Trainer.train_step): this rank's heartbeat. The writer is
    made on the first step of an attempt."""
    heart = trainer.__dict__.get("_heart")
    if heart is None:
        s = trainer.strategy
        if s.world > 1:
            heart = Heart(trainer.run_dir, s.rank, s.world)
        else:
            shutil.rmtree(RunDir(trainer.run_dir).heartbeats, ignore_errors=True)
            heart = _Quiet()
        trainer._heart = heart
    st = trainer.state
    heart.beat(st.step, seconds, last=st.step >= st.total_steps)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
