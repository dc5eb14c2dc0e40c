"""Per-rank health: the heartbeat files each rank writes (engine/heartbeat.py), read back
whatever state they are in (rundir.read_rank_beats), and the stall rule (runner/health.py)."""

from __future__ import annotations

import json
import os
import socket
import time
from types import SimpleNamespace

from tuneterm.engine import heartbeat
from tuneterm.rundir import RunDir, read_rank_beats
from tuneterm.runner import health as H

NOW = 1_800_000_000.0


def beat(rank: int, step: int, age: float, median: float = 0.4, world: int = 2) -> dict:
    return {"rank": rank, "world": world, "pid": 1, "host": "elsewhere", "step": step, "seconds": median,
            "median_s": median, "time": NOW - age}


def healths(beats, **kw) -> list[str]:
    return [r["health"] for r in H.judge(beats, now=NOW, **{"running": True, **kw})]


def test_a_rank_whose_heartbeat_is_older_than_the_limit_is_stalled():
    assert healths([beat(0, 17, 1.0), beat(1, 17, 29.0)]) == ["ok", "ok"]  # under the 30 s floor
    assert healths([beat(0, 17, 1.0), beat(1, 17, 31.0)]) == ["ok", "stalled"]
    # slow steps: 10 x the median step time, not the floor
    assert healths([beat(0, 3, 1.0, median=5.0), beat(1, 3, 45.0, median=5.0)]) == ["ok", "ok"]
    assert healths([beat(0, 3, 1.0, median=5.0), beat(1, 3, 51.0, median=5.0)]) == ["ok", "stalled"]
    assert H.stall_limit_s(None) == H.STALL_FLOOR_S


def test_steps_apart_alone_is_not_a_stall():
    # beats are written at most twice a second: a fresh beat some steps back is a live rank
    assert healths([beat(0, 40, 0.1, median=0.03), beat(1, 25, 0.5, median=0.03)]) == ["ok", "ok"]


def test_only_a_running_session_is_judged_and_a_previous_attempts_beat_is_starting():
    old = [beat(0, 17, 300.0), beat(1, 17, 300.0)]
    assert healths(old, running=False) == ["ok", "ok"]  # paused, done: the last known steps
    assert healths(old, since=NOW - 5) == ["starting", "starting"]  # resumed: not beaten yet
    gone = H.judge([{**beat(0, 17, 1.0), "host": socket.gethostname(), "pid": _dead_pid()}], running=True, now=NOW)
    assert gone[0]["health"] == "starting"  # a rank of this host whose process is gone


def test_the_line_the_cli_and_tui_print():
    ranks = H.judge([beat(0, 17, 1.0, median=0.41), {**beat(1, 17, 42.0), "seconds": 0.43}], running=True, now=NOW)
    assert H.health_line(2, ranks) == "processes 2 · rank 0 step 17 0.41 s · rank 1 stalled 42 s at step 17"
    ok = H.judge([beat(0, 17, 1.0, median=0.41), beat(1, 17, 1.0, median=0.43)], running=True, now=NOW)
    assert H.health_line(2, ok) == "processes 2 · rank 0 step 17 0.41 s · rank 1 step 17 0.43 s"
    assert H.health_line(None, []) == "" and H.health_line(1, []) == ""


