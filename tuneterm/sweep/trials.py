"""The trial runner the sweep driver is given: trials as sessions of the workspace's
runner queue (no optuna here, no torch). ``QueueTrials`` queues a trial's session file,
follows its session on a stream of its own (a thread per trial, reconnecting over daemon
restarts), stops it when the pruner says so and continues it when it was paused. A test
or another backend gives the driver any object with the same methods.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Callable

from tuneterm.states import FINISHED_STATES, SessionState

_RECONNECTS = 20            # daemon restarts tolerated while following one trial


class _Runner:
    """The runner connection, re-made when the daemon goes away (it is restarted)."""

    def __init__(self, workspace: Path):
        self.ws = workspace
        self.client = None
        self.closed = False  # close(): no more connections (the sweep is stopping)

    def get(self):
        from tuneterm.runner.client import RunnerClient, RunnerUnavailable

        if self.client is None:
            if self.closed:
                raise RunnerUnavailable("the sweep is stopping")
            self.client = RunnerClient.connect(self.ws, start=True, timeout=20.0)
            if self.closed:  # closed from another thread while connecting
                self.drop()
                raise RunnerUnavailable("the sweep is stopping")
        return self.client

    def call(self, fn: Callable):
        """fn(client), retried over a lost daemon."""
        from tuneterm.runner.client import RunnerUnavailable

        for attempt in range(_RECONNECTS):
            try:
                return fn(self.get())
            except RunnerUnavailable:
                self.drop()
                if self.closed or attempt == _RECONNECTS - 1:
                    raise
                time.sleep(0.5)

    def drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        """Safe from any thread: ends this connection's streams and refuses new ones."""
        self.closed = True
        self.drop()


def _eval_row(msg: dict, metric: str) -> tuple[int, float] | None:
    """(step, value) of a stream message that is an eval row with the objective."""
    if msg.get("type") != "metric":
        return None
    d = msg.get("data") or {}
    if d.get("kind") != "eval" or not isinstance(d.get(metric), (int, float)):
        return None
    return int(d["step"]), float(d[metric])


class _Follower(threading.Thread):
    """Follows one trial's session on a runner connection of its own (a daemon restart
    breaks each stream, and each reconnects): puts ("eval", number, step, value) on ``box``
    for every objective row, then ("end", number, view) once the session has ended, or
    ("error", number, exception). Only the driver's thread talks to Optuna."""

    def __init__(self, ws: Path, number: int, ref: int, metric: str, box: queue.Queue):
        super().__init__(name=f"sweep-trial-{number}", daemon=True)
        self.runner = _Runner(ws)
        self.number, self.ref, self.metric, self.box = number, ref, metric, box

    def run(self) -> None:
        try:
            self.box.put(("end", self.number, self._follow()))
        except BaseException as e:  # noqa: BLE001 - the driver raises it
            if not self.runner.closed:
                self.box.put(("error", self.number, e))
        finally:
            self.runner.drop()

    def _follow(self) -> dict:
        from tuneterm.runner.client import RunnerUnavailable

        for _ in range(_RECONNECTS):
            try:
                for msg in self.runner.get().subscribe(self.ref):
                    row = _eval_row(msg, self.metric)
                    if row is not None:
                        self.box.put(("eval", self.number, *row))
                break
            except RunnerUnavailable:
                if self.runner.closed:
                    raise
                self.runner.drop()  # the daemon died: the next connect starts a new one, which re-adopts the worker
                time.sleep(0.5)
        final = self.runner.call(lambda c: c.get(self.ref))
        # A crashed daemon/worker may have left the stream early: wait for the session to end.
        while final["state"] not in FINISHED_STATES:  # done, failed, cancelled: the trial ended
            time.sleep(0.5)
            final = self.runner.call(lambda c: c.get(self.ref))
        return final

    def stop(self) -> None:
        self.runner.close()


class QueueTrials:
    """Trials through the runner queue (the driver's default trial runner)."""

    def __init__(self, workspace: Path):
        self.ws = Path(workspace)
        self.runner = _Runner(self.ws)

    def slots(self) -> int | None:
        """Sessions the runner trains at once."""
        slots = self.runner.call(lambda c: c.status()).get("slots")
        return slots if isinstance(slots, int) else None

    def queue(self, path: Path) -> dict:
        """Queue a trial's (already checked) session file; its session view."""
        return self.runner.call(lambda c: c.add(path, check=False))

    def sessions(self) -> list[dict]:
        return self.runner.call(lambda c: c.list_sessions())

    def keep_going(self, view: dict) -> None:
        """A trial's session that a person or `daemon stop` paused, or that was cancelled:
        the sweep needs it to finish."""
        paused = view["state"] == SessionState.PAUSED
        self.runner.call(lambda c: c.resume(view["id"]) if paused else c.retry(view["id"]))

    def stop(self, view: dict) -> dict:
        """The pruner's stop (the run ends at the next step, as `stopped`)."""
        return self.runner.call(lambda c: c.control(view["id"], {"type": "stop"}))

    def follow(self, number: int, view: dict, metric: str, box: queue.Queue) -> "_Follower":
        """A started thread that puts the trial's eval rows and its end on ``box``."""
        f = _Follower(self.ws, number, view["id"], metric, box)
        f.start()
        return f

    def close(self) -> None:
        self.runner.drop()
