"""The run directory and the facts about it that every process shares (no torch, no textual).

One owner for: the names of the files inside ``runs/<run-id>/`` (``RunDir``), the "end"
event, the checkpoint listing, the wall-clock fields, the one rule by which two runs'
metrics are compared, and a refusal logged from outside the worker. Reading its JSON-lines
files and replacing a file whole are ``tuneterm.files``'; the session and run-end states
``tuneterm.states``'; the exit codes ``tuneterm.errors.ExitCode`` — re-exported here, where
the engine, the runner, the TUI, sweeps and the benchmarks look for them.
docs/architecture.md ("The run directory") describes the layout.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# Re-exported: the JSON-lines reading and the atomic write (tuneterm.files), the session and
# run-end states (tuneterm.states) and the exit codes (tuneterm.errors) are reached here by the
# engine, the runner, the TUI and the tests as facts of the run directory.
from tuneterm.errors import ExitCode
from tuneterm.files import (JsonlTail, complete, fsync_dir, parse_rows, read_jsonl,  # noqa: F401
                            read_tail_rows, write_atomic)
from tuneterm.states import (ACTIVE_STATES, FINISHED_STATES, RUN_ENDS, STATES, RunEnd,  # noqa: F401
                             SessionState, exit_code_for_end, is_finished)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = int(ExitCode.OK), int(ExitCode.FAILED), int(ExitCode.BAD_INPUT)
EXIT_LOCKED, EXIT_PAUSED = int(ExitCode.LOCKED), int(ExitCode.PAUSED)

# -- paths ----------------------------------------------------------------------------------

SESSION = "session.toml"      # the frozen session; [[edits]] appended as edits apply
METRICS = "metrics.jsonl"     # {"kind": "train"|"eval", "step", ...}
EVENTS = "events.jsonl"       # {"kind": "start"|"edit"|...|"end", "step", ...}
SAMPLES = "samples.jsonl"     # generated samples of generative tasks
LOG = "log.txt"               # human-readable log
CHECKPOINTS = "checkpoints"   # step-NNNNNNNN/ folders
LAYERS = "layers.json"        # the layer groups with parameter counts and frozen state
LOCK = ".lock"                # the worker's flock
QUEUE_ROW = "queue.json"      # the runner's copy of the session's queue row (a lost queue is rebuilt from it)
WORKER_STDERR = "worker.stderr"  # the worker's stderr, appended by the executor (a crash's traceback)
CONFUSION = "confusion.json"  # a finished classification run's confusion matrix (engine/predict.py)
TENSORBOARD = "tensorboard"   # [tracking] tensorboard = true: TensorBoard's event files
HEARTBEATS = "heartbeats"     # a multi-process run's rank-<r>.json: each rank's last step (per-rank health)
RANK_BEAT_PREFIX = "rank-"
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_DONE = "state.json"  # written last-but-renamed: its presence marks a complete folder
# Every name above: a string constant equal to one of them outside this module is a second
# spelling (tests/test_one_owner.py).
FILE_NAMES = (SESSION, METRICS, EVENTS, SAMPLES, LOG, CHECKPOINTS, LAYERS, LOCK, QUEUE_ROW, WORKER_STDERR,
              CONFUSION, CHECKPOINT_DONE, HEARTBEATS)


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    session = property(lambda self: self.path / SESSION)
    metrics = property(lambda self: self.path / METRICS)
    events = property(lambda self: self.path / EVENTS)
    samples = property(lambda self: self.path / SAMPLES)
    log = property(lambda self: self.path / LOG)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    layers = property(lambda self: self.path / LAYERS)
    lock = property(lambda self: self.path / LOCK)
    queue_row = property(lambda self: self.path / QUEUE_ROW)
    worker_stderr = property(lambda self: self.path / WORKER_STDERR)
    confusion = property(lambda self: self.path / CONFUSION)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    heartbeats = property(lambda self: self.path / HEARTBEATS)

    @property
    def name(self) -> str:
        return self.path.name

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def is_run(self) -> bool:
        """Whether this folder is a run directory: its frozen session beside something only
        a run has (a user's folder that merely holds a session.toml is not one)."""
        try:
            return self.session.is_file() and any(
                p.exists() for p in (self.events, self.metrics, self.queue_row, self.lock, self.checkpoints))
        except OSError:  # a folder that cannot be read is not known to be one
            return False

    def rank_beat(self, rank: int) -> Path:
        """Rank ``rank``'s heartbeat file (written by engine/heartbeat.py after each step)."""
        return self.heartbeats / f"{RANK_BEAT_PREFIX}{rank}.json"


# -- per-rank heartbeats --------------------------------------------------------------------

# A heartbeat file is one JSON object: {"rank", "world", "pid", "host", "step", "seconds"
# (that step's), "median_s" (of the rank's recent steps), "time" (wall clock)}.


def read_rank_beats(run_dir: str | os.PathLike) -> list[dict]:
    """The heartbeat of each rank of a multi-process run, by rank ([] for a single-process
    run, which writes none). A file missing, half-written or garbled is left out, never an
    error: the files are replaced whole, but a reader may be looking at a copied or
    damaged folder."""
    folder = os.path.join(run_dir, HEARTBEATS)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    beats = []
    for name in names:
        if not (name.startswith(RANK_BEAT_PREFIX) and name.endswith(".json")):
            continue  # the writer's temporary file, or a stranger
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                row = json.loads(fh.read(4096))
        except (OSError, ValueError):
            continue
        if isinstance(row, dict) and all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool)
                                         for k in ("rank", "world", "step")) \
                and isinstance(row.get("time"), (int, float)):
            beats.append(row)
    return sorted(beats, key=lambda r: r["rank"])


