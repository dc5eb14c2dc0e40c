"""The queue: one SQLite table of sessions (no torch, no textual).

Durability (the reasons are in docs/runner.md): WAL journal, ``synchronous=FULL`` so a
transaction that returned is on disk before the daemon answers the client, one short
transaction per change. The daemon is the only writer (it holds the workspace's daemon
lock); readers never block it.

A file that is not a tuneterm queue, or fails SQLite's quick check, is never used or
overwritten: ``open_store`` moves it aside and raises ``CorruptQueue``.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from tuneterm.errors import TunetermError
from tuneterm.states import STATES, WAITING_STATES, SessionState

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    model      TEXT NOT NULL DEFAULT '',
    data       TEXT NOT NULL DEFAULT '',
    state      TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created    REAL NOT NULL,
    started    REAL,
    finished   REAL,
    attempts   INTEGER NOT NULL DEFAULT 0,   -- workers started for this run
    crashes    INTEGER NOT NULL DEFAULT 0,   -- crashes in a row (reset by progress)
    error      TEXT,
    result     TEXT,                         -- done: done | early_stopped | stopped
    want       TEXT,                         -- a pending pause/cancel of a running worker
    pid        INTEGER,                      -- running worker (for re-adoption)
    pid_start  TEXT,                         -- its start time (/proc/PID/stat field 22)
    ckpt_step  INTEGER,                      -- newest checkpoint when the attempt began
    client_key TEXT UNIQUE                   -- idempotency key of the `add` request
);
CREATE INDEX IF NOT EXISTS sessions_position ON sessions(position);
"""

COLUMNS = ("id", "run_id", "name", "model", "data", "state", "position", "created", "started", "finished",
           "attempts", "crashes", "error", "result", "want", "pid", "pid_start", "ckpt_step", "client_key")


class CorruptQueue(TunetermError):
    """The queue database is unusable (exit code 1, as every TunetermError)."""


log = logging.getLogger("tuneterm.runner")


def _healing(fn):
    """Run a Store method; when SQLite finds the file damaged under a live daemon ("database
    disk image is malformed": truncated, overwritten), let ``heal`` replace it and try once
    more. Only damage heals (SQLite's "malformed" and "not a database" errors); a busy, full
    or read-only database, or a constraint, passes through."""

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError or self.on_damage is None:
                raise
            self.heal(str(e))
            return fn(self, *args, **kwargs)

    return run


