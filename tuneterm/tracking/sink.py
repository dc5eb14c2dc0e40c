"""The live side: a metric sink (``metric``/``event``/``reply``/``close``, the engine's
``Sink``) that hands each row to its trackers, every tracker in a thread of its own.

The loop never waits for a tracker: a row is put on a queue and training goes on. A
tracker that fails (an unreachable server, a bad URI, a full disk) is dropped with one
warning in log.txt and the run goes on; one that is still busy when the run ends gets
``CLOSE_TIMEOUT_S`` to finish, then it too is left with one warning (what it had not sent
is in the run directory: `tuneterm track RUN` writes it later).
"""

from __future__ import annotations

import logging
import queue
import threading

from tuneterm.tracking.rows import Ended, Translator

log = logging.getLogger("tuneterm.tracking")
CLOSE_TIMEOUT_S = 60.0
_CLOSE = object()


class Lane:
    """One tracker, its queue and its thread. The tracker's ``open`` runs in the thread too
    (importing MLflow and creating its store take seconds)."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.failed = False
        self.thread = threading.Thread(target=self._run, name=f"tracker-{tracker.name}", daemon=True)
        self.thread.start()

    def put(self, calls: list) -> None:
        if calls and not self.failed:
            self.q.put(calls)

    def _run(self) -> None:
        try:
            self.tracker.open()
            while True:
                batch = list(self.q.get())
                while _CLOSE not in batch:  # everything queued meanwhile goes in one write
                    try:
                        batch += self.q.get_nowait()
                    except queue.Empty:
                        break
                done = _CLOSE in batch
                if done:
                    batch = batch[:batch.index(_CLOSE)]
                if batch:
                    self.tracker.write(batch)
                if done:
                    self.tracker.close()
                    return
        except Exception as e:  # noqa: BLE001 - any failure of a tracker: drop it, go on training
            self.failed = True
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            log.warning("tracking: %s stopped (%s: %s); the run goes on without it", self.tracker.describe(),
                        type(e).__name__, first[:300])
            try:
                self.tracker.abandon()
            except Exception:  # noqa: BLE001
                pass

    def close(self, timeout: float) -> None:
        if not self.failed:
            self.q.put([_CLOSE])
        self.thread.join(timeout)
        if self.thread.is_alive() and not self.failed:
            self.failed = True
            log.warning("tracking: %s did not finish within %.0f s of the run's end; what it had not written "
                        "is left out (tuneterm track writes it from the run directory)", self.tracker.describe(),
                        timeout)


class TrackingSink:
    """``prior``: (the calls of the rows earlier attempts wrote, their translator), for a
    resumed run: written first, so that what a killed attempt had not sent yet is not lost
    (each tracker skips what it already holds), without the earlier attempts' ends."""

    def __init__(self, trackers: list, prior: tuple[list, Translator] | None = None) -> None:
        calls, self.translator = prior or ([], Translator())
        self.lanes = [Lane(t) for t in trackers]
        self._send([c for c in calls if not isinstance(c, Ended)])

    def _send(self, calls: list) -> None:
        for lane in self.lanes:
            lane.put(calls)

    def metric(self, row: dict) -> None:
        self._send(self.translator.metric(row))

    def event(self, row: dict) -> None:
        self._send(self.translator.event(row))

    def reply(self, msg: dict) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        for lane in self.lanes:
            lane.close(CLOSE_TIMEOUT_S if timeout is None else timeout)
