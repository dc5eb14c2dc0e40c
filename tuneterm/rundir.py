"""The run directory and the facts about it that every process shares (no torch, no textual).

One owner for: the paths inside ``runs/<run-id>/``, reading and tailing its JSON-lines
files (a torn last line — a writer killed mid-row — is never a row), the "end" event,
the checkpoint listing, the wall-clock fields, the one rule by which two runs' metrics
are compared, the session states and what each means, how a worker's exit code follows
from its end event (the codes themselves are ``tuneterm.errors.ExitCode``), and the one
atomic write. The engine, the runner, the TUI, sweeps and the benchmarks use this
module; docs/architecture.md ("The run directory") describes the layout.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tuneterm.errors import ExitCode  # the worker's exit codes are tuneterm's

# -- paths ----------------------------------------------------------------------------------

SESSION = "session.toml"      # the frozen session; [[edits]] appended as edits apply
METRICS = "metrics.jsonl"     # {"kind": "train"|"eval", "step", ...}
EVENTS = "events.jsonl"       # {"kind": "start"|"edit"|...|"end", "step", ...}
SAMPLES = "samples.jsonl"     # generated samples of generative tasks
LOG = "log.txt"               # human-readable log
CHECKPOINTS = "checkpoints"   # step-NNNNNNNN/ folders
LAYERS = "layers.json"        # the layer groups with parameter counts and frozen state
LOCK = ".lock"                # the worker's flock
TENSORBOARD = "tensorboard"   # [tracking] tensorboard = true: TensorBoard's event files
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_DONE = "state.json"  # written last-but-renamed: its presence marks a complete folder


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
    tensorboard = property(lambda self: self.path / TENSORBOARD)

    @property
    def name(self) -> str:
        return self.path.name

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)


# -- session states ---------------------------------------------------------------------------


class SessionState(str, enum.Enum):
    """A queued session's state (the runner's queue column). ``finished`` means the runner
    will never start a worker for it again on its own; ``resumable`` that its run directory
    continues from its newest checkpoint when it runs again."""

    QUEUED = "queued"            # waiting for a slot (fresh, or resumed and waiting)
    RUNNING = "running"          # a worker trains it now
    PAUSED = "paused"            # stopped on request at a checkpoint; `resume` continues it
    INTERRUPTED = "interrupted"  # the daemon or its worker went away mid-run; resumes by itself
    DONE = "done"                # trained to its end (done, early-stopped or stopped)
    FAILED = "failed"            # ended with an error; `retry` runs it again
    CANCELLED = "cancelled"      # cancelled by the user; `retry` runs it again

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def resumable(self) -> bool:
        return self in (SessionState.PAUSED, SessionState.INTERRUPTED)

    @property
    def active(self) -> bool:
        return not self.finished

    @classmethod
    def of(cls, value: object) -> "SessionState | None":
        try:
            return cls(value)
        except ValueError:
            return None


_FINISHED = frozenset({SessionState.DONE, SessionState.FAILED, SessionState.CANCELLED})
STATES = tuple(s.value for s in SessionState)
FINISHED_STATES = tuple(s.value for s in SessionState if s.finished)
ACTIVE_STATES = tuple(s.value for s in SessionState if s.active)


def is_finished(state: object) -> bool:
    """True only for a state the runner never leaves on its own (done, failed, cancelled)."""
    s = SessionState.of(state)
    return s is not None and s.finished


# -- worker exit codes and end events ----------------------------------------------------------


EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LOCKED, EXIT_PAUSED = (int(c) for c in ExitCode)

END_STATES = ("done", "early_stopped", "stopped", "paused", "failed")


def exit_code_for_end(state: str | None) -> int | None:
    """The exit code a worker whose last end event says ``state`` exited with (None: no
    end event, the attempt died)."""
    return {"done": EXIT_OK, "early_stopped": EXIT_OK, "stopped": EXIT_OK, "paused": EXIT_PAUSED,
            "failed": EXIT_FAILED}.get(state or "")


# -- JSON lines -----------------------------------------------------------------------------


def parse_rows(data: bytes | str) -> Iterator[tuple[bytes | str, dict]]:
    """(line, row) for each complete JSON object line of ``data``; a torn or garbled line
    is skipped. ``data`` should end at a line end (see ``complete``)."""
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            yield line, row


def complete(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a row being written is not a row)."""
    return data[: data.rfind(b"\n") + 1]


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a JSON-lines file ([] when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    return [row for _, row in parse_rows(complete(data))]


def read_tail_rows(path: str | os.PathLike, max_bytes: int = 65536) -> list[dict]:
    """The complete rows in the last ``max_bytes`` of a JSON-lines file (the first one
    read may be cut, and is then skipped as garbled)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    if size > max_bytes:
        data = data[data.find(b"\n") + 1:]
    return [row for _, row in parse_rows(complete(data))]


class JsonlTail:
    """Follows one JSON-lines file by offset: each ``read_new`` returns the bytes of the
    complete lines written since the last one, and says whether the file was rewritten
    (a new inode or a shorter file: a resumed attempt truncated it) — then from 0."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.ino: int | None = None
        self.offset = 0

    def read_new(self) -> tuple[bool, bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False, b""
        try:
            st = os.fstat(fd)
            rewritten = self.ino is not None and (st.st_ino != self.ino or st.st_size < self.offset)
            if rewritten:
                self.offset = 0
            self.ino = st.st_ino
            if st.st_size <= self.offset:
                return rewritten, b""
            data = os.pread(fd, st.st_size - self.offset, self.offset)
        finally:
            os.close(fd)
        data = complete(data)
        self.offset += len(data)
        return rewritten, data

    def read_upto_offset(self) -> bytes | None:
        """The bytes [0, offset) of the file followed so far; None when it changed under
        the tail (the caller reads the new part and asks again)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return b"" if self.ino is None else None
        try:
            st = os.fstat(fd)
            if st.st_ino != self.ino or st.st_size < self.offset:
                return None
            return os.pread(fd, self.offset, 0) if self.offset else b""
        finally:
            os.close(fd)


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


def compare_metrics(original: Iterable[dict], replay: Iterable[dict]) -> Comparison:
    """Compare two runs' metrics step for step, wall-clock fields aside. Rows are keyed by
    (kind, step); the newest row of a key wins (a resumed attempt rewrites the steps after
    its checkpoint with the same values). The first difference, in step order, is named."""

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
            if ra.get(f) != rb.get(f):
                return Comparison(False, len(ka), f"step {step} ({kind}): {f} differs: "
                                                  f"original {ra.get(f)!r}, replay {rb.get(f)!r}", step)
    return Comparison(True, len(ka), f"all {len(ka)} metric rows identical")


# -- writing --------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old file or
    the new one, never half of one: a temporary file in the same folder, fsync, rename,
    fsync the folder (``durable=False`` skips the fsyncs, for files that only need to be
    whole, not on disk)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


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
