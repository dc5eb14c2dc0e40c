"""The control mailbox and the metric sinks: how the loop talks to the outside world.

The loop never knows where messages come from (stdin of a worker, a ``--control`` file or
FIFO) nor where its rows go (the run directory, the daemon over stdout, a progress line:
progress.Progress, the trackers).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import IO, Protocol

from tuneterm import protocol, rundir


class Mailbox:
    """Control messages read by a background thread, drained by the loop at step boundaries.

    A message may carry ``"at_step": N`` to be held until N steps have completed (scripted
    steering from a file). Malformed lines are answered with a reject (id unknown)."""

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue()
        self._held: list[dict] = []
        self.closed = threading.Event()

    def put(self, msg: dict) -> None:
        self._q.put(msg)

    def drain(self, step: int) -> list[dict]:
        while True:
            try:
                self._held.append(self._q.get_nowait())
            except queue.Empty:
                break
        due = [m for m in self._held if int(m.get("at_step", 0) or 0) <= step]
        self._held = [m for m in self._held if m not in due]
        return due

    def read_stream(self, stream: IO[str], follow: bool = False) -> threading.Thread:
        def pump() -> None:
            try:
                for line in stream:
                    if not line.strip():
                        continue
                    try:
                        self.put(protocol.decode(line))
                    except protocol.ProtocolError as e:
                        self.put({"type": "_invalid", "reason": str(e)})
            except (OSError, ValueError):
                pass
            finally:
                self.closed.set()

        t = threading.Thread(target=pump, name="control-reader", daemon=True)
        t.start()
        return t

    def read_path(self, path: str) -> None:
        """``-`` is stdin; a FIFO or a regular file is read line by line."""
        if path == "-":
            self.read_stream(sys.stdin)
            return
        p = Path(path)
        if not p.exists():
            from tuneterm.errors import UserError

            raise UserError(f"--control: no such file {path!r}")
        if p.is_file():
            # A script of messages: read it all now, so that `at_step` scheduling does
            # not race the reader thread.
            with open(p, encoding="utf-8") as fh:
                self.read_stream(fh).join()
            return

        def opener() -> None:
            # Opening a FIFO blocks until a writer appears: do it in the thread.
            with open(p, encoding="utf-8") as fh:
                self.read_stream(fh).join()

        threading.Thread(target=opener, name="control-open", daemon=True).start()


class Sink(Protocol):
    """Where a trainer's rows go (outputs.Outputs hands each to every sink): the run
    directory's files, the worker's stdout, `tuneterm run`'s progress line, the trackers
    (tuneterm.tracking.sink)."""

    def metric(self, row: dict) -> None: ...
    def event(self, row: dict) -> None: ...
    def reply(self, msg: dict) -> None: ...
    def close(self) -> None: ...


class RunFiles:
    """metrics.jsonl and events.jsonl in the run directory (the source of truth)."""

    def __init__(self, run_dir: Path) -> None:
        self.metrics_path = rundir.RunDir(run_dir).metrics
        self.events_path = rundir.RunDir(run_dir).events
        self._m = open(self.metrics_path, "a", encoding="utf-8")
        self._e = open(self.events_path, "a", encoding="utf-8")

    def metric(self, row: dict) -> None:
        self._m.write(json.dumps(row, allow_nan=False) + "\n")
        self._m.flush()

    def event(self, row: dict) -> None:
        self._e.write(json.dumps(row, allow_nan=False) + "\n")
        self._e.flush()

    def reply(self, msg: dict) -> None:
        pass

    def sync(self) -> None:
        for fh in (self._m, self._e):
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        self._m.close()
        self._e.close()


def truncate_after(path: Path, step: int) -> None:
    """Drop rows with ``step`` > the checkpoint's (written after it by a killed attempt),
    and a torn last line; the file is replaced atomically (a tailer sees a new inode)."""
    if not path.exists():
        return
    keep = [line for line, row in rundir.parse_rows(path.read_bytes()) if _row_step(row) <= step]
    rundir.write_atomic(path, b"".join(line + b"\n" for line in keep))


def _row_step(row: dict) -> int:
    s = row.get("step", 0)
    return s if isinstance(s, int) and not isinstance(s, bool) else 0


class StdoutProtocol:
    """Every row and reply as a protocol message on stdout (the worker's channel to the
    daemon). A closed pipe (the daemon went away) is ignored: training goes on."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        self.alive = True

    def _send(self, msg: dict) -> None:
        if not self.alive:
            return
        try:
            self.stream.write(protocol.encode(msg))
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.alive = False

    def metric(self, row: dict) -> None:
        self._send(protocol.metric(row))

    def event(self, row: dict) -> None:
        self._send(protocol.event(row))

    def reply(self, msg: dict) -> None:
        self._send(msg)

    def close(self) -> None:
        pass
