"""The queue's queries: a reference resolved to its session, a session's view, the list (no
torch, no textual). The daemon answers `get` and `list` with them over the tails it keeps
live; `queue ls` and `queue logs` without a daemon (readonly.py) over fresh ones, on the
queue opened read-only — reading the queue never builds a daemon.

A view's figures (step, loss, best metric, ETA) come from the run directory's files, read
through a ``Tailer``; the fields are listed in docs/protocol.md ("list").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from tuneterm.errors import UserError
from tuneterm.runner.health import run_health
from tuneterm.runner.store import Store
from tuneterm.runner.tail import Tailer
from tuneterm.states import SessionState


class Queue:
    """Queries over ``store``. ``tail(row)``: the tailer whose figures the row's view shows,
    refreshed; None for a session with no files to look at (never started)."""

    def __init__(self, store: Store, runs: Path, tail: Callable[[dict], Tailer | None]):
        self.store = store
        self.runs = str(runs)  # joined without pathlib: `queue ls` of 1,000 rows
        self.tail = tail
        self._blank = Tailer(Path(os.devnull))

    def resolve(self, ref) -> dict:
        """The session an id, a run id, a unique prefix of one, or a run directory's path
        names; UserError when none or several."""
        if ref is None or ref == "":
            raise UserError("no session given")
        if isinstance(ref, str) and ("/" in ref or ref.endswith(".toml")):
            ref = Path(ref.rstrip("/")).name if "/" in ref else ref
        hits = self.store.find(ref)
        if not hits:
            raise UserError(f"no session {ref!r} in the queue")
        if len(hits) > 1:
            raise UserError(f"session {ref!r} is ambiguous: " + ", ".join(h["run_id"] for h in hits[:5]))
        return hits[0]

    def view(self, row: dict, index: int | None = None) -> dict:
        """What `get` answers for the session of ``row`` (``index``: its 0-based place in
        the queue, looked up when not given)."""
        t = self.tail(row) or self._blank
        if index is None:
            index = self.store.index_of(row["id"])
        running = row["state"] == SessionState.RUNNING
        # per-rank health of a multi-process run (its heartbeat files); a started attempt's
        # start event dates the beats that are its own (no end row after it)
        processes, ranks = run_health(f"{self.runs}{os.sep}{row['run_id']}", running=running,
                                      since=t.began if t.end is None else float("inf")) \
            if row["attempts"] else (None, [])
        return {
            "id": row["id"], "run_id": row["run_id"], "name": row["name"], "model": row["model"],
            "data": row["data"], "state": row["state"], "position": index + 1, "step": t.step,
            "total_steps": t.total_steps, "epoch": t.epoch, "loss": t.loss,
            "best_metric": dict(t.best) if t.best else None, "eta_s": t.eta_s() if running else None,
            "run_dir": f"{self.runs}{os.sep}{row['run_id']}", "created": row["created"], "started": row["started"],
            "finished": row["finished"], "attempts": row["attempts"], "crashes": row["crashes"],
            "error": row["error"], "result": row["result"], "want": row["want"],
            "pid": row["pid"] if running else None, "processes": processes, "ranks": ranks,
        }

    def list(self) -> list[dict]:
        """Every session's view, in queue order."""
        return [self.view(r, i) for i, r in enumerate(self.store.all())]