def test_queue_show_prints_the_ranks_line(tmp_path, monkeypatch, capsys):
    from argparse import Namespace

    from tuneterm.cli import runner_verbs

    ranks = H.judge([beat(0, 17, 1.0, median=0.41), {**beat(1, 17, 42.0), "seconds": 0.43}], running=True, now=NOW)
    view = {"id": 3, "run_id": "dist-x", "name": "dist", "state": "running", "step": 17, "total_steps": 60,
            "loss": 0.5, "best_metric": None, "eta_s": 20, "run_dir": str(tmp_path), "attempts": 1, "crashes": 0,
            "error": None, "want": None, "processes": 2, "ranks": ranks}
    monkeypatch.setattr(runner_verbs, "_view", lambda args: view)
    assert runner_verbs.cmd_queue_show(Namespace(json=False, ref="3")) == 0
    out = capsys.readouterr().out
    assert "step      17/60" in out and f"run dir   {tmp_path}" in out
    assert out.splitlines()[-1] == "processes 2 · rank 0 step 17 0.41 s · rank 1 stalled 42 s at step 17"
    # before any rank's first step: the count from the run's session.toml
    RunDir(tmp_path).session.write_text("[distributed]\nprocesses = 2\n")
    view.update(processes=None, ranks=[])
    runner_verbs.cmd_queue_show(Namespace(json=False, ref="3"))
    assert capsys.readouterr().out.splitlines()[-1] == "processes 2 · no step yet"
    RunDir(tmp_path).session.write_text("[distributed]\nprocesses = 1\n")  # one process: no line
    runner_verbs.cmd_queue_show(Namespace(json=False, ref="3"))
    assert "processes" not in capsys.readouterr().out


def test_half_written_missing_and_garbled_heartbeats_are_left_out(tmp_path):
    rd = RunDir(tmp_path)
    assert read_rank_beats(tmp_path) == [] and H.run_health(tmp_path, running=True) == (None, [])
    rd.heartbeats.mkdir()
    rd.rank_beat(0).write_text(json.dumps(beat(0, 5, 0.0)))
    rd.rank_beat(1).write_text(json.dumps(beat(1, 5, 0.0))[:30])  # torn
    rd.rank_beat(2).write_text("")
    rd.rank_beat(3).write_text('["not", "an", "object"]')
    rd.rank_beat(4).write_text(json.dumps({**beat(4, 5, 0.0), "step": "five"}))
    (rd.heartbeats / ".rank-5.json.tmp").write_text("{")
    (rd.heartbeats / "rank-6.json").mkdir()  # not even a file
    assert [b["rank"] for b in read_rank_beats(tmp_path)] == [0]
    processes, ranks = H.run_health(tmp_path, running=True, now=NOW)
    assert processes == 2 and [r["rank"] for r in ranks] == [0]


def test_each_rank_writes_its_beat_and_one_process_writes_none(tmp_path):
    def trainer(rank: int, world: int, step: int):
        return SimpleNamespace(run_dir=tmp_path, strategy=SimpleNamespace(rank=rank, world=world),
                               state=SimpleNamespace(step=step, total_steps=4))

    rd = RunDir(tmp_path)
    rd.heartbeats.mkdir()
    rd.rank_beat(3).write_text(json.dumps(beat(3, 9, 0.0, world=4)))  # an earlier attempt on 4 ranks
    t0, t1 = trainer(0, 2, 1), trainer(1, 2, 1)
    for step, secs in ((1, 0.5), (2, 0.1), (3, 0.2)):
        t0.state.step = t1.state.step = step
        heartbeat.beat(t0, secs)
        heartbeat.beat(t1, secs + 0.01)
    beats = read_rank_beats(tmp_path)  # the first step's: the next ones came sooner than EVERY_S
    assert [(b["rank"], b["world"], b["step"], b["pid"]) for b in beats] == [(0, 2, 1, os.getpid()), (1, 2, 1, os.getpid())]
    t0.state.step = 4  # the last planned step is always written
    heartbeat.beat(t0, 0.3)
    (b0, _) = read_rank_beats(tmp_path)
    assert (b0["step"], b0["seconds"], b0["median_s"]) == (4, 0.3, 0.3) and abs(b0["time"] - time.time()) < 60
    assert sorted(os.listdir(rd.heartbeats)) == ["rank-0.json", "rank-1.json"]  # rank 3's gone, no temporary left
    heartbeat.beat(trainer(0, 1, 4), 0.1)  # resumed on one process: no ranks to show
    assert not rd.heartbeats.exists()


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
