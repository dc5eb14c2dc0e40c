"""The sweep driver against a real daemon with a torch-free fake worker (seconds): pruning
through `stop`, failed trials, a trial lost between ask and queue on resume, a second
driver refused, parallel trials and a re-run re-attaching to every trial in flight."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sweep_helpers import sweep_text

from tuneterm.errors import UserError
from tuneterm.sweep.spec import load_sweep
from tuneterm.sweep.driver import _Driver, run_sweep
from tuneterm.sweep.study import create_or_resume, describe_study
from tuneterm.sweep.trials import QueueTrials

FAKE = Path(__file__).parent / "fake_sweep_worker.py"
LR = "learning_rate = {{ low = {lo}, high = {hi}, log = true }}\n"


def _setup(runner, name: str, trials: int, lo: float, hi: float, parallel: int = 1, slots: int = 1):
    ws = runner.ws
    (ws / ".tuneterm").mkdir(exist_ok=True)
    (ws / ".tuneterm" / "config.toml").write_text(
        f"[runner]\nworker = {json.dumps([sys.executable, str(FAKE)])}\nslots = {slots}\n")
    f = ws / "sessions" / f"{name}.toml"
    f.write_text(sweep_text(name=name, trials=trials, steps=12, space=LR.format(lo=lo, hi=hi),
                            extra=f"parallel = {parallel}\n" if parallel != 1 else ""))
    return load_sweep(f, ws)


def _interval(run_dir: Path) -> tuple[float, float]:
    """When the worker started and ended training (its events.jsonl)."""
    rows = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    return (next(r["time"] for r in rows if r["kind"] == "start"),
            next(r["time"] for r in reversed(rows) if r["kind"] == "end"))


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])  # an end before a start
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


def test_pruning_and_a_lost_trial_on_resume(runner):
    sw = _setup(runner, "fk", trials=6, lo=1e-6, hi=1e-2)
    # A trial that an earlier driver asked for but never queued (it died in between).
    study = create_or_resume(sw, runner.ws)
    lost = study.ask()
    lines: list[str] = []
    info = run_sweep(sw, runner.ws, say=lines.append)
    by = {t["number"]: t for t in info["trials"]}
    assert by[lost.number]["state"] == "FAIL"
    assert any("never reached the queue" in x for x in lines), lines
    counted = [t for t in info["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(counted) == 6 and len(info["trials"]) == 7, info
    assert [t for t in counted if t["state"] == "PRUNED"], info  # the fake's val_loss favours lr ~ 1e-3
    for t in counted:
        if t["state"] == "PRUNED":
            ends = (runner.ws / "runs" / t["run_id"] / "events.jsonl").read_text().splitlines()
            assert json.loads(ends[-1])["state"] == "stopped"
    assert (runner.ws / "sessions" / "fk-best.toml").exists()
    again = describe_study(create_or_resume(sw, runner.ws))
    assert again["best"]["value"] == info["best"]["value"]


def test_trials_that_fail_count_and_five_in_a_row_stop_the_sweep(runner):
    sw = _setup(runner, "bad", trials=8, lo=0.06, hi=0.5)  # every trial "diverges"
    lines: list[str] = []
    with pytest.raises(UserError, match="5 trials failed in a row"):
        run_sweep(sw, runner.ws, say=lines.append)
    assert sum("failed: " in x for x in lines) == 5, lines
    assert any("non-finite loss" in x or "failed" in x for x in lines)


def test_grid_sampler_is_capped_at_the_grid_and_successive_halving_runs(runner):
    ws = runner.ws
    _setup(runner, "unused", trials=1, lo=1e-4, hi=1e-2)  # the fake worker's config
    space = "learning_rate = { low = 1e-4, high = 1e-2, log = true, points = 3 }\n"
    f = ws / "sessions" / "gr.toml"
    f.write_text(sweep_text(name="gr", trials=5, steps=12, sampler="grid", space=space)
                 .replace('pruner = "median"', 'pruner = "successive_halving"'))
    lines: list[str] = []
    info = run_sweep(load_sweep(f, ws), ws, say=lines.append)
    assert any("the grid has 3 points" in x for x in lines), lines
    assert len(info["trials"]) == 3, info
    lrs = sorted(t["params"]["learning_rate"] for t in info["trials"])
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2])
    assert info["best"]["params"]["learning_rate"] == pytest.approx(1e-3)  # the fake's optimum


def test_parallel_trials_run_side_by_side_and_no_more_than_parallel(runner, monkeypatch):
    monkeypatch.setenv("SWEEP_FAKE_STEP_S", "0.05")  # 0.6 s a trial (the daemon and its workers inherit it)
    sw = _setup(runner, "pl", trials=6, lo=1e-6, hi=1e-2, parallel=2, slots=3)  # a free slot the sweep leaves
    lines: list[str] = []
    info = run_sweep(sw, runner.ws, say=lines.append)
    assert len(info["trials"]) == 6, info
    assert {t["state"] for t in info["trials"]} <= {"COMPLETE", "PRUNED"}, info
    assert not any("wait in the queue" in x for x in lines), lines  # 3 slots >= parallel 2
    intervals = [_interval(runner.ws / "runs" / t["run_id"]) for t in info["trials"]]
    assert _most_at_once(intervals) == 2, intervals
    views = runner.client().list_sessions()
    assert sorted(v["name"] for v in views) == [f"pl-t{i:03d}" for i in range(6)]  # one session a trial


def test_a_rerun_reattaches_to_every_trial_in_flight(runner, monkeypatch):
    monkeypatch.setenv("SWEEP_FAKE_STEP_S", "0.1")
    sw = _setup(runner, "ra", trials=5, lo=1e-6, hi=1e-2, parallel=2, slots=1)
    # What a killed driver leaves behind: two trials asked, queued and RUNNING in the study.
    study = create_or_resume(sw, runner.ws)
    first: list[str] = []
    killed = _Driver(study, sw, runner.ws, QueueTrials(runner.ws), first.append)
    assert killed.launch() and killed.launch()
    killed.close()
    assert any("wait in the queue" in x for x in first), first  # parallel 2 > 1 slot: said once
    c = runner.client()
    assert sorted(v["state"] for v in c.list_sessions()) == ["queued", "running"]
    lines: list[str] = []
    info = run_sweep(sw, runner.ws, say=lines.append)
    assert [x.split(":")[0] for x in lines if ": resuming " in x] == ["trial 0", "trial 1"], lines
    counted = [t for t in info["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(counted) == 5 and len(info["trials"]) == 5, info
    assert sorted(v["name"] for v in c.list_sessions()) == [f"ra-t{i:03d}" for i in range(5)]
    assert len({t["run_id"] for t in info["trials"]}) == 5
