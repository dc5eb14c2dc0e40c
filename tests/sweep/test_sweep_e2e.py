"""Sweeps end to end: a real daemon and real workers on a tiny BERT. Some trials are
pruned through the runner's stop message, the best trial's session validates and its run
replays bit-identically, `sweep show` prints the trials and the importances, and a sweep
survives a kill -9 of the daemon and of itself (a second `tuneterm sweep FILE` finishes it),
also with two trials training at once (`parallel = 2`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_helpers import alive, wait_for
from sweep_helpers import sweep_text

pytestmark = pytest.mark.slow  # 6-8 trials of real training: about a minute each test

PY = sys.executable


def _sweep(ws: Path, file: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "tuneterm", "sweep", str(file), "--workspace", str(ws), *extra],
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def _sweep_in_background(ws: Path, file: Path):
    """`tuneterm sweep FILE` running on its own; killed on the way out if still running."""
    proc = subprocess.Popen([PY, "-m", "tuneterm", "sweep", str(file), "--workspace", str(ws)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def _kill_9(proc: subprocess.Popen) -> str:
    """kill -9 the sweep; what it printed."""
    proc.kill()
    proc.wait(10)
    return proc.stdout.read()


def _kill_9_the_daemon(runner) -> None:
    """The sweep's connections start a new daemon, which re-adopts the workers."""
    old = runner.daemon_pid()
    runner.kill_daemon()
    wait_for(lambda: (d := runner.daemon_pid()) and d != old, 60, "a new daemon")


