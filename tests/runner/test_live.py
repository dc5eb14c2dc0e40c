"""Live control through the socket with the real engine on a tiny BERT: edits land in the
run's edit log with their steps and replay bit-identically; pause + resume equals an
uninterrupted run; a session whose worker crashes every time fails after K tries and the
queue moves on; the pre-flight check refuses a broken session at enqueue time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from runner_helpers import rows, strip_clock, wait_for

pytestmark = pytest.mark.slow  # real workers: torch start-up and training, tens of seconds

from tuneterm.errors import UserError

STEPS = 120  # long enough that a kill or pause lands mid-run on a fast machine


def test_live_lr_edit_and_freeze_are_logged_and_replay_identically(runner):
    c = runner.client()
    s = c.add(runner.session("live", steps=STEPS))  # with the pre-flight check (model, data)
    wait_for(lambda: c.get(s["id"])["step"] >= 3, 120, "training")
    a1 = c.control(s["id"], {"type": "set", "values": {"learning_rate": 5e-4}})
    a2 = c.control(s["id"], {"type": "freeze", "layers": ["embeddings"]})
    assert a1["type"] == "ack" and a2["type"] == "ack", (a1, a2)
    bad = c.control(s["id"], {"type": "freeze", "layers": ["no-such-layer"]})
    assert bad["type"] == "reject" and bad["reason"]
    done = wait_for(lambda: (x := c.get(s["id"]))["state"] in ("done", "failed") and x, 180, "the end")
    assert done["state"] == "done", done
    run_dir = Path(s["run_dir"])
    edits = tomllib.loads((run_dir / "session.toml").read_text()).get("edits", [])
    assert {"step": a1["step"], "set": {"learning_rate": 5e-4}} in edits
    assert {"step": a2["step"], "freeze": ["embeddings"]} in edits
    assert len(edits) == 2
    r = subprocess.run([sys.executable, "-m", "tuneterm", "replay", str(run_dir), "--check",
                        "--workspace", str(runner.ws)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_pause_then_resume_equals_uninterrupted(runner, reference_run):
    c = runner.client()
    s = c.add(runner.session("pr", steps=STEPS), check=False)
    wait_for(lambda: c.get(s["id"])["step"] >= 4, 120, "training")
    c.pause(s["id"])
    p = wait_for(lambda: (x := c.get(s["id"]))["state"] == "paused" and x, 60, "paused")
    assert 4 <= p["step"] < STEPS and not runner.worker_pids(p["run_dir"])  # memory released
    c.resume(s["id"])
    done = wait_for(lambda: (x := c.get(s["id"]))["state"] in ("done", "failed") and x, 180, "the end")
    assert done["state"] == "done", done
    assert strip_clock(rows(Path(s["run_dir"]))) == reference_run(STEPS)


def test_session_crashing_every_time_fails_after_k_tries_and_queue_moves_on(runner):
    c = runner.client()
    doomed = c.add(runner.session("doomed", steps=STEPS), check=False)
    nxt = c.add(runner.session("next", steps=5), check=False)
    killed: set[int] = set()
    while True:  # kill every worker of `doomed` as soon as it appears
        cur = wait_for(lambda: (x := c.get(doomed["id"]))["state"] == "failed" and x
                       or (x["pid"] and x["pid"] not in killed and x), 60, "a worker or the failure")
        if cur["state"] == "failed":
            break
        killed.add(cur["pid"])
        try:
            os.kill(cur["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert len(killed) == 3 and cur["attempts"] == 3  # K = 3 by default
    assert "crashed 3 times in a row" in cur["error"] and "SIGKILL" in cur["error"]
    done = wait_for(lambda: (x := c.get(nxt["id"]))["state"] in ("done", "failed") and x, 120, "the next session")
    assert done["state"] == "done"


def test_preflight_refuses_broken_sessions(runner):
    runner.use_fake_worker(slots=0)  # the check is the real engine's whatever the worker
    c = runner.client()
    bad = runner.ws / "sessions" / "bad.toml"
    bad.write_text(runner.session("bad").read_text().replace('max_length = 24', 'max_length = "long"'))
    with pytest.raises(UserError, match="max_length"):
        c.add(bad)
    missing = runner.ws / "sessions" / "missing.toml"
    missing.write_text(runner.session("missing").read_text().replace("builtin:bbc-news", "data/none.csv"))
    with pytest.raises(UserError, match="none.csv"):
        c.add(missing)
    assert c.list_sessions() == []
    assert not any((runner.ws / "runs").iterdir())
    good = c.add(runner.session("good"), smoke=True)  # one training step before queueing
    assert good["state"] == "queued" and (Path(good["run_dir"]) / "session.toml").exists()


def test_preflight_error_is_the_real_reason_not_a_library_warning(runner):
    """`queue add --smoke` of a LoRA session (the engine raises a FutureWarning on the way)
    whose freezing leaves nothing to train: the error line names freeze.layers."""
    runner.use_fake_worker(slots=0)
    c = runner.client()
    s = runner.session("frozen")
    s.write_text(s.read_text() + '\n[lora]\nenabled = true\n\n[freeze]\nlayers = ["layer.0", "layer.1", "head"]\n')
    with pytest.raises(UserError) as e:
        c.add(s, smoke=True)
    assert "freeze.layers" in str(e.value) and "Warning" not in str(e.value), str(e.value)
    assert str(e.value).startswith(str(s)) and "\n" not in str(e.value)
    assert c.list_sessions() == []


def test_a_crashed_check_reports_its_own_line():
    from tuneterm.runner.daemon import check_failure

    warned = b"/lib/x.py:3: FutureWarning: old\n  warnings.warn(\n"
    assert check_failure(b"", warned + b"tuneterm: error: no such workspace\n", 2) == "no such workspace"
    assert check_failure(b"", warned + b"Traceback (most recent call last):\nKeyError: 'k'\n", 1) == "KeyError: 'k'"
    assert check_failure(b"", b"", -9) == "the check exited with -9"
