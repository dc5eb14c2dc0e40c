"""The TUI's compare screen: mark two runs in the queue (m), press c — both curves overlaid
in distinct colours with a legend, edits marked, the differences shown; and a snapshot."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tui"))

from fake_client import FakeClient  # noqa: E402
from textual.widgets import DataTable, Static  # noqa: E402
from tui_helpers import aio, wait_until  # noqa: E402

from tuneterm.tui.app import make_app  # noqa: E402
from tuneterm.tui.compare_screen import MARK, MARKED, CompareScreen, MarkedChart  # noqa: E402
from tuneterm.tui.queue_screen import QueueScreen  # noqa: E402


async def _compare_two(pilot):
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                     and app.screen.query_one("#queue", DataTable).row_count == 5, what="the queue")
    await pilot.press("m", "down", "m", "c")
    await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded, what="the compare")
    app.clear_notifications()  # the "marked" toasts time out: not part of the picture
    await pilot.pause()
    await pilot.pause()


@aio
async def test_mark_two_runs_and_compare(tmp_path):
    app = make_app(FakeClient(tmp_path / "ws"), poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                         and app.screen.query_one("#queue", DataTable).row_count == 5, what="the queue")
        await pilot.press("c")  # nothing marked: a warning, no screen
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("m", "down", "m")
        queue = app.screen
        table = queue.query_one("#queue", DataTable)
        assert str(table.get_cell("1", "name")).startswith(MARKED + "tweets-minilm")
        assert str(table.get_cell("2", "name")).startswith(MARKED + "bbc-minilm")
        assert not str(table.get_cell("3", "name")).startswith(MARKED)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded, what="compare")
        screen = app.screen
        assert [d.name for d in screen.run_dirs] == [s["run_id"] for s in app.sessions[:2]]
        for chart_id, n_points in (("#compare-train", (150, 120)), ("#compare-val", (15, 12))):
            chart = screen.query_one(chart_id, MarkedChart)
            assert [len(ln.series) for ln in chart.lines] == list(n_points)
            assert len({ln.color for ln in chart.lines}) == 2  # distinct colours
            assert chart.marks == [[40, 60], [40, 60]]  # each run's edits
            drawn = "".join(seg.text for strip in chart._build() for seg in strip)
            assert drawn.count(MARK) >= 2
            colours = {str(seg.style.color.name) if seg.style and seg.style.color else None
                       for strip in chart._build() for seg in strip if seg.text.strip(" │")}
            assert {ln.color for ln in chart.lines} <= colours  # both curves are on the chart
        legend = str(screen.query_one("#compare-legend", Static).render())
        assert "tweets-minilm" in legend and "bbc-minilm" in legend and MARK in legend
        t = screen.query_one("#compare-table", DataTable)
        rows = {str(t.get_row_at(i)[0]): [str(c) for c in t.get_row_at(i)[1:]] for i in range(t.row_count)}
        assert rows["data.source"] == ["builtin:tweet-sentiment", "builtin:bbc-news"]
        assert "hyperparameters.learning_rate" not in rows  # equal keys are not shown
        assert rows["edit 1"] == ["step 40: learning_rate=2e-05"] * 2
        assert rows["steps"] == ["150", "120"]
        assert rows["state"] == ["done", "running"]
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("m")  # unmark the second
        assert not str(table.get_cell("2", "name")).startswith(MARKED)


def test_compare_screen_snapshot(snap_compare, tmp_path):
    app = make_app(FakeClient(tmp_path / "ws"), poll_interval=0)
    assert snap_compare(app, terminal_size=(120, 36), run_before=_compare_two)
