"""A 2-process session (DDP on gloo) under the daemon: live `set` and `freeze` from the
client are applied by every rank at one step and recorded once; pause ends every rank
and resume finishes it; `replay --check` of the run is identical."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from runner_helpers import wait_for

pytestmark = pytest.mark.slow  # real workers on two ranks

STEPS = 60


def test_two_process_session_takes_live_edits_pauses_and_replays(runner):
    c = runner.client()
    path = runner.session("dist", steps=STEPS)
    path.write_text(path.read_text() + "\n[distributed]\nprocesses = 2\n")
    s = c.add(path)
    wait_for(lambda: c.get(s["id"])["step"] >= 3, 240, "training")
    a1 = c.control(s["id"], {"type": "set", "values": {"learning_rate": 5e-4}})
    a2 = c.control(s["id"], {"type": "freeze", "layers": ["embeddings"]})
    assert a1["type"] == "ack" and a2["type"] == "ack", (a1, a2)
    c.pause(s["id"])
    p = wait_for(lambda: (x := c.get(s["id"]))["state"] == "paused" and x, 120, "paused")
    assert p["step"] < STEPS
    wait_for(lambda: not runner.worker_pids(p["run_dir"]), 30, "every rank to exit")
    c.resume(s["id"])
    done = wait_for(lambda: (x := c.get(s["id"]))["state"] in ("done", "failed") and x, 300, "the end")
    assert done["state"] == "done", done
    run_dir = Path(s["run_dir"])
    edits = tomllib.loads((run_dir / "session.toml").read_text()).get("edits", [])
    assert edits == [{"step": a1["step"], "set": {"learning_rate": 5e-4}}, {"step": a2["step"], "freeze": ["embeddings"]}]
    r = subprocess.run([sys.executable, "-m", "tuneterm", "replay", str(run_dir), "--check",
                        "--workspace", str(runner.ws)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
