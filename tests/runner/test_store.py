"""Unit tests of the queue Store (tuneterm/runner/store.py): order, moves, lookups, counts,
transactions, the checks that refuse a file that is not a healthy queue, read-only opening
and healing a file damaged under a live daemon."""

from __future__ import annotations

import sqlite3

import pytest

from tuneterm.runner.store import STATES, CorruptQueue, Store, open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "queue.db")
    yield s
    s.close()


def _add(store, run_id, key=None):
    return store.add(run_id=run_id, name=run_id.split("-")[0], model="m", data="d", key=key)


def test_add_orders_by_position_and_move_clamps(store):
    ids = [_add(store, f"r{i}-x")["id"] for i in range(4)]
    assert [r["id"] for r in store.all()] == ids
    assert [r["position"] for r in store.all()] == [1, 2, 3, 4]
    assert store.get(ids[0])["state"] == "queued" and store.get(ids[0])["attempts"] == 0
    store.move(ids[3], 0)
    store.move(ids[0], 99)  # clamped to the end
    assert [r["id"] for r in store.all()] == [ids[3], ids[1], ids[2], ids[0]]
    assert store.index_of(ids[0]) == 3
    store.move(ids[1], -5)
    assert store.index_of(ids[1]) == 0


def test_find_by_id_run_id_prefix_with_like_metacharacters_escaped(store):
    a = _add(store, "run_1-20260101-000000-aaaa")
    b = _add(store, "run_1-20260101-000000-bbbb")
    _add(store, "runX1-20260101-000000-cccc")
    assert store.find(a["id"]) == [a] and store.find(str(b["id"])) == [b]
    assert store.find(a["run_id"]) == [a]
    assert [r["id"] for r in store.find("run_1-")] == [a["id"], b["id"]]  # "_" is not a wildcard
    assert store.find("run%") == []
    assert store.find("nope") == []


def test_idempotency_key_and_unique_run_id(store):
    a = _add(store, "a-1", key="k1")
    assert store.by_key("k1") == a and store.by_key("k2") is None
    with pytest.raises(sqlite3.IntegrityError):
        _add(store, "a-1")
    with pytest.raises(sqlite3.IntegrityError):
        _add(store, "b-1", key="k1")


def test_update_counts_states_and_schedulable(store):
    ids = [_add(store, f"s{i}-x")["id"] for i in range(5)]
    store.update(ids[0], state="running", pid=12, pid_start="99")
    store.update(ids[1], state="paused")
    store.update(ids[2], state="interrupted", crashes=2, error="boom")
    store.update(ids[3], state="done", result="early_stopped")
    assert store.get(ids[2])["crashes"] == 2 and store.get(ids[2])["error"] == "boom"
    counts = store.counts()
    assert set(counts) == set(STATES) and counts["queued"] == 1 and counts["running"] == 1 and counts["done"] == 1
    assert store.count("paused") == 1
    assert [r["id"] for r in store.schedulable()] == [ids[2], ids[4]]  # interrupted and queued, in order
    assert [r["id"] for r in store.by_state("running")] == [ids[0]]
    with pytest.raises(KeyError, match="unknown columns"):
        store.update(ids[0], nonsense=1)


def test_every_change_is_committed_at_once(store, tmp_path):
    a = _add(store, "a-1")
    store.update(a["id"], state="paused")
    other = sqlite3.connect(tmp_path / "queue.db")  # another reader sees it without any close
    assert other.execute("SELECT state FROM sessions WHERE id = ?", (a["id"],)).fetchone() == ("paused",)
    other.close()


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_bytes(b"garbage" * 200), "file is not a database"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE notes (x)"), "not a tuneterm queue"),
])
def test_a_file_that_is_not_a_queue_is_moved_aside_never_used(tmp_path, make, needle):
    p = tmp_path / "queue.db"
    make(p)
    before = p.read_bytes()
    with pytest.raises(CorruptQueue, match=needle):
        open_store(p)
    (aside,) = tmp_path.glob("queue.db.corrupt-*")
    assert aside.read_bytes() == before and not p.exists()


def test_unknown_schema_and_unknown_states_are_refused(tmp_path):
    p = tmp_path / "queue.db"
    s = open_store(p)
    _add(s, "a-1")
    s.db.execute("UPDATE sessions SET state = 'exploded'")
    s.close()
    with pytest.raises(CorruptQueue, match="1 sessions have an unknown state"):
        open_store(p)
    p2 = tmp_path / "q2.db"
    s = open_store(p2)
    s.set_meta("schema", "99")
    s.close()
    with pytest.raises(CorruptQueue, match="unknown queue schema version '99'"):
        open_store(p2)


def test_read_only_opening_reads_and_never_writes(tmp_path):
    p = tmp_path / "queue.db"
    with pytest.raises(CorruptQueue, match="missing or empty"):
        Store.read_only(p)
    s = open_store(p)
    a = _add(s, "a-1")
    s.close()
    ro = Store.read_only(p)
    assert ro.get(a["id"])["run_id"] == "a-1"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.update(a["id"], state="paused")
    ro.close()


def test_damage_under_a_live_store_is_healed_once_and_refilled(tmp_path):
    p = tmp_path / "queue.db"
    s = open_store(p)
    ids = [_add(s, f"r{i}-x")["id"] for i in range(3)]
    seen = []

    def refill(store, reason, aside):
        seen.append((reason, aside.name))
        store.insert_recovered({"id": ids[1], "run_id": "r1-x", "name": "r1", "state": "paused", "created": 1.0})

    s.on_damage = refill
    other = sqlite3.connect(p)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    with open(p, "r+b") as fh:
        fh.truncate(4096)
    assert [(r["id"], r["state"]) for r in s.all()] == [(ids[1], "paused")]
    assert len(seen) == 1 and seen[0][0] == "database disk image is malformed"
    assert (tmp_path / seen[0][1]).stat().st_size == 4096
    # A recovered row whose id or key is taken gets a new one.
    again = s.insert_recovered({"id": ids[1], "run_id": "z-x", "name": "z", "state": "queued", "created": 2.0})
    assert again["id"] != ids[1] and s.index_of(again["id"]) == 1
    s.close()


def test_a_constraint_or_a_busy_database_is_not_damage(store):
    calls = []
    store.on_damage = lambda *a: calls.append(a)
    _add(store, "a-1", key="k")
    with pytest.raises(sqlite3.IntegrityError):
        _add(store, "a-1")
    assert calls == [] and len(store.all()) == 1
