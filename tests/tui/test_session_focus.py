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
