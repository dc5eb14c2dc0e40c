"""Opening the session screen, the active tab's table has the focus: `e` on the Knobs tab
and `space` on the Layers tab work at once, with no Tab press first (README's promise)."""

from __future__ import annotations

from test_pilot import SIZE, app_for, open_session
from textual.widgets import DataTable
from tui_helpers import aio, wait_until

from tuneterm.tui.dialogs import EditValue


@aio
async def test_e_and_space_work_as_soon_as_the_session_opens(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        assert app.focused is screen.query_one("#knobs-table", DataTable)
        await pilot.press("e")  # the first key, nothing pressed before it
        await wait_until(pilot, lambda: isinstance(app.screen, EditValue), what="the knob editor")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="back on the session")
        await pilot.press("right_square_bracket")  # the Layers tab
        await wait_until(pilot, lambda: app.focused is screen.query_one("#layers-table", DataTable),
                         what="the layers table focused")
        await pilot.press("space")  # embeddings, unfrozen by the edit at step 60: freeze it
        await wait_until(pilot, lambda: any(c[0] == "control" for c in fake.calls), what="the control message")
        msg = [c for c in fake.calls if c[0] == "control"][-1][2]
        assert msg["type"] == "freeze" and msg["layers"] == ["embeddings"]


@aio
async def test_a_live_edit_is_answered_while_a_slow_queue_add_is_in_flight(fake):
    """The app has no lock of its own around the client: a `set` goes out and is answered
    while an `add` (whose pre-flight check takes long on the daemon) is still waiting."""
    import threading

    from textual.widgets import Input

    release, started = threading.Event(), threading.Event()
    add = fake.add

    def slow_add(path, **kw):
        started.set()
        release.wait(30)
        return add(path, **kw)

    fake.add = slow_add
    app = app_for(fake)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_session(pilot, 1)
            path = str(fake.workspace / "sessions" / "smoke-tiny.toml")
            app.request("queue", lambda c: c.add(path))
            await wait_until(pilot, started.is_set, what="the add in flight")
            await pilot.press("e")
            await wait_until(pilot, lambda: app.screen.query_one("#edit-input", Input), what="the dialog")
            app.screen.query_one("#edit-input", Input).value = "1e-5"
            await pilot.press("enter")
            await wait_until(pilot, lambda: "applied at step 120" in screen.query_one("#knobs").edit_status
                             .get("learning_rate", ("",))[0], what="the ack while the add waits")
            assert not release.is_set() and not any(c[0] == "add" for c in fake.calls)
            release.set()
            await wait_until(pilot, lambda: any(c[0] == "add" for c in fake.calls), what="the add")
    finally:
        release.set()
