"""A 2-process session (DDP on gloo) under a real daemon, driven from the TUI as a person
would: queued with `a`, shown as "x2" in the queue, its two ranks' health on the session
screen, a live learning-rate edit from the Knobs tab and a freeze from the Layers tab, both
applied once at their steps; then `replay --check` of the run is identical."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny_sessions import tiny_session_toml
from tui_helpers import aio, cell_texts, edit_learning_rate, freeze_layer0, queue_the_session_file, wait_until
from textual.widgets import DataTable

from tuneterm.tui.app import make_app
from tuneterm.tui.data import read_toml
from tuneterm.tui.ranks import RanksLine
from tuneterm.tui.session_screen import SessionScreen

pytestmark = pytest.mark.slow  # real workers on two ranks

STEPS = 100_000  # ended by a `stop` control, which the edit log records (the replay stops there too)


@aio
async def test_two_process_session_in_the_tui_shows_its_ranks_takes_set_and_freeze_and_replays(real, workspace):
    (workspace / "sessions" / "dist.toml").write_text(
        tiny_session_toml("dist", steps=STEPS, checkpoint_interval=20, keep_last=1) + "\n[distributed]\nprocesses = 2\n")
    app = make_app(real, workspace, poll_interval=0.3)
    async with app.run_test(size=(120, 36)) as pilot:
        await queue_the_session_file(pilot)
        await wait_until(pilot, lambda: app.sessions[0].get("processes") == 2, timeout=240,
                         what="both ranks' first heartbeats")
        queue = app.screen.query_one("#queue", DataTable)
        await wait_until(pilot, lambda: cell_texts(queue)[0][0] == "dist x2", what="x2 in the queue")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="the session screen")
        screen = app.screen
        ranks = screen.query_one(RanksLine)
        await wait_until(pilot, lambda: ranks.display and "rank 0 step" in ranks.text and "rank 1 step" in ranks.text,
                         timeout=60, what=f"both ranks on the session screen ({ranks.text!r})")
        assert ranks.text.startswith("processes 2 · rank 0 step ") and "stalled" not in ranks.text

        # the learning rate, live, from the Knobs tab
        lr_step = await edit_learning_rate(pilot, screen, "5e-4")

        # freeze layer.0 from the Layers tab
        await freeze_layer0(pilot, screen)

        ack = real.control(app.sessions[0]["id"], {"type": "stop"})
        assert ack["type"] == "ack", ack
        await wait_until(pilot, lambda: app.sessions[0]["state"] == "done", timeout=120, what="done")
        run_dir = app.run_dir_of(app.sessions[0])

    edits = read_toml(run_dir / "session.toml").get("edits", [])
    freeze_step = next(e["step"] for e in edits if e.get("freeze") == ["layer.0"])
    assert edits == [{"step": lr_step, "set": {"learning_rate": 5e-4}}, {"step": freeze_step, "freeze": ["layer.0"]},
                     {"step": ack["step"], "stop": True}]  # each recorded once, at the step it was applied
    r = subprocess.run([sys.executable, "-m", "tuneterm", "replay", str(run_dir), "--check", "--workspace",
                        str(workspace)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "identical" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
