"""The queue read without a daemon (no torch): what `queue ls` and `queue logs` show when
none runs. They never start one, so a read never starts training (docs/runner.md, "Which
verbs start the daemon")."""

from __future__ import annotations

from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.runner.paths import db_path


def read_sessions(ws: Path) -> list[dict]:
    """Every session's view, as the daemon would answer `list` (no live fields)."""
    from tuneterm.runner.daemon import Daemon
    from tuneterm.runner.store import Store

    path = db_path(ws)
    if not path.exists():
        return []
    store = Store.read_only(path)
    try:
        d = Daemon(ws, store, None)
        store.on_damage = None  # read-only: never repaired from here
        return d.list()
    finally:
        store.close()


def read_session(ws: Path, ref) -> dict:
    from tuneterm.runner.daemon import Daemon
    from tuneterm.runner.store import Store

    path = db_path(ws)
    if not path.exists():
        raise UserError(f"no session {ref!r}: the queue is empty")
    store = Store.read_only(path)
    try:
        d = Daemon(ws, store, None)
        store.on_damage = None
        return d.view(d.resolve(ref))
    finally:
        store.close()