# -- the end of an attempt ------------------------------------------------------------------


def last_end_event(run_dir: str | os.PathLike) -> dict | None:
    """The last row of events.jsonl when it is an "end" row (the outcome of the attempt
    that wrote it), else None (the attempt died without one)."""
    rows = read_tail_rows(Path(run_dir) / EVENTS)
    if rows and rows[-1].get("kind") == "end":
        return rows[-1]
    return None


# -- checkpoints ----------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_steps(checkpoints: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoint folders under ``checkpoints`` (``step-N/`` with
    its state.json), oldest first. Whether one is intact is engine/checkpoint.py's check."""
    steps = []
    try:
        entries = list(os.scandir(checkpoints))
    except OSError:
        return []
    for e in entries:
        n = e.name[len(CHECKPOINT_PREFIX):]
        if e.name.startswith(CHECKPOINT_PREFIX) and n.isdigit() and \
                os.path.isfile(os.path.join(e.path, CHECKPOINT_DONE)):
            steps.append(int(n))
    return sorted(steps)


def latest_checkpoint_step(run_dir: str | os.PathLike) -> int | None:
    steps = checkpoint_steps(Path(run_dir) / CHECKPOINTS)
    return steps[-1] if steps else None


# -- comparing two runs ---------------------------------------------------------------------

# The only fields that may differ between two runs of the same session on the same machine.
WALL_CLOCK_FIELDS = frozenset({"time", "samples_per_s", "elapsed"})


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS}


@dataclass
class Comparison:
    match: bool
    compared: int       # metric rows of the original
    detail: str         # "all N metric rows identical" or the first difference, naming its step
    step: int | None = None  # the first differing step


_KIND_ORDER = {"train": 0, "eval": 1}  # the order a step's rows are written in


def compare_metrics(original: Iterable[dict], replay: Iterable[dict], rel_tol: float = 0.0) -> Comparison:
    """Compare two runs' metrics step for step, wall-clock fields aside. Rows are keyed by
    (kind, step); the newest row of a key wins (a resumed attempt rewrites the steps after
    its checkpoint with the same values). The first difference, in step order, is named.
    ``rel_tol`` > 0: numbers agree within that relative tolerance (runs on another number
    of processes, whose sums are taken in another order)."""

    def keyed(rows: Iterable[dict]) -> dict:
        out: dict = {}
        for r in rows:
            if isinstance(r.get("step"), int) and isinstance(r.get("kind"), str):
                out[(r["step"], r["kind"])] = comparable(r)
        return out

    ka, kb = keyed(original), keyed(replay)
    if not ka:
        return Comparison(False, 0, "the original run has no metrics")
    if not kb:
        return Comparison(False, 0, "the replay has no metrics yet")
    for key in sorted(set(ka) | set(kb), key=lambda k: (k[0], _KIND_ORDER.get(k[1], 2), k[1])):
        step, kind = key
        if key not in kb or key not in ka:
            which = "original" if key in ka else "replay"
            return Comparison(False, len(ka), f"step {step} ({kind}): only the {which} has this row "
                                              f"({len(ka)} rows vs {len(kb)})", step)
        ra, rb = ka[key], kb[key]
        for f in sorted(set(ra) | set(rb)):
            if ra.get(f) != rb.get(f) and not _close(ra.get(f), rb.get(f), rel_tol):
                return Comparison(False, len(ka), f"step {step} ({kind}): {f} differs: "
                                                  f"original {ra.get(f)!r}, replay {rb.get(f)!r}", step)
    if rel_tol:
        return Comparison(True, len(ka), f"all {len(ka)} metric rows equal within {rel_tol:g} relative")
    return Comparison(True, len(ka), f"all {len(ka)} metric rows identical")


def _close(a, b, rel_tol: float) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return bool(rel_tol) and numbers and abs(a - b) <= rel_tol * max(abs(a), abs(b))



def append_rejection(run_dir: str | os.PathLike, request: dict, reason: str, source: str) -> bool:
    """Append a live edit's refusal made outside the worker (``source``: "cli" | "daemon") to
    the run's events.jsonl, as the worker logs its own: ``{"kind": "reject", "step", "source",
    "request", "reason"}`` at the last trained step. Only while an attempt is in progress (no
    end row last; and started: a queued run's events.jsonl stays empty, which says it never
    ran): a finished or paused run's history ends with its end row. One O_APPEND write, whole
    beside the worker's own appends. True when written."""
    rd = Path(run_dir)
    events = rd / EVENTS
    if not (rd / SESSION).is_file() or not events.is_file() or events.stat().st_size == 0:
        return False
    if last_end_event(rd) is not None:
        return False
    steps = [r["step"] for r in read_tail_rows(rd / METRICS, 4096) if isinstance(r.get("step"), int)]
    step = steps[-1] if steps else 0
    row = {"kind": "reject", "step": step, "source": source, "request": request, "reason": reason,
           "time": round(time.time(), 3)}
    fd = os.open(events, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (json.dumps(row, allow_nan=False, default=str) + "\n").encode())
    finally:
        os.close(fd)
    return True