def _show(ws: Path, name: str) -> dict:
    r = subprocess.run([PY, "-m", "tuneterm", "sweep", "show", name, "--json", "--workspace", str(ws)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_sweep_prunes_some_trials_and_the_best_replays(runner):
    ws = runner.ws
    f = ws / "sessions" / "sw.toml"
    f.write_text(sweep_text(name="sw", trials=8, steps=12))
    r = _sweep(ws, f)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    info = _show(ws, "sw")
    states = [t["state"] for t in info["trials"]]
    assert len(states) == 8, info
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 1, states
    assert "RUNNING" not in states and "FAIL" not in states, states
    for t in info["trials"]:
        if t["state"] == "PRUNED":  # stopped early through the runner, before the budget
            assert t["steps"] < 12, t
            run = ws / "runs" / t["run_id"]
            ends = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
            assert ends[-1]["kind"] == "end" and ends[-1]["state"] == "stopped", ends[-1]
    # The trial sessions are ordinary session files, tagged with the sweep.
    files = sorted((ws / "sessions" / "sweeps" / "sw").glob("*.toml"))
    assert [p.stem for p in files] == [f"sw-t{i:03d}" for i in range(8)]
    # The best trial: an ordinary session in sessions/, which validates; its run replays.
    best = ws / "sessions" / "sw-best.toml"
    assert best.exists() and info["best"] is not None
    v = subprocess.run([PY, "-m", "tuneterm", "validate", str(best), "--workspace", str(ws), "--no-model"],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stderr
    assert f"best trial {info['best']['number']} of sweep sw" in best.read_text()
    rp = subprocess.run([PY, "-m", "tuneterm", "replay", info["best"]["run_id"], "--check",
                         "--workspace", str(ws)], capture_output=True, text=True, timeout=300)
    assert rp.returncode == 0, rp.stderr[-2000:]
    # The table and the importances.
    text = subprocess.run([PY, "-m", "tuneterm", "sweep", "show", "sw", "--workspace", str(ws)],
                          capture_output=True, text=True, timeout=120).stdout
    assert "PRUNED" in text and "COMPLETE" in text and "importances:" in text, text
    assert set(info["importances"]) == {"learning_rate", "dropout", "batch_size"}, info
    # Running the finished sweep again trains nothing more.
    again = _sweep(ws, f)
    assert again.returncode == 0 and "queued" not in again.stdout, again.stdout
    assert len(_show(ws, "sw")["trials"]) == 8


def test_sweep_survives_kill_9_of_the_daemon_and_of_itself(runner):
    ws = runner.ws
    f = ws / "sessions" / "kk.toml"
    f.write_text(sweep_text(name="kk", trials=6, steps=12))
    folder = ws / "sessions" / "sweeps" / "kk"
    with _sweep_in_background(ws, f) as proc:
        # 1. kill -9 the daemon while trial 1 trains: the sweep starts a new daemon, which
        #    re-adopts the worker, and goes on following the trial.
        wait_for(lambda: (folder / "kk-t001.toml").exists() and runner.worker_pids(), 180, "trial 1 training")
        _kill_9_the_daemon(runner)
        # 2. kill -9 the sweep itself while trial 3 is in the queue.
        wait_for(lambda: (folder / "kk-t003.toml").exists(), 240, "trial 3")
        time.sleep(0.5)
        first = _kill_9(proc)
    assert "trial 1: complete" in first or "trial 1: pruned" in first, first
    # 3. Run it again: the trial left running is followed to its end, the rest are asked.
    r = _sweep(ws, f)
    assert r.returncode == 0, first + r.stdout[-3000:] + r.stderr[-3000:]
    assert "trial 3: resuming" in r.stdout or "trial 3: was being asked" in r.stdout, r.stdout
    info = _show(ws, "kk")
    counted = [t for t in info["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(counted) == 6, info
    assert not [t for t in info["trials"] if t["state"] == "RUNNING"], info
    assert (ws / "sessions" / "kk-best.toml").exists()
    # Never two workers for a run, nothing left training.
    wait_for(lambda: not runner.worker_pids(), 60, "no workers left")


def _trials_running(ws: Path, prefix: str) -> list[str]:
    """The names of the trial sessions the runner is training now (no daemon is started)."""
    from tuneterm.runner.client import RunnerClient

    with RunnerClient.connect(ws, start=False, timeout=5.0) as c:
        return sorted(v["name"] for v in c.list_sessions() if v["state"] == "running" and v["name"].startswith(prefix))


def test_parallel_trials_train_side_by_side_and_survive_kill_9(runner):
    """parallel = 2 on two slots: two trials train at once; a kill -9 of the daemon while both
    train, then of the sweep, and a re-run re-attaches to both (no trial trained twice)."""
    ws = runner.ws
    (ws / ".tuneterm").mkdir(exist_ok=True)
    (ws / ".tuneterm" / "config.toml").write_text("[runner]\nslots = 2\n")
    f = ws / "sessions" / "pp.toml"
    f.write_text(sweep_text(name="pp", trials=4, steps=12, extra="parallel = 2\n"))
    with _sweep_in_background(ws, f) as proc:
        wait_for(lambda: len(_trials_running(ws, "pp-t")) == 2, 180, "two trials training at once")
        _kill_9_the_daemon(runner)  # both workers re-adopted by the next daemon
        both = wait_for(lambda: len(r := _trials_running(ws, "pp-t")) == 2 and r, 180, "two trials training again")
        first = _kill_9(proc)
    assert not [x for x in first.splitlines() if "wait in the queue" in x], first
    r = _sweep(ws, f)
    assert r.returncode == 0, first + r.stdout[-3000:] + r.stderr[-3000:]
    for name in both:  # both trials in flight when the sweep died are followed to their end
        n = int(name.removeprefix("pp-t"))
        assert f"trial {n}: resuming" in r.stdout, first + r.stdout
    info = _show(ws, "pp")
    counted = [t for t in info["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(counted) == 4, info
    assert not [t for t in info["trials"] if t["state"] == "RUNNING"], info
    # One run per trial: nothing queued or trained twice.
    runs = sorted(p.name.rsplit("-", 3)[0] for p in (ws / "runs").iterdir())
    assert runs == sorted(t["run_id"].rsplit("-", 3)[0] for t in info["trials"] if t["run_id"]), runs
    assert len(set(runs)) == len(runs), runs
    wait_for(lambda: not runner.worker_pids(), 60, "no workers left")
