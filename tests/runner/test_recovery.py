"""kill -9 of a worker and of the daemon, with real workers on a tiny BERT: the session
is resumed from its checkpoint and its metrics equal an uninterrupted `tuneterm run`."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from runner_helpers import alive, rows, strip_clock, wait_for

pytestmark = pytest.mark.slow  # real workers: torch start-up and training, tens of seconds

STEPS = 120  # long enough that a kill or pause lands mid-run on a fast machine


def _ckpts(run_dir: Path) -> list[int]:
    d = run_dir / "checkpoints"
    return sorted(int(p.name[5:]) for p in d.glob("step-*") if (p / "state.json").exists()) if d.is_dir() else []


def test_worker_kill9_resumes_from_checkpoint(runner, reference_run):
    c = runner.client()
    s = c.add(runner.session("k9w", steps=STEPS), check=False)
    run_dir = Path(s["run_dir"])
    seen: list[dict] = []  # a subscriber through the crash: the rewrite must not repeat steps
    watcher = threading.Thread(target=lambda: seen.extend(runner.client().subscribe(s["id"])), daemon=True)
    watcher.start()
    # Kill the worker once it has a checkpoint and is training past it.
    wait_for(lambda: _ckpts(run_dir) and c.get(s["id"])["step"] >= 7, 120, "a checkpoint")
    pid = c.get(s["id"])["pid"]
    assert pid and alive(pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: c.get(s["id"])["attempts"] >= 2, 60, "a second attempt")
    done = wait_for(lambda: (x := c.get(s["id"]))["state"] in ("done", "failed") and x, 120, "the end")
    assert done["state"] == "done", done
    assert strip_clock(rows(run_dir)) == reference_run(STEPS)
    watcher.join(30)
    assert [m["data"]["step"] for m in seen if m["type"] == "metric" and m["data"]["kind"] == "train"] == \
        list(range(1, STEPS + 1))
    assert [m["state"] for m in seen if m["type"] == "state"][-1] == "done"
    # Exactly one crash, counted once, with what happened (the kill came after a checkpoint).
    crashed = [m["session"] for m in seen if m["type"] == "state" and m["state"] == "interrupted"]
    assert [(x["crashes"], x["error"]) for x in crashed] == \
        [(1, "the worker crashed (killed by SIGKILL); resuming from the last checkpoint")]
    kinds = [e["kind"] for e in rows(run_dir, "events.jsonl")]
    resumed = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "resume"]
    assert kinds.count("start") == 1 and len(resumed) == 1 and resumed[0]["step"] > 0  # from a checkpoint


def test_daemon_kill9_readopts_worker_and_loses_nothing(runner, reference_run):
    c = runner.client()
    a = c.add(runner.session("k9d", steps=STEPS), check=False)
    b = c.add(runner.session("k9d-next", steps=5), check=False)
    run_dir = Path(a["run_dir"])
    wait_for(lambda: c.get(a["id"])["step"] >= 3, 120, "training")
    worker = c.get(a["id"])["pid"]
    runner.kill_daemon()
    assert alive(worker)  # training goes on without the daemon
    c2 = runner.client()  # starts a new daemon
    ids = [x["id"] for x in c2.list_sessions()]
    assert ids == [a["id"], b["id"]]  # nothing lost, nothing doubled
    # Never two workers for the run while the new daemon takes over.
    for _ in range(30):
        assert len(runner.worker_pids(run_dir)) <= 1
    assert c2.get(a["id"])["state"] == "running"
    # The adopted worker has no pipe: a control message bounces it (checkpoint, exit 75,
    # a new worker with --resume gets the message) and the run stays exact.
    ans = c2.control(a["id"], {"type": "checkpoint"}, timeout=120)
    assert ans["type"] == "ack", ans
    assert c2.get(a["id"])["pid"] != worker and not alive(worker)
    done = wait_for(lambda: (x := c2.get(a["id"]))["state"] in ("done", "failed") and x, 180, "the end")
    assert done["state"] == "done", done
    assert strip_clock(rows(run_dir)) == reference_run(STEPS)
    wait_for(lambda: c2.get(b["id"])["state"] == "done", 120, "the next session to run")
