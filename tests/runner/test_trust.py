"""Issue 14's runner items, with the fake worker: a stop stays stopped and reads never
start training (8), `daemon stop`/`status` tell the truth about hung workers and find the
daemon from the workspace (10), the wall-clock limit and the heartbeat."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

from runner_helpers import alive, rows, wait_for


def _running(runner, c, name, **kw):
    s = c.add(runner.session(name, fake=True, steps=kw.pop("steps", 100000), step_s=0.01, **kw), check=False)
    wait_for(lambda: c.get(s["id"])["step"] > 3, 30, "training")
    return c.get(s["id"])


def test_read_only_verbs_never_start_a_daemon_or_training(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = _running(runner, c, "night")
    queued = c.add(runner.session("later", fake=True, steps=5), check=False)  # waits for the one slot
    r = runner.tt("daemon", "stop")
    assert r.returncode == 0 and "daemon stopped" in r.stdout, r.stdout + r.stderr
    for verb in (["queue", "ls"], ["queue", "ls", "--json"], ["queue", "logs", str(s["id"])],
                 ["queue", "show", str(s["id"])], ["daemon", "status"]):
        r = runner.tt(*verb)
        assert runner.daemon_pid() is None, f"{verb} started a daemon"
        assert not runner.worker_pids(), f"{verb} started training"
    listed = {x["id"]: x for x in json.loads(runner.tt("queue", "ls", "--json").stdout)}
    assert listed[s["id"]]["state"] == "paused" and listed[queued["id"]]["state"] == "queued"
    assert "daemon stop" in listed[s["id"]]["error"]
    r = runner.tt("queue", "pause", str(s["id"]))  # a verb that needs a daemon says so
    assert r.returncode == 1 and "tuneterm daemon start" in r.stderr and runner.daemon_pid() is None


def test_daemon_stop_kills_a_hung_worker_and_says_so(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = _running(runner, c, "hung")
    worker = s["pid"]
    os.kill(worker, signal.SIGSTOP)  # a hung worker: it can neither checkpoint nor exit
    try:
        r = runner.tt("daemon", "stop", "--json")
        out = json.loads(r.stdout)
        assert not alive(worker), "daemon stop left the hung worker alive"
        assert r.returncode == 0 and out["stopped"] is True
        (row,) = out["sessions"]
        assert row["state"] == "paused" and row["worker_alive"] is False
        assert "did not stop in time: killed by SIGKILL" in row["note"]
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
    log = (runner.ws / ".tuneterm" / "daemon.log").read_text()
    assert "stopped (SIGSTOP) and cannot checkpoint; killing it" in log


def test_status_and_stop_find_the_daemon_from_another_runtime_dir(runner):
    runner.use_fake_worker(slots=0)
    c = runner.client()
    pid = c.daemon["pid"]
    other = {"TUNETERM_RUNTIME_DIR": tempfile.mkdtemp(prefix="tt-o-", dir="/tmp")}
    r = runner.tt("daemon", "status", env=other)
    assert r.returncode == 0 and f"daemon running (pid {pid}" in r.stdout, r.stdout
    r = runner.tt("daemon", "stop", env=other)
    assert r.returncode == 0 and f"daemon stopped (pid {pid})" in r.stdout, r.stdout + r.stderr
    assert not alive(pid)
    r = runner.tt("daemon", "status", env=other)
    assert r.returncode == 1 and "no daemon running" in r.stdout


def test_wall_clock_limit_pauses_at_a_checkpoint_and_fails_with_the_reason(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("long", fake=True, steps=100000, extra="[runtime]\nmax_wall_s = 1.5"), check=False)
    st = wait_for(lambda: (x := c.get(s["id"]))["state"] == "failed" and x, 30, "the limit")
    assert st["error"].startswith("wall-clock limit reached ([runtime] max_wall_s = 1.5)"), st["error"]
    ends = [e for e in rows(Path(s["run_dir"]), "events.jsonl") if e["kind"] == "end"]
    assert ends[-1]["state"] == "paused"  # checkpointed, so `queue retry` continues it
    assert c.retry(s["id"])["state"] == "queued"
    wait_for(lambda: c.get(s["id"])["attempts"] == 2, 30, "the retry")


def test_a_silent_worker_is_killed_reported_and_its_slot_freed(runner):
    runner.use_fake_worker(slots=1)
    c = runner.client()
    s = _running(runner, c, "quiet", extra="[runtime]\nheartbeat_s = 1")
    worker = s["pid"]
    os.kill(worker, signal.SIGSTOP)
    try:
        st = wait_for(lambda: (x := c.get(s["id"]))["attempts"] == 2 and x, 30, "the hung worker to be replaced")
        assert not alive(worker) and st["pid"] != worker
        log = (runner.ws / ".tuneterm" / "daemon.log").read_text()
        assert "the worker hung (stopped, state T); killed it" in log
        assert c.get(s["id"])["crashes"] == 1
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
