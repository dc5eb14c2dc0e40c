"""Pilot tests against the in-memory FakeClient at 120x36."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_helpers import aio, cell_texts, wait_until
from textual.widgets import DataTable, Input

from tuneterm.tui.app import make_app
from tuneterm.tui.queue_screen import QueueScreen
from tuneterm.tui.session_screen import SessionScreen

SIZE = (120, 36)


def app_for(fake):
    return make_app(fake, poll_interval=0)


async def open_queue(pilot):
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                     and app.screen.query_one("#queue", DataTable).row_count == len(app.sessions) > 0,
                     what="the queue")


async def open_session(pilot, row: int):
    await open_queue(pilot)
    for _ in range(row):
        await pilot.press("down")
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionScreen)
                     and pilot.app.screen.view.step > 0 and pilot.app.screen.painted,
                     what="the session's history")
    return pilot.app.screen


@aio
async def test_queue_lists_sessions_and_verbs_reach_the_client(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        rows = cell_texts(app.screen.query_one("#queue", DataTable))
        assert [r[0] for r in rows] == ["tweets-minilm", "bbc-minilm", "smoke-tiny", "bbc-minilm-wd", "broken"]
        assert rows[1][3] == "running" and rows[1][4].startswith("120/150")
        await pilot.press("down", "p")
        await wait_until(pilot, lambda: ("pause", 2) in fake.calls, what="pause")
        await pilot.press("r")
        await wait_until(pilot, lambda: ("resume", 2) in fake.calls, what="resume")
        await pilot.press("down", "down", "down", "t")
        await wait_until(pilot, lambda: ("retry", 5) in fake.calls, what="retry")
        await pilot.press("x")  # cancel asks first
        await pilot.press("n")
        await pilot.pause()
        assert ("cancel", 5) not in fake.calls
        await pilot.press("x", "y")
        await wait_until(pilot, lambda: ("cancel", 5) in fake.calls, what="cancel")


@aio
async def test_move_keeps_the_cursor_on_the_moved_session(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        await pilot.press("j", "j", "k", "j", "K")
        await wait_until(pilot, lambda: app.sessions[1]["id"] == 3, what="move")
        assert ("move", 3, None, -1) in fake.calls
        await wait_until(pilot, lambda: app.screen.selected_key() == "3", what="cursor")
        await pilot.press("J")
        await wait_until(pilot, lambda: app.sessions[2]["id"] == 3, what="move down")


@aio
async def test_add_a_session_file(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("enter")  # the first file: sessions/bbc-minilm.toml
        await wait_until(pilot, lambda: any(c[0] == "add" for c in fake.calls), what="add")
        assert fake.calls[-1][1].endswith("sessions/bbc-minilm.toml")
        await wait_until(pilot, lambda: len(app.sessions) == 6, what="the new row")


@aio
async def test_session_screen_shows_history_knobs_layers_timeline(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        v = screen.view
        assert v.step == 120 and len(v.train_loss) == 120 and len(v.val_loss) == 12
        assert v.knobs["learning_rate"] == 2e-5  # the edit at step 40
        assert not any(x["frozen"] for x in v.layers)  # embeddings unfrozen at step 60
        kinds = {e.kind for e in v.timeline}
        assert {"edit", "checkpoint", "eval"} <= kinds
        assert screen.query_one("#guidance-banner").display  # validation loss rises at the end
        assert "Overfitting" in str(screen.query_one("#guidance").render())


@aio
async def test_edit_a_knob_checks_then_sends_and_shows_the_step(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        await pilot.press("tab")  # focus the knobs table
        screen.query_one("#knobs-table", DataTable).focus()
        await pilot.press("e")
        await wait_until(pilot, lambda: app.screen.query_one("#edit-input", Input), what="the dialog")
        inp = app.screen.query_one("#edit-input", Input)
        inp.value = "2.5"  # out of range: refused before anything is sent
        await pilot.press("enter")
        await pilot.pause()
        assert "learning_rate" in str(app.screen.query_one("#edit-problem").render())
        assert not any(c[0] == "control" for c in fake.calls)
        inp.value = "1e-5"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(c[0] == "control" for c in fake.calls), what="control")
        msg = [c for c in fake.calls if c[0] == "control"][-1][2]
        assert msg["type"] == "set" and msg["values"] == {"learning_rate": 1e-5}
        await wait_until(pilot, lambda: "applied at step 120" in screen.query_one("#knobs").edit_status
                         .get("learning_rate", ("",))[0], what="the ack")
        assert screen.view.knobs["learning_rate"] == 1e-5


@aio
async def test_a_rejected_edit_shows_the_reason(fake):
    fake.reject["dropout"] = "dropout cannot change on this model"
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        screen.query_one("#knobs-table", DataTable).focus()
        await pilot.press("down", "down", "down", "enter")  # dropout
        await wait_until(pilot, lambda: app.screen.query_one("#edit-input", Input), what="the dialog")
        app.screen.query_one("#edit-input", Input).value = "0.2"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "rejected" in screen.query_one("#knobs").edit_status
                         .get("dropout", ("",))[0], what="the reject")
        assert "cannot change" in screen.query_one("#knobs").edit_status["dropout"][0]


@aio
async def test_layer_toggles_freeze_below_and_unfreeze_all(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        await pilot.press("right_square_bracket")
        table = screen.query_one("#layers-table", DataTable)
        table.focus()
        await pilot.press("down", "down", "b")  # freeze embeddings, layer.0, layer.1
        await wait_until(pilot, lambda: sum(x["frozen"] for x in screen.view.layers) == 3, what="freeze below")
        msg = [c for c in fake.calls if c[0] == "control"][-1][2]
        assert msg["type"] == "freeze" and msg["layers"] == ["embeddings", "layer.0", "layer.1"]
        assert "trainable" in str(screen.query_one("#trainable").render())
        await pilot.press("space")  # layer.1 back to trainable
        await wait_until(pilot, lambda: not screen.view.layers[2]["frozen"], what="toggle")
        await pilot.press("u")
        await wait_until(pilot, lambda: not any(x["frozen"] for x in screen.view.layers), what="unfreeze all")
        assert [c[2]["layers"] for c in fake.calls if c[0] == "control"][-1] == ["embeddings", "layer.0"]


@aio
async def test_controls_on_a_run_that_is_not_running_are_refused_not_crashing(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 3)  # paused
        await pilot.press("right_square_bracket")
        screen.query_one("#layers-table", DataTable).focus()
        await pilot.press("space")
        await wait_until(pilot, lambda: any(c[0] == "control" for c in fake.calls), what="control")
        await wait_until(pilot, lambda: not screen.query_one("#layers").pending, what="reply")
        assert screen.view.layers[0]["frozen"] is True  # unchanged


@aio
async def test_help_and_palette(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        from tuneterm.tui.help_screen import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "queue: Add session" in titles and "run: Pause" in titles and "app: Help" in titles
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"layers: Freeze all below", "layers: Unfreeze all", "knobs: Edit learning_rate"} <= set(titles)


@aio
async def test_new_session_form_checks_and_saves(fake):
    from tuneterm.session.io import load_session
    from tuneterm.tui.new_session import NewSessionScreen

    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewSessionScreen), what="form")
        form = app.screen
        form.query_one("#f-hyperparameters-dropout", Input).value = "1.5"
        form.action_save(False)
        await pilot.pause()
        assert "dropout" in str(form.query_one("#form-problems").render())
        assert not (fake.workspace / "sessions" / "my-session.toml").exists()
        form.query_one("#f-hyperparameters-dropout", Input).value = "0.2"
        form.query_one("#f-freeze-layers", Input).value = "embeddings, layer.0"
        form.action_save(True)
        await wait_until(pilot, lambda: any(c[0] == "add" for c in fake.calls), what="queued")
        s = load_session(fake.workspace / "sessions" / "my-session.toml")
        assert s.hyperparameters.dropout == 0.2 and s.freeze.layers == ["embeddings", "layer.0"]
        assert s.model.source == "builtin:minilm-l6"


@aio
async def test_duplicate_then_edit_starts_from_the_run(fake):
    from tuneterm.tui.new_session import NewSessionScreen

    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        await pilot.press("down", "d")
        await wait_until(pilot, lambda: isinstance(app.screen, NewSessionScreen), what="form")
        assert app.screen.query_one("#f-session-name", Input).value == "bbc-minilm-2"
        assert app.screen.query_one("#f-hyperparameters-weight_decay", Input).value == "0.01"
        app.screen.action_save(False)
        await wait_until(pilot, lambda: (fake.workspace / "sessions" / "bbc-minilm-2.toml").exists(), what="saved")


@aio
async def test_replay_view_reports_a_match(fake):
    from tuneterm.tui.replay_screen import ReplayScreen

    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        await pilot.press("y")  # the finished tweets-minilm run
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen) and len(app.screen.original) > 0,
                         what="replay screen")
        screen = app.screen
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.replay_id is not None, what="queued")
        # the fake runner "runs" the replay: same metrics in a new run directory
        orig = Path(fake.sessions[0]["run_dir"])
        new = fake.workspace / "runs" / "replay"
        new.mkdir()
        (new / "metrics.jsonl").write_text((orig / "metrics.jsonl").read_text())
        s = fake.sessions[-1]
        s.update(state="done", run_dir=str(new), step=150, total_steps=150)
        app.poll()
        await wait_until(pilot, lambda: screen.result == "match", timeout=10, what="the comparison")
        assert "match" in str(screen.query_one("#replay-result").render())


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
@aio
async def test_runner_down_is_a_notification_not_a_crash(tmp_path, size):
    class Down:
        workspace = tmp_path

        def list_sessions(self):
            from tuneterm.runner.paths import RunnerUnavailable

            raise RunnerUnavailable("lost the runner daemon")

    app = make_app(Down(), poll_interval=0)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.runner_error is not None, what="the error")
        assert "unreachable" in str(app.screen.query_one("#queue-summary").render())


@aio
async def test_a_stream_that_ends_while_the_run_goes_on_is_followed_again(fake):
    subscribe, calls = fake.subscribe, []

    def flaky(ref, *, history=True):
        calls.append(ref)
        return iter([]) if len(calls) == 1 else subscribe(ref, history=history)

    fake.subscribe = flaky
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        assert len(calls) == 2 and screen.view.step == 120 and len(screen.view.train_loss) == 120
