"""The TUI sweep view (`tuneterm sweep show NAME --watch`) on a study filled by hand: the
trials table, the best so far, the objective over trials, importances on `i`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from tuneterm.tui.chart import LineChart
from tuneterm.tui.sweep_screen import SweepScreen, make_sweep_app

sys.path.insert(0, str(Path(__file__).parent.parent / "tui"))
from tui_helpers import cell_texts, wait_until  # noqa: E402


def _study(ws: Path):
    import optuna

    from tuneterm.sweep.study import storage_url

    (ws / ".tuneterm").mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(study_name="vw", storage=storage_url(ws), direction="minimize",
                             sampler=optuna.samplers.RandomSampler(seed=0))
    st.set_user_attr("objective", "val_loss")
    d = {"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
         "batch_size": optuna.distributions.CategoricalDistribution([8, 16])}
    for i in range(5):
        t = st.ask(d)
        t.set_user_attr("run_id", f"vw-t{i:03d}-x")
        t.report(2.0 - i * 0.1, 3)
        if i == 2:
            st.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            st.tell(t, 1.5 - 0.1 * i if i != 3 else 1.9)
    return st


def test_sweep_view_shows_trials_best_and_the_chart(workspace):
    _study(workspace)
    app = make_sweep_app(workspace, "vw", poll=0)

    async def run():
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen)
                             and app.screen.query_one("#sweep-trials", DataTable).row_count == 5, what="the trials")
            scr = app.screen
            rows = cell_texts(scr.query_one("#sweep-trials", DataTable))
            assert [r[1] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]
            assert "best so far: trial 4" in str(scr.query_one("#sweep-best", Static).render())
            chart = scr.query_one("#sweep-chart", LineChart)
            assert len(chart.lines[0].series) == 4 and list(chart.lines[1].series.ys) == pytest.approx([1.5, 1.4, 1.4, 1.1])
            await pilot.press("i")
            await wait_until(pilot, lambda: "importances: " in str(scr.query_one("#sweep-importances", Static).render()),
                             what="the importances")

    asyncio.run(run())
