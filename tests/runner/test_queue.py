"""Queue semantics with the daemon and the contract-following fake worker (fast): order
and reorder, slots, pause/resume/cancel/retry, failures that do not stop the queue, control
replies, and the gapless history + live stream. The same paths with the real engine are in
test_recovery.py / test_live.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runner_helpers import FAKE_WORKER, alive, rows, wait_for

from tuneterm.errors import UserError
from tuneterm.runner.client import RunnerUnavailable


def test_order_move_and_queued_state_changes(runner):
    runner.use_fake_worker(slots=0)  # nothing starts: the order is all there is
    c = runner.client()
    ids = [c.add(runner.session(f"s{i}", fake=True), check=False)["id"] for i in range(4)]
    assert [s["id"] for s in c.list_sessions()] == ids
    assert [s["position"] for s in c.list_sessions()] == [1, 2, 3, 4]
    c.move(ids[3], to=1)
    c.move(ids[0], by=1)
    assert [s["id"] for s in c.list_sessions()] == [ids[3], ids[1], ids[0], ids[2]]
    with pytest.raises(UserError):
        c.move(ids[0])
    assert c.pause(ids[1])["state"] == "paused"
    assert c.resume(ids[1])["state"] == "queued"
    assert c.cancel(ids[2])["state"] == "cancelled"
    with pytest.raises(UserError, match="already cancelled|cancelled"):
        c.pause(ids[2])
    assert c.retry(ids[2])["state"] == "queued"
    rej = c.control(ids[0], {"type": "set", "values": {"learning_rate": 1e-4}})
    assert rej["type"] == "reject" and "not running" in rej["reason"]
    # a refusal is logged only in a run in progress: a queued run's events stay empty (never ran)
    assert not (Path(c.get(ids[0])["run_dir"]) / "events.jsonl").exists()
    one = c.get(ids[0])
    assert set(one) >= {"id", "run_id", "name", "model", "data", "state", "position", "step", "total_steps",
                        "epoch", "loss", "best_metric", "eta_s", "run_dir", "created", "attempts", "error"}
    assert c.get(one["run_id"])["id"] == one["id"] == c.get(one["run_id"][:-2])["id"]
    with pytest.raises(UserError, match="no session"):
        c.get("nope")
    # What runs is what was queued: a copy in the run directory, taken at enqueue time.
    src = runner.ws / "sessions" / "s0.toml"
    assert (Path(one["run_dir"]) / "session.toml").read_text() == src.read_text()


def test_slots_failures_and_crashes_do_not_stop_the_queue(runner):
    runner.use_fake_worker(slots=2, max_crashes=2)
    c = runner.client()
    a = c.add(runner.session("a", fake=True, steps=40, step_s=0.02), check=False)
    b = c.add(runner.session("b", fake=True, steps=40, step_s=0.02), check=False)
    bad = c.add(runner.session("bad", fake=True, steps=40, extra="fail_at = 3"), check=False)
    crash = c.add(runner.session("crash", fake=True, steps=40, extra="crash_at = 2"), check=False)
    last = c.add(runner.session("last", fake=True, steps=10), check=False)
    wait_for(lambda: sum(s["state"] == "running" for s in c.list_sessions()) == 2, 30, "two sessions at once")
    wait_for(lambda: all(s["state"] in ("done", "failed") for s in c.list_sessions()), 60, "the queue to drain")
    st = {s["id"]: s for s in c.list_sessions()}
    assert st[a["id"]]["state"] == st[b["id"]]["state"] == st[last["id"]]["state"] == "done"
    assert st[bad["id"]]["state"] == "failed" and "non-finite loss" in st[bad["id"]]["error"]
    assert st[crash["id"]]["state"] == "failed" and "crashed 2 times in a row" in st[crash["id"]]["error"]
    assert st[crash["id"]]["attempts"] == 2
    assert st[a["id"]]["loss"] == pytest.approx(1 / 40) and st[a["id"]]["step"] == st[a["id"]]["total_steps"] == 40


def test_control_ack_reject_pause_resume_cancel_running(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("ctl", fake=True, steps=100000, step_s=0.01), check=False)
    wait_for(lambda: c.get(s["id"])["step"] > 2, 30, "training")
    ack = c.control(s["id"], {"type": "set", "values": {"learning_rate": 1e-4}})
    assert ack["type"] == "ack" and ack["step"] >= 2
    rej = c.control(s["id"], {"type": "set", "values": {"bad": 1}})
    assert rej == {"v": 1, "type": "reject", "id": rej["id"], "reason": "bad: not a knob"}
    c.pause(s["id"])
    p = wait_for(lambda: (x := c.get(s["id"]))["state"] == "paused" and x, 30, "paused")
    assert not runner.worker_pids(p["run_dir"])  # pausing released the worker
    step = p["step"]
    c.resume(s["id"])
    wait_for(lambda: c.get(s["id"])["step"] > step + 2, 30, "training again")
    c.cancel(s["id"])
    wait_for(lambda: c.get(s["id"])["state"] == "cancelled", 30, "cancelled")
    assert c.control(s["id"], {"type": "checkpoint"})["type"] == "reject"
    starts = [e["step"] for e in rows(Path(p["run_dir"]), "events.jsonl") if e["kind"] == "start"]
    assert starts[0] == 0 and starts[1] == step  # resumed where it paused


def test_late_subscriber_gets_history_then_live_without_gaps(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("sub", fake=True, steps=300, step_s=0.005), check=False)
    early = c.subscribe(s["id"])
    streams = {}
    for at in (100, 150, 200, 250):  # several late subscribers, each joining mid-stream
        wait_for(lambda: c.get(s["id"])["step"] >= at, 30, f"training past step {at}")
        streams[f"late{at}"] = runner.client().subscribe(s["id"])
    got = {"early": list(early), **{k: list(v) for k, v in streams.items()}}
    got["late"] = got["late100"]
    for name, msgs in got.items():
        train = [m["data"]["step"] for m in msgs if m["type"] == "metric"]
        assert train == list(range(1, 301)), name
        assert msgs[-1]["type"] == "state" and msgs[-1]["state"] == "done"
        assert [m["data"]["kind"] for m in msgs if m["type"] == "event"][-1] == "end"
    hist = [m for m in got["late"] if m.get("history")]
    assert len(hist) >= 100 and all(m["type"] in ("metric", "event") for m in hist)
    # A subscriber of a finished session gets its history and the end at once.
    again = list(runner.client().subscribe(s["id"]))
    assert [m["data"]["step"] for m in again if m["type"] == "metric"] == list(range(1, 301))


def test_cli_verbs_json_and_bad_input(runner):
    runner.use_fake_worker(slots=0)
    env_cmd = [sys.executable, "-m", "tuneterm", "--workspace", str(runner.ws)]
    sess = runner.session("cli", fake=True)

    def tt(*args):
        return subprocess.run(env_cmd + list(args), capture_output=True, text=True, timeout=60)

    r = tt("queue", "add", str(sess), "--no-check")
    assert r.returncode == 0 and r.stdout.startswith("queued 1 cli-")
    r = tt("queue", "ls", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["name"] == "cli"
    r = tt("queue", "ls")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "STATE"]
    for bad in (["set", "1", "learning_rate=fast"], ["set", "1", "nonsense=1"], ["queue", "pause", "zzz"],
                ["queue", "move", "1"], ["set", "1", "learning_rate=1e-4"], ["freeze", "1", "layer.0"]):
        r = tt(*bad)
        assert r.returncode == 2, (bad, r.stderr)
        # one error line (argparse's usage lines may precede it), never a traceback
        assert "error: " in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr, r.stderr
    r = tt("daemon", "status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["counts"]["queued"] == 1
    r = tt("daemon", "stop")
    assert r.returncode == 0 and "stopped" in r.stdout
    r = tt("daemon", "status")
    assert r.returncode == 1 and "no daemon" in r.stdout


def test_watch_streams_plain_text(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("w", fake=True, steps=20, step_s=0.01), check=False)
    r = subprocess.run([sys.executable, "-m", "tuneterm", "--workspace", str(runner.ws), "watch", str(s["id"])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(ln.startswith("step ") for ln in lines) == 20
    assert lines[-1].endswith(": done")


def test_stream_raises_when_the_daemon_goes_away(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("gone", fake=True, steps=100000, step_s=0.01), check=False)
    it = runner.client().subscribe(s["id"])
    assert next(it)["type"] in ("metric", "event", "state")
    runner.kill_daemon()
    with pytest.raises(RunnerUnavailable, match="went away|lost"):
        for _ in it:
            pass


def test_pause_or_cancel_while_the_worker_starts_is_not_lost(runner):
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("quick", fake=True, steps=100000, step_s=0.01), check=False)
    c.pause(s["id"])  # the scheduler has likely launched it already; its worker may not be up
    wait_for(lambda: c.get(s["id"])["state"] == "paused", 30, "paused")
    c.resume(s["id"])
    c.cancel(s["id"])
    wait_for(lambda: c.get(s["id"])["state"] == "cancelled", 30, "cancelled")
    assert not runner.worker_pids(s["run_dir"])


def test_daemon_stop_pauses_workers_and_the_next_start_resumes_them(runner):
    """Issue 14 item 8: a stop stays stopped until `daemon start` (on purpose), not the
    next daemon some other verb starts."""
    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("overnight", fake=True, steps=100000, step_s=0.01), check=False)
    wait_for(lambda: c.get(s["id"])["step"] > 5, 30, "training")
    pid = c.daemon["pid"]
    c.shutdown()
    wait_for(lambda: not alive(pid), 30, "the daemon to stop")
    assert not runner.worker_pids(s["run_dir"])  # paused at a checkpoint, memory released
    c = runner.client()  # a new daemon, started by a verb that only means "queue this"
    quick = c.add(runner.session("quick", fake=True, steps=3), check=False)
    wait_for(lambda: c.get(quick["id"])["state"] == "done", 30, "the next session to run in the free slot")
    held = c.get(s["id"])
    assert held["state"] == "paused" and "daemon stop" in held["error"] and not runner.worker_pids(s["run_dir"])
    r = runner.tt("daemon", "start")  # on purpose: continues what `daemon stop` paused
    assert r.returncode == 0 and "already running" in r.stdout and "resumed 1 sessions" in r.stdout, r.stdout
    starts = wait_for(lambda: len(x := [e["step"] for e in rows(Path(s["run_dir"]), "events.jsonl")
                                        if e["kind"] == "start"]) == 2 and x, 30, "a resumed worker")
    assert starts[1] > 5 and c.get(s["id"])["state"] == "running" and c.get(s["id"])["attempts"] == 2


def test_a_worker_whose_pid_was_never_recorded_is_followed_not_doubled(runner):
    """A daemon killed between starting a worker and recording its pid: the next daemon's
    worker finds the run locked (exit 73) and the daemon follows the one that holds it."""
    runner.use_fake_worker(slots=0)
    c = runner.client()
    s = c.add(runner.session("orphan", fake=True, steps=150, step_s=0.01), check=False)
    orphan = subprocess.Popen([sys.executable, str(FAKE_WORKER), s["run_dir"]], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: rows(Path(s["run_dir"])), 10, "the orphan to train")
        runner.kill_daemon()
        runner.use_fake_worker(slots=1)
        c = runner.client()
        got = wait_for(lambda: (x := c.get(s["id"]))["pid"] == orphan.pid and x, 30, "the orphan to be followed")
        assert got["state"] == "running"
        assert runner.worker_pids(s["run_dir"]) == [orphan.pid]
        wait_for(lambda: c.get(s["id"])["state"] == "done", 60, "done")
        assert [r["step"] for r in rows(Path(s["run_dir"]))] == list(range(1, 151))
    finally:
        orphan.kill()
        orphan.wait()
