"""Sweeps end to end: a real daemon and real workers on a tiny BERT. Some trials are
pruned through the runner's stop message, the best trial's session validates and its run
replays bit-identically, `sweep show` prints the trials and the importances, and a sweep
survives a kill -9 of the daemon and of itself (a second `tuneterm sweep FILE` finishes it)."""

from __future__ import annotations

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
    proc = subprocess.Popen([PY, "-m", "tuneterm", "sweep", str(f), "--workspace", str(ws)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # 1. kill -9 the daemon while trial 1 trains: the sweep starts a new daemon, which
        #    re-adopts the worker, and goes on following the trial.
        wait_for(lambda: (folder / "kk-t001.toml").exists() and runner.worker_pids(), 180, "trial 1 training")
        old = runner.daemon_pid()
        runner.kill_daemon()
        wait_for(lambda: (d := runner.daemon_pid()) and d != old, 60, "a new daemon")
        # 2. kill -9 the sweep itself while trial 3 is in the queue.
        wait_for(lambda: (folder / "kk-t003.toml").exists(), 240, "trial 3")
        time.sleep(0.5)
        proc.kill()
        proc.wait(10)
        first = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
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
