"""The sweep view inside the main app: `w` on a trial's row opens its sweep, escape goes
back to the queue; with several sweeps and no trial selected, a choice; with none, a
message. The study is a real Optuna study in the workspace (optuna, no torch)."""

from __future__ import annotations

import pytest
from tui_helpers import aio, cell_texts, wait_until
from textual.widgets import DataTable, Static

from tuneterm.tui.app import make_app
from tuneterm.tui.dialogs import PickOne
from tuneterm.tui.queue_screen import QueueScreen
from tuneterm.tui.sweep_screen import SweepScreen, sweep_of

SIZE = (120, 36)
optuna = pytest.importorskip("optuna")


def _sweep(ws, name: str, values: list[float]) -> None:
    """A finished study with one COMPLETE trial per value, and the sweep's session folder."""
    from tuneterm.sweep.study import storage_url

    (ws / ".tuneterm").mkdir(exist_ok=True)
    (ws / "sessions" / "sweeps" / name).mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(study_name=name, storage=storage_url(ws), direction="minimize")
    st.set_user_attr("objective", "val_loss")
    lr = {"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    for i, v in enumerate(values):
        st.add_trial(optuna.trial.create_trial(params={"learning_rate": 10.0 ** -(i + 2)}, distributions=lr,
                                               value=v, user_attrs={"run_id": f"{name}-t{i:03d}-r"}))


async def _queue(pilot):
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, QueueScreen)
                     and pilot.app.screen.query_one("#queue", DataTable).row_count > 0, what="the queue")


@aio
async def test_w_on_a_trial_opens_its_sweep_and_escape_returns(fake):
    ws = fake.workspace
    _sweep(ws, "vw", [1.2, 0.9, 1.4])
    _sweep(ws, "other", [2.0])
    fake.sessions[2]["name"] = "vw-t001"  # the third row is a trial of the sweep vw
    assert sweep_of("vw-t001", ws) == "vw" and sweep_of("smoke-tiny", ws) is None
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=SIZE) as pilot:
        await _queue(pilot)
        await pilot.press("down", "down", "w")
        await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen)
                         and app.screen.query_one("#sweep-trials", DataTable).row_count == 3, what="the sweep")
        scr = app.screen
        assert [r[2] for r in cell_texts(scr.query_one("#sweep-trials", DataTable))] == ["1.2", "0.9", "1.4"]
        assert "best so far: trial 1" in str(scr.query_one("#sweep-best", Static).render())
        assert "sweep vw: minimize val_loss; 3 complete" in str(scr.query_one("#sweep-title", Static).render())
        await pilot.press("escape")
        await _queue(pilot)

        # Not on a trial and two sweeps: a choice, then that sweep.
        await pilot.press("up", "w")
        await wait_until(pilot, lambda: isinstance(app.screen, PickOne), what="the choice")
        assert app.screen.choices == ["other", "vw"]
        await pilot.press("enter")  # the first: other
        await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen)
                         and app.screen.query_one("#sweep-trials", DataTable).row_count == 1, what="other")
        assert "sweep other" in str(app.screen.query_one("#sweep-title", Static).render())


@aio
async def test_w_without_sweeps_says_how_to_start_one(fake):
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=SIZE) as pilot:
        await _queue(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: any("no sweeps in this workspace" in n.message
                                            for n in app._notifications), what="the message")
        assert isinstance(app.screen, QueueScreen)
