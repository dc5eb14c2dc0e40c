"""Snapshots of the queue and session screens at 80x24 and 120x36 (FakeClient, fixed data:
no clocks, no timings, no cursor blink). Update with `pytest tests/tui --snapshot-update`."""

from __future__ import annotations

import pytest
from fake_client import FakeClient
from tui_helpers import wait_until
from textual.widgets import DataTable

from tuneterm.tui.app import make_app
from tuneterm.tui.queue_screen import QueueScreen
from tuneterm.tui.session_screen import SessionScreen

SIZES = [(80, 24), (120, 36)]


def app_on(tmp_path):
    return make_app(FakeClient(tmp_path / "ws"), poll_interval=0)


async def queue_ready(pilot):
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                     and app.screen.query_one("#queue", DataTable).row_count == 5, what="the queue")
    await pilot.pause()


async def session_ready(pilot, tab: int = 0):
    await queue_ready(pilot)
    await pilot.press("down", "enter")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionScreen)
                     and pilot.app.screen.view.step == 120 and pilot.app.screen.painted
                     and pilot.app.screen.stream._thread.is_alive() is False, what="the history")
    for _ in range(tab):
        await pilot.press("right_square_bracket")
    await pilot.pause()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_queue_screen(snap_compare, tmp_path, size):
    assert snap_compare(app_on(tmp_path), terminal_size=size, run_before=queue_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_session_screen(snap_compare, tmp_path, size):
    assert snap_compare(app_on(tmp_path), terminal_size=size, run_before=session_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_session_screen_layers(snap_compare, tmp_path, size):
    async def run_before(pilot):
        await session_ready(pilot, tab=1)

    assert snap_compare(app_on(tmp_path), terminal_size=size, run_before=run_before)
