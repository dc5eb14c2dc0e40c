"""The queue read without a daemon (no torch): what `queue ls` and `queue logs` show when
none runs. They never start one, so a read never starts training (docs/runner.md, "Which
verbs start the daemon"); and they build none either: the queue's queries (queries.py) run
on the database opened read-only, each view's figures read fresh from its run directory."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tuneterm.errors import UserError
from tuneterm.runner.paths import db_path
from tuneterm.runner.queries import Queue
from tuneterm.runner.store import Store
from tuneterm.runner.tail import Tailer
from tuneterm.workspace import Workspace


def read_sessions(ws: Workspace | Path) -> list[dict]:
    """Every session's view, as the daemon would answer `list` (no live fields)."""
    ws = Workspace.resolve(ws)
    if not db_path(ws).exists():
        return []
    with _queue(ws) as q:
        return q.list()


def read_session(ws: Workspace | Path, ref) -> dict:
    """One session's view, as the daemon would answer `get`."""
    ws = Workspace.resolve(ws)
    if not db_path(ws).exists():
        raise UserError(f"no session {ref!r}: the queue is empty")
    with _queue(ws) as q:
        return q.view(q.resolve(ref))


@contextmanager
def _queue(ws: Workspace) -> Iterator[Queue]:
    store = Store.read_only(ws.queue_db)  # never repaired from here: Store.on_damage stays None
    try:
        yield Queue(store, ws.runs, lambda row: _figures(ws.run_dir(row["run_id"])) if row["attempts"] else None)
    finally:
        store.close()


def _figures(run_dir: Path) -> Tailer:
    t = Tailer(run_dir)
    t.refresh()
    return t
