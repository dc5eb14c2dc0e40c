"""A 2-process session (DDP on gloo, 2 CPU ranks) under the Ray executor with a local Ray:
a placement group with one bundle per rank, one actor per rank. A live `set` reaches it and
is recorded once; killing rank 1's actor ends the group and the session resumes from its
checkpoint; its losses equal the same session run by the local elastic agent (replay
--check: identical rows); afterwards no rank process, rank actor or placement group is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from runner_helpers import alive, rows, wait_for
from test_ray import _ckpts, ray_runner  # noqa: F401  (the local-Ray runner fixture)

STEPS = 40


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)


def _ppid(pid: int) -> int:
    return int(next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("PPid:")).split()[1])


def _left_on_ray(address: str, prefix: str) -> dict:
    """The actors and live placement groups named ``prefix...``, asked of Ray by another driver."""
    code = ("import json, ray, sys\n"
            "ray.init(address=sys.argv[1], namespace='tuneterm', log_to_driver=False, logging_level='ERROR')\n"
            "a = [n for n in ray.util.list_named_actors() if n.startswith(sys.argv[2])]\n"
            "g = [r['name'] for r in ray.util.placement_group_table().values()\n"
            "     if r['name'].startswith(sys.argv[2]) and r['state'] != 'REMOVED']\n"
            "print(json.dumps({'actors': a, 'groups': g}))\n")
    out = subprocess.run([sys.executable, "-c", code, address, prefix], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a Ray head and two ranks of real training
def test_two_ranks_on_ray_take_a_set_survive_a_rank_kill_and_equal_the_local_run(ray_runner):  # noqa: F811
    r = ray_runner
    c = r.client()
    path = r.session("ddp", steps=STEPS)
    path.write_text(path.read_text() + "\n[distributed]\nprocesses = 2\n")
    s = c.add(path, check=False)
    run_dir = Path(s["run_dir"])
    wait_for(lambda: c.get(s["id"])["state"] == "running" and c.get(s["id"])["step"] >= 2, 240, "training")

    # One actor per rank, each the parent of its rank's process; rank 0's is the session's pid.
    ranks = {_rank_of(p): p for p in r.worker_pids(run_dir)}
    assert set(ranks) == {"0", "1"}, ranks
    actors = {k: _ppid(p) for k, p in ranks.items()}
    assert actors["0"] == c.get(s["id"])["pid"] and actors["0"] != actors["1"]
    assert "tuneterm.engine.rank" in Path(f"/proc/{ranks['1']}/cmdline").read_text()

    ack = c.control(s["id"], {"type": "set", "values": {"learning_rate": 5e-4}})
    assert ack["type"] == "ack", ack

    # Rank 1's actor killed past a checkpoint: rank 0 sees the group lost, the session resumes.
    wait_for(lambda: _ckpts(run_dir) and c.get(s["id"])["step"] >= max(7, ack["step"] + 2), 240, "a checkpoint")
    os.kill(actors["1"], signal.SIGKILL)
    wait_for(lambda: not alive(ranks["0"]) and not alive(ranks["1"]), 60, "both ranks to end")
    done = wait_for(lambda: (x := c.get(s["id"]))["state"] in ("done", "failed") and x, 400, "the end")
    assert done["state"] == "done" and done["attempts"] == 2, done
    resumed = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] > 0

    # One row per step; the edit recorded once; the same losses as the local elastic agent's
    # uninterrupted run of the same session and edit (replay --check wants every row identical).
    steps = [x["step"] for x in rows(run_dir) if "loss" in x]
    assert steps == list(range(1, STEPS + 1)), steps
    edits = tomllib.loads((run_dir / "session.toml").read_text()).get("edits", [])
    assert edits == [{"step": ack["step"], "set": {"learning_rate": 5e-4}}]
    rep = subprocess.run([sys.executable, "-m", "tuneterm", "replay", str(run_dir), "--check",
                          "--workspace", str(r.ws)], capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]

    # Nothing of the group is left: no rank process, no actor, no placement group.
    wait_for(lambda: not any(_rank_of(p) for p in r.worker_pids(run_dir)), 30, "no rank process")
    assert not any(alive(p) for p in (*ranks.values(), *actors.values()))
    left = _left_on_ray(c.status()["address"], "tt-")
    assert left == {"actors": [], "groups": []}, left


@pytest.mark.slow  # a Ray head and two ranks of real training
def test_a_restarted_daemon_follows_the_group_by_name_and_a_pause_leaves_nothing(ray_runner):  # noqa: F811
    """The rank actors and the placement group are detached: a daemon killed mid-run leaves
    the group training; the next one finds it by its names (the same attempt; control goes
    to rank 0's actor), and a pause (75) ends every rank, actor and the group."""
    r = ray_runner
    c = r.client()
    path = r.session("adopted", steps=STEPS)
    path.write_text(path.read_text() + "\n[distributed]\nprocesses = 2\n")
    s = c.add(path, check=False)
    run_dir = Path(s["run_dir"])
    wait_for(lambda: c.get(s["id"])["step"] >= 3, 240, "training")
    ranks = {_rank_of(p): p for p in r.worker_pids(run_dir)}
    assert set(ranks) == {"0", "1"}, ranks
    r.kill_daemon()
    assert all(alive(p) for p in ranks.values())
    c2 = r.client()  # a new daemon on the same local head
    ack = c2.control(s["id"], {"type": "set", "values": {"weight_decay": 0.0}})
    assert ack["type"] == "ack", ack
    row = c2.get(s["id"])
    assert row["attempts"] == 1 and row["pid"] == _ppid(ranks["0"]), row
    c2.pause(s["id"])
    p = wait_for(lambda: (x := c2.get(s["id"]))["state"] == "paused" and x, 120, "paused")
    assert p["step"] < STEPS
    wait_for(lambda: not any(alive(x) for x in ranks.values()), 30, "every rank to exit")
    left = _left_on_ray(c2.status()["address"], "tt-")
    assert left == {"actors": [], "groups": []}, left
    edits = tomllib.loads((run_dir / "session.toml").read_text()).get("edits", [])
    assert edits == [{"step": ack["step"], "set": {"weight_decay": 0.0}}]


def test_rank_variables_and_bundles_for_ranks_on_two_nodes():
    """torchrun's numbering when Ray spreads ranks over nodes (no Ray needed): LOCAL_RANK
    counts within a node in rank order, GROUP_RANK numbers nodes by their first rank, and
    every rank meets at rank 0's node; a rank asking for nothing still gets a bundle."""
    from tuneterm.runner.ray_group import bundles, rank_envs

    where = [{"node_id": n, "ip": ip, "port": 29500 + i}
             for i, (n, ip) in enumerate([("b", "10.0.0.2"), ("a", "10.0.0.1"), ("b", "10.0.0.2")])]
    got = [{k: e[k] for k in ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE")}
           for e in rank_envs(where)]
    assert got == [{"RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "2"},
                   {"RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2"},
                   {"RANK": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "2"}]
    assert {(e["WORLD_SIZE"], e["MASTER_ADDR"], e["MASTER_PORT"]) for e in rank_envs(where)} == {("3", "10.0.0.2", "29500")}
    assert not any(k.startswith("TORCHELASTIC") for e in rank_envs(where) for k in e)
    assert bundles(2, 1.0, 0.0, {"a100": 1.0}) == [{"CPU": 1.0, "a100": 1.0}] * 2
    assert bundles(2, 0.0, 0.0, {}) == [{"CPU": 0.01}] * 2
