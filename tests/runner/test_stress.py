"""200 add / edit / cancel calls with the daemon killed (kill -9) at random points, some
in the middle of a call: every call that returned success is present exactly once.

The running session's worker is the contract-following fake (no torch) so that the
test stays in seconds; the real engine goes through the same kill in test_recovery.py."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from runner_helpers import alive, rows, wait_for

from tuneterm.errors import TunetermError


def test_200_calls_with_daemon_killed_at_random_points(runner):
    runner.use_fake_worker(slots=1)
    rng = random.Random(1234)
    long = runner.session("long", fake=True, steps=10_000_000, step_s=0.01)
    short = runner.session("short", fake=True, steps=10)

    c = runner.client()
    first = c.add(long, check=False)
    wait_for(lambda: c.get(first["id"])["state"] == "running", 30, "the long session to run")

    added: list[dict] = []      # successful adds
    cancelled: set[int] = set()  # successful cancels
    acked: list[float] = []      # learning rates acknowledged by the worker
    failures = kills = attempts = 0

    def kill_soon(pid: int, delay: float) -> None:
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for i in range(200):
        killer = victim = None
        if rng.random() < 0.06:  # now and then, kill the daemon during (or just before) this call
            victim = runner.daemon_pid()
            if victim:
                kills += 1
                killer = threading.Thread(target=kill_soon, args=(victim, rng.uniform(0, 0.004)))
                killer.start()
        op = rng.choices(["add", "set", "cancel"], weights=[5, 3, 2])[0]
        attempts += op == "add"
        try:
            if c is None:
                c = runner.client()
            if op == "add":
                added.append(c.add(short, check=False))
            elif op == "set":
                lr = round(1e-4 + i * 1e-7, 12)
                ans = c.control(first["id"], {"type": "set", "values": {"learning_rate": lr}}, timeout=20)
                if ans["type"] == "ack":
                    acked.append(lr)
            elif op == "cancel":
                mine = [a["id"] for a in added if a["id"] not in cancelled]
                if mine:
                    sid = rng.choice(mine)
                    c.cancel(sid)
                    cancelled.add(sid)
        except TunetermError:
            failures += 1
            c = None  # reconnect (and restart the daemon) on the next call
        if killer:
            killer.join()
            wait_for(lambda: not alive(victim), 10, "the killed daemon to be gone")
    assert kills >= 5, "the test did not kill the daemon often enough to mean anything"

    c = runner.client()
    sessions = c.list_sessions()
    ids = Counter(s["id"] for s in sessions)
    runs = Counter(s["run_id"] for s in sessions)
    assert all(n == 1 for n in ids.values()) and all(n == 1 for n in runs.values())
    by_id = {s["id"]: s for s in sessions}
    for a in added:  # every acknowledged add: present exactly once, with its run directory
        assert a["id"] in by_id and by_id[a["id"]]["run_id"] == a["run_id"]
        assert (Path(a["run_dir"]) / "session.toml").exists()
    for sid in cancelled:
        assert by_id[sid]["state"] == "cancelled"
    assert len(sessions) <= 1 + attempts  # nothing doubled: at most one row per add attempt
    # Every acknowledged edit is in the run's event log exactly once.
    c.pause(first["id"])
    wait_for(lambda: c.get(first["id"])["state"] == "paused", 30, "the long session to pause")
    edits = [e["edit"]["set"]["learning_rate"] for e in rows(Path(first["run_dir"]), "events.jsonl")
             if e["kind"] == "edit" and "set" in e["edit"]]  # the engine's shape: {"step", "set"}
    counts = Counter(edits)
    for lr in acked:
        assert counts[lr] == 1, (lr, counts[lr])
    # Never two workers for the long session at any point we can still see.
    assert len(runner.worker_pids(first["run_dir"])) == 0
    print(json.dumps({"calls": 200, "kills": kills, "failed_calls": failures, "adds": len(added),
                      "cancels": len(cancelled), "acked_edits": len(acked)}))
