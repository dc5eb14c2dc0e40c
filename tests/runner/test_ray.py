"""The Ray executor with a local Ray that the daemon starts for the workspace (its files in
a temporary folder, $HOME pointed at one, usage reporting off): two sessions train through
actors, a live edit reaches one and lands in its edit log, and killing its actor leads to
a resume whose metrics equal an uninterrupted run's. Plus the [runner.ray] checks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from runner_helpers import alive, rows, strip_clock, wait_for

from tuneterm.errors import UserError
from tuneterm.runner.ray_executor import _pids_under, parse_ray_config
from tuneterm.runner.process import load_config

STEPS = 120


# -- the configuration (no Ray needed) --------------------------------------------------------


@pytest.mark.parametrize("table, fragment", [
    ('executor = "ray"\n[runner.ray]\naddress = "nowhere"', "address"),
    ('executor = "ray"\n[runner.ray]\ngpus_per_session = -1', "gpus_per_session"),
    ('executor = "ray"\n[runner.ray]\ncpus_per_session = "two"', "cpus_per_session"),
    ('executor = "ray"\n[runner.ray]\nresources = {disk = 0}', "resources"),
    ('executor = "ray"\n[runner.ray]\ntemp_dir = "relative/dir"', "temp_dir"),
    ('executor = "ray"\n[runner.ray]\ntemp_dir = "/tmp/a-folder-name-that-is-far-too-long-for-ray"', "temp_dir"),
    ('executor = "ray"\n[runner.ray]\nadress = "auto"', "adress"),
    ('executor = "kubernetes"', "executor"),
    ('executor = "local"\n[runner.ray]\naddress = "auto"', "runner.ray"),
])
def test_bad_ray_settings_are_one_line_errors(workspace, table, fragment):
    (workspace / ".tuneterm").mkdir()
    (workspace / ".tuneterm" / "config.toml").write_text("[runner]\n" + table + "\n")
    with pytest.raises(UserError) as e:
        load_config(workspace)
    msg = str(e.value)
    assert "\n" not in msg and fragment in msg and "config.toml" in msg


def test_ray_settings_defaults_and_executor_implied_by_the_table(workspace):
    (workspace / ".tuneterm").mkdir()
    (workspace / ".tuneterm" / "config.toml").write_text('[runner.ray]\naddress = "10.0.0.5:6379"\n')
    cfg = load_config(workspace)
    assert cfg["executor"] == "ray"
    r = cfg["ray"]
    assert (r.address, r.gpus_per_session, r.cpus_per_session, r.resources) == ("10.0.0.5:6379", 1.0, 1.0, {})
    assert parse_ray_config({}, "x").address == "local"


# -- a real local Ray --------------------------------------------------------------------------


@pytest.fixture
def ray_runner(runner, monkeypatch):
    """The runner fixture with [runner] executor = "ray", address = "local": the daemon
    starts a one-node Ray whose files stay in a short temporary folder; every process of
    it is killed afterwards."""
    pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ttr-", dir="/tmp")
    home = Path(temp) / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # Ray's ~/.ray and caches
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    cfg = runner.ws / ".tuneterm" / "config.toml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(f'[runner]\nexecutor = "ray"\nslots = 2\n\n[runner.ray]\naddress = "local"\n'
                   f'temp_dir = "{temp}/ray"\ngpus_per_session = 0\ncpus_per_session = 1\n')
    runner.ray_temp = f"{temp}/ray"
    yield runner
    runner.cleanup()
    for _ in range(50):
        pids = _pids_under(f"{temp}/ray")
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(alive(p) for p in pids), 10, "Ray's processes to die")
    shutil.rmtree(temp, ignore_errors=True)
    assert not (home / ".ray").exists() or home.is_relative_to(temp)


def _ckpts(run_dir: Path) -> list[int]:
    d = run_dir / "checkpoints"
    return sorted(int(p.name[5:]) for p in d.glob("step-*") if (p / "state.json").exists()) if d.is_dir() else []


@pytest.mark.slow
def test_two_sessions_through_ray_live_edit_and_actor_kill_resume(ray_runner, reference_run):
    r = ray_runner
    c = r.client()
    st = c.status()
    assert st["executor"] == "ray" and st["local_head"] and st["slots"] == 2, st
    assert _pids_under(r.ray_temp, head_only=True), "the daemon started no Ray head in temp_dir"
    out = subprocess.run([sys.executable, "-m", "tuneterm", "daemon", "status", "--workspace", str(r.ws)],
                         capture_output=True, text=True, timeout=60).stdout
    assert "executor ray at 127.0.0.1:" in out and "(local head)" in out and "per session (per rank of a multi-process one) 0 GPUs, 1 CPUs" in out, out

    edited = c.add(r.session("edited", steps=STEPS), check=False)
    killed = c.add(r.session("killed", steps=STEPS), check=False)
    for s in (edited, killed):
        wait_for(lambda s=s: c.get(s["id"])["state"] == "running" and c.get(s["id"])["step"] >= 3, 180,
                 f"{s['name']} to train")
    # Both at once, each in its own actor (a Ray worker process, not a child of the daemon).
    pids = {s["name"]: c.get(s["id"])["pid"] for s in (edited, killed)}
    assert len(set(pids.values())) == 2
    daemon = r.daemon_pid()
    maps = Path(f"/proc/{daemon}/maps").read_text()
    assert "libtorch" not in maps and "_ray" in maps  # the daemon is a Ray driver, without torch
    for pid in pids.values():
        assert alive(pid) and f"PPid:\t{daemon}\n" not in Path(f"/proc/{pid}/status").read_text()

    # A live edit through the socket -> daemon -> actor call -> the worker's stdin.
    ack = c.control(edited["id"], {"type": "set", "values": {"learning_rate": 5e-4}})
    assert ack["type"] == "ack", ack

    # Kill the other session's actor once it has a checkpoint and is past it.
    run_dir = Path(killed["run_dir"])
    wait_for(lambda: _ckpts(run_dir) and c.get(killed["id"])["step"] >= 7, 120, "a checkpoint")
    workers = r.worker_pids(run_dir)  # the engine's worker, a child of the actor
    assert len(workers) == 1 and workers[0] != pids["killed"]
    os.kill(pids["killed"], signal.SIGKILL)
    wait_for(lambda: not alive(workers[0]), 30, "the worker to die with its actor")
    wait_for(lambda: c.get(killed["id"])["attempts"] >= 2, 120, "a second actor")

    for s in (edited, killed):
        done = wait_for(lambda s=s: (x := c.get(s["id"]))["state"] in ("done", "failed") and x, 300,
                        f"{s['name']} to end")
        assert done["state"] == "done", done

    # The edit is in the edited run's log at the step it was applied.
    edits = tomllib.loads((Path(edited["run_dir"]) / "session.toml").read_text()).get("edits", [])
    assert edits == [{"step": ack["step"], "set": {"learning_rate": 5e-4}}]
    # The killed run resumed from its checkpoint and equals an uninterrupted run.
    assert strip_clock(rows(run_dir)) == reference_run(STEPS)
    resumed = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] > 0
    assert not alive(pids["killed"])

    # A clean stop takes the local head down with the daemon.
    c.shutdown()
    wait_for(lambda: not _pids_under(r.ray_temp), 60, "the local Ray head to stop")


@pytest.mark.slow
def test_daemon_kill9_finds_its_actors_again(ray_runner, reference_run):
    """The actors are detached: a daemon killed mid-run leaves them training, and the next
    daemon reuses the local head and follows them by name (no second attempt)."""
    r = ray_runner
    c = r.client()
    s = c.add(r.session("adopted", steps=STEPS), check=False)
    wait_for(lambda: c.get(s["id"])["step"] >= 5, 180, "training")
    actor_pid = c.get(s["id"])["pid"]
    r.kill_daemon()
    assert alive(actor_pid)
    c2 = r.client()  # starts a new daemon, which connects to the same Ray
    assert c2.status()["executor"] == "ray"
    ack = c2.control(s["id"], {"type": "set", "values": {"weight_decay": 0.0}})
    assert ack["type"] == "ack", ack  # the control channel works after the restart
    done = wait_for(lambda: (x := c2.get(s["id"]))["state"] in ("done", "failed") and x, 300, "the end")
    assert done["state"] == "done" and done["attempts"] == 1, done
    run_dir = Path(s["run_dir"])
    edits = tomllib.loads((run_dir / "session.toml").read_text()).get("edits", [])
    assert edits == [{"step": ack["step"], "set": {"weight_decay": 0.0}}]
    log = (r.ws / ".tuneterm" / "daemon.log").read_text()
    assert log.count("starting a local Ray head") == 1


def test_a_cpu_session_asks_for_no_gpu(tmp_path):
    """gpus_for reads the frozen session: device = "cpu" needs no GPU, anything else the
    configured gpus_per_session (no Ray needed: the method reads one file)."""
    from tuneterm.runner.ray_executor import RayConfig, RayExecutor

    ex = RayExecutor.__new__(RayExecutor)  # without connecting
    ex.cfg = RayConfig(gpus_per_session=2)
    for device, want in (('device = "cpu"', 0.0), ('device = "cuda"', 2.0), ("", 2.0)):
        (tmp_path / "session.toml").write_text(f"[session]\nname = \"x\"\n\n[runtime]\n{device}\n")
        assert ex.gpus_for(tmp_path) == want, device
    assert ex.gpus_for(tmp_path / "missing") == 2.0


def test_without_ray_installed_the_executor_is_a_one_line_error(tmp_path, monkeypatch):
    from tuneterm.runner.ray_executor import RayConfig, RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError) as e:
        RayExecutor(tmp_path, RayConfig())
    assert "pip install" in str(e.value) and "\n" not in str(e.value)