class Store:
    on_damage: Callable[["Store", str, Path | None], None] | None = None  # refills a replaced file

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
        self.db.row_factory = sqlite3.Row

    def init_schema(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def heal(self, reason: str) -> None:
        """The file was damaged while the daemon ran: keep it aside, start a new one and let
        ``on_damage`` refill it (from the run directories and the workers it knows)."""
        log.error("the queue database %s is damaged (%s); moving it aside and rebuilding it", self.path, reason)
        try:
            self.db.close()
        except sqlite3.Error:
            pass
        aside = move_aside(self.path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
        self.db.row_factory = sqlite3.Row
        self.init_schema()
        if self.on_damage is not None:
            self.on_damage(self, reason, aside)

    @classmethod
    def read_only(cls, path: Path) -> "Store":
        """The queue opened for reading only (no daemon runs: `queue ls`, `queue logs`).
        Without its -shm file SQLite cannot open a WAL database read-only; then it is read
        as immutable (nobody writes it: the caller checked that no daemon holds the lock)."""
        self = cls.__new__(cls)
        self.path = Path(path)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise CorruptQueue(f"the queue database {self.path} is missing or empty; the next `tuneterm daemon "
                               "start` rebuilds it from the run directories")
        for mode in ("ro", "ro&immutable=1"):
            try:
                self.db = sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True, timeout=10.0)
                self.db.row_factory = sqlite3.Row
                reason = _check(self.db)
            except sqlite3.DatabaseError as e:
                reason = str(e)
            if reason is None:
                return self
        raise CorruptQueue(f"cannot read the queue database {self.path} ({reason})")

    def close(self) -> None:
        self.db.close()

    # -- reading ------------------------------------------------------------------------

    @_healing
    def all(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM sessions ORDER BY position, id")]

    @_healing
    def get(self, sid: int) -> dict | None:
        r = self.db.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
        return dict(r) if r else None

    @_healing
    def by_key(self, key: str) -> dict | None:
        r = self.db.execute("SELECT * FROM sessions WHERE client_key = ?", (key,)).fetchone()
        return dict(r) if r else None

    @_healing
    def find(self, ref: str | int) -> list[dict]:
        """Sessions matching an id, a run id, or a prefix of a run id."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            r = self.get(int(ref))
            if r:
                return [r]
        ref = str(ref)
        exact = self.db.execute("SELECT * FROM sessions WHERE run_id = ?", (ref,)).fetchone()
        if exact:
            return [dict(exact)]
        like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM sessions WHERE run_id LIKE ? ESCAPE '\\' ORDER BY position LIMIT 6", (like,))]

    @_healing
    def count(self, state: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM sessions WHERE state = ?", (state,)).fetchone()[0]

    @_healing
    def counts(self) -> dict[str, int]:
        """Sessions per state (every state present, 0 when none)."""
        out = {s: 0 for s in STATES}
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM sessions GROUP BY state"):
            out[state] = n
        return out

    @_healing
    def by_state(self, state: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM sessions WHERE state = ? ORDER BY position, id",
                                                 (state,))]

    @_healing
    def schedulable(self) -> list[dict]:
        """Sessions waiting for a worker, in queue order."""
        marks = ", ".join("?" * len(WAITING_STATES))
        return [dict(r) for r in self.db.execute(
            f"SELECT * FROM sessions WHERE state IN ({marks}) ORDER BY position, id", WAITING_STATES)]

    # -- writing (each call is one committed transaction) ---------------------------------

    @_healing
    def add(self, *, run_id: str, name: str, model: str, data: str, key: str | None) -> dict:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            pos = self.db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM sessions").fetchone()[0]
            cur = self.db.execute(
                "INSERT INTO sessions (run_id, name, model, data, state, position, created, client_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, model, data, SessionState.QUEUED.value, pos, time.time(), key))
        return self.get(cur.lastrowid)

    @_healing
    def update(self, sid: int, **fields) -> dict:
        bad = set(fields) - set(COLUMNS)
        if bad:
            raise KeyError(f"unknown columns {bad}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db:
            self.db.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*fields.values(), sid))
        return self.get(sid)

    @_healing
    def move(self, sid: int, index: int) -> None:
        """Put session ``sid`` at 0-based ``index`` of the queue order (clamped)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in self.db.execute("SELECT id FROM sessions ORDER BY position, id")]
            ids.remove(sid)
            index = max(0, min(index, len(ids)))
            ids.insert(index, sid)
            self.db.executemany("UPDATE sessions SET position = ? WHERE id = ?",
                                [(i + 1, s) for i, s in enumerate(ids)])

    @_healing
    def index_of(self, sid: int) -> int:
        ids = [r[0] for r in self.db.execute("SELECT id FROM sessions ORDER BY position, id")]
        return ids.index(sid)

    # -- recovery ---------------------------------------------------------------------------

    def run_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT run_id FROM sessions")}

    def insert_recovered(self, row: dict) -> dict:
        """A session rebuilt from its run directory, under its old id when that is free."""
        row = {k: v for k, v in row.items() if k in COLUMNS}
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if row.get("id") is not None and self.db.execute("SELECT 1 FROM sessions WHERE id = ?",
                                                              (row["id"],)).fetchone():
                row.pop("id")
            if row.get("client_key") and self.db.execute("SELECT 1 FROM sessions WHERE client_key = ?",
                                                         (row["client_key"],)).fetchone():
                row["client_key"] = None
            if "position" not in row:
                row["position"] = self.db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM sessions").fetchone()[0]
            cols = ", ".join(row)
            cur = self.db.execute(f"INSERT INTO sessions ({cols}) VALUES ({', '.join('?' * len(row))})",
                                  tuple(row.values()))
        return self.get(cur.lastrowid)

    def meta(self, key: str) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _check(db: sqlite3.Connection) -> str | None:
    """None when ``db`` is a healthy tuneterm queue (or an empty new file), else why not."""
    try:
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            return f"SQLite quick_check: {ok}"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "meta" not in tables or "sessions" not in tables:
            return f"not a tuneterm queue (tables: {', '.join(sorted(tables)) or 'none'})"
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            return f"unknown queue schema version {row[0] if row else None!r}"
        cols = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
        if not set(COLUMNS) <= cols:
            return "the sessions table lacks columns " + ", ".join(sorted(set(COLUMNS) - cols))
        marks = ", ".join("?" * len(STATES))
        bad = db.execute(f"SELECT COUNT(*) FROM sessions WHERE state NOT IN ({marks})", STATES).fetchone()[0]
        if bad:
            return f"{bad} sessions have an unknown state"
    except sqlite3.DatabaseError as e:
        return str(e)
    return None


def move_aside(path: Path) -> Path | None:
    """Rename the database (with its -wal/-shm) to ``NAME.corrupt-TIME``; None when absent."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 0
    while any(Path(str(aside) + s).exists() for s in ("", "-wal", "-shm")):
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    moved = False
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
            moved = moved or suffix == ""
    return aside if moved else None


def open_store(path: Path) -> Store:
    """Open (creating when absent) the queue at ``path``; a corrupt file is moved aside
    (with its -wal/-shm) and CorruptQueue raised: the daemon must not start over it (the
    next start rebuilds the queue from the run directories: rebuild.py)."""
    path = Path(path)
    reason = None
    try:
        store = Store(path)
        reason = _check(store.db)
        if reason is None:
            store.init_schema()
            return store
        store.close()
    except sqlite3.DatabaseError as e:
        reason = str(e)
    aside = move_aside(path)
    raise CorruptQueue(f"the queue database {path} is unusable ({reason}); moved it aside to "
                       f"{aside.name if aside else '?'}. Nothing was started; `tuneterm daemon start` again "
                       "rebuilds the queue from the run directories")
