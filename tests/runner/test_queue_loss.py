"""Issue 14 item 7: a lost or damaged queue database never becomes an empty (or shorter)
queue. Each run directory holds its frozen session, its queue row (queue.json) and its
events; the daemon rebuilds what the database lost and says so."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runner_helpers import alive, wait_for

from tuneterm.runner.paths import db_path


def _stop(runner, c):
    pid = c.daemon["pid"]
    c.shutdown()
    wait_for(lambda: not alive(pid), 30, "the daemon to stop")


def _drop_wal(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def test_a_zero_byte_database_is_rebuilt_from_the_run_directories(runner):
    runner.use_fake_worker(slots=1)
    c = runner.client()
    a = c.add(runner.session("a", fake=True, steps=3), check=False)
    wait_for(lambda: c.get(a["id"])["state"] == "done", 30, "a to finish")
    b = c.add(runner.session("b", fake=True, steps=100000), check=False)
    wait_for(lambda: c.get(b["id"])["step"] > 3, 30, "b to train")
    c.pause(b["id"])
    wait_for(lambda: c.get(b["id"])["state"] == "paused", 30, "b to pause")
    _stop(runner, c)
    runner.use_fake_worker(slots=0)
    c = runner.client()
    q = c.add(runner.session("q", fake=True), check=False)
    _stop(runner, c)
    db = db_path(runner.ws)
    db.write_bytes(b"")
    _drop_wal(db)
    c = runner.client()
    got = {s["id"]: s for s in c.list_sessions()}
    assert {k: (v["run_id"], v["state"]) for k, v in got.items()} == {
        a["id"]: (a["run_id"], "done"), b["id"]: (b["run_id"], "paused"), q["id"]: (q["run_id"], "queued")}
    assert got[a["id"]]["result"] == "done" and got[b["id"]]["step"] > 3
    st = c.status()
    assert "rebuilt 3 sessions from their run directories (1 done, 1 paused, 1 queued)" in st["recovered"]
    log = (runner.ws / ".tuneterm" / "daemon.log").read_text()
    assert "queue: " in log and "rebuilt 3 sessions" in log


def test_a_rebuilt_queue_keeps_the_order_queue_move_gave_it(runner):
    runner.use_fake_worker(slots=0)  # nothing starts: the order is all there is
    c = runner.client()
    ids = [c.add(runner.session(n, fake=True), check=False)["id"] for n in ("first", "second", "third")]
    c.move(ids[2], to=1)
    c.move(ids[0], by=1)
    order = [s["id"] for s in c.list_sessions()]
    assert order == [ids[2], ids[1], ids[0]]
    _stop(runner, c)
    db = db_path(runner.ws)
    db.write_bytes(b"")
    _drop_wal(db)
    c = runner.client()
    assert [s["id"] for s in c.list_sessions()] == order
    assert "rebuilt 3 sessions" in c.status()["recovered"]


def test_kill9_of_the_daemon_and_a_lost_wal_keeps_the_running_session_and_its_worker(runner):
    runner.use_fake_worker(slots=1)
    c = runner.client()
    s = c.add(runner.session("night", fake=True, steps=100000), check=False)
    wait_for(lambda: c.get(s["id"])["step"] > 3, 30, "training")
    worker = c.get(s["id"])["pid"]
    runner.kill_daemon()
    _drop_wal(db_path(runner.ws))
    assert alive(worker)
    c = runner.client()
    (row,) = c.list_sessions()
    assert (row["id"], row["run_id"], row["state"]) == (s["id"], s["run_id"], "running")
    wait_for(lambda: c.get(s["id"])["pid"] == worker, 30, "the worker to be re-adopted")
    assert runner.worker_pids(s["run_dir"]) == [worker]  # followed, not doubled
    assert "rebuilt 1 sessions" in c.status()["recovered"]


def test_a_database_truncated_under_a_live_daemon_is_rebuilt_not_emptied(runner):
    runner.use_fake_worker(slots=0)
    c = runner.client()
    ids = [c.add(runner.session(f"t{i}", fake=True), check=False)["id"] for i in range(3)]
    db = db_path(runner.ws)
    other = sqlite3.connect(db)  # the rows into the main file, so that the truncation cuts them
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    with open(db, "r+b") as fh:
        fh.truncate(4096)
    assert [s["id"] for s in c.list_sessions()] == ids  # SQLite: "database disk image is malformed"
    assert c.add(runner.session("t3", fake=True), check=False)["id"] not in ids
    rec = c.status()["recovered"]
    assert "rebuilt 3 sessions" in rec and "damaged under the running daemon (database disk image is malformed)" in rec
    (aside,) = db.parent.glob("queue.db.corrupt-*")
    assert aside.name in rec and aside.stat().st_size == 4096  # kept as it was found
    _stop(runner, c)  # and a restart keeps all four
    assert len(runner.client().list_sessions()) == 4
