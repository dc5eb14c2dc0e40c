"""Pilot tests against a real runner daemon training a tiny model (CPU, torch kernels):
queue a session and watch it move; edit the learning rate and freeze a layer and find both,
with their steps, in the run's edit log; pause and resume; replay and see a match."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_helpers import aio, edit_learning_rate, freeze_layer0, queue_the_session_file, wait_until
from textual.widgets import DataTable
from tiny_sessions import tiny_session_toml

from tuneterm.tui.app import make_app
from tuneterm.tui.data import read_toml
from tuneterm.tui.session_screen import SessionScreen

pytestmark = pytest.mark.slow

# More steps than any machine trains during the test: the edits, the pause and the resume
# always land mid-run (300 steps once ended before the freeze on a quiet machine, at ~6 ms
# a step). The run is ended by a `stop` control, which the edit log records, so the replay
# stops at the same step.
STEPS = 100_000



def edits_of(run_dir: Path) -> list[dict]:
    return read_toml(run_dir / "session.toml").get("edits", []) or []


@aio
async def test_queue_watch_edit_freeze_pause_resume_and_replay(real, workspace):
    (workspace / "sessions" / "tiny.toml").write_text(
        tiny_session_toml("tiny", steps=STEPS, checkpoint_interval=10, keep_last=2))
    app = make_app(real, workspace, poll_interval=0.3)
    async with app.run_test(size=(120, 36)) as pilot:
        # queue it from sessions/ as a person would: a, then the file
        await queue_the_session_file(pilot)
        await wait_until(pilot, lambda: (app.sessions[0].get("step") or 0) > 0, timeout=120,
                         what="progress in the queue")
        first = app.sessions[0]["step"]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="the session screen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.view.step > first and len(screen.view.train_loss) > 0,
                         timeout=60, what="live steps on the session screen")
        run_dir = app.run_dir_of(app.sessions[0])
        assert run_dir is not None and screen.view.layers  # layers.json was read

        # the learning rate, live: checked, sent, acknowledged with its step
        lr_step = await edit_learning_rate(pilot, screen, "5e-4")
        await wait_until(pilot, lambda: {"step": lr_step, "set": {"learning_rate": 5e-4}} in edits_of(run_dir),
                         timeout=30, what="the edit in session.toml")

        # freeze layer.0 from the layers tab
        await freeze_layer0(pilot, screen)
        await wait_until(pilot, lambda: any(e.get("freeze") == ["layer.0"] for e in edits_of(run_dir)),
                         timeout=30, what="the freeze in session.toml")
        freeze_step = next(e["step"] for e in edits_of(run_dir) if e.get("freeze") == ["layer.0"])
        assert freeze_step >= lr_step

        # pause, then resume
        await pilot.press("p")
        try:
            await wait_until(pilot, lambda: app.sessions[0]["state"] == "paused", timeout=60, what="paused")
        except AssertionError:
            raise AssertionError(f"not paused: {app.sessions[0]}") from None
        paused_at = app.sessions[0]["step"]
        await pilot.press("r")
        await wait_until(pilot, lambda: app.sessions[0]["state"] == "running"
                         and app.sessions[0]["step"] > paused_at, timeout=90, what="resumed and moving")
        ack = real.control(app.sessions[0]["id"], {"type": "stop"})
        assert ack["type"] == "ack", ack
        await wait_until(pilot, lambda: app.sessions[0]["state"] == "done", timeout=120, what="done")
        assert {"step": ack["step"], "stop": True} in edits_of(run_dir)

        # replay: the run's session file with its edit log, queued again; metrics must match
        await pilot.press("y")
        from tuneterm.tui.replay_screen import ReplayScreen

        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen) and len(app.screen.original) > 0,
                         what="the replay screen")
        replay = app.screen
        assert replay.query_one("#replay-edits", DataTable).row_count == 3  # lr, freeze, stop
        await pilot.press("r")
        await wait_until(pilot, lambda: replay.result, timeout=150, what="the replay to finish")
        assert replay.result == "match", str(replay.query_one("#replay-result").render())
