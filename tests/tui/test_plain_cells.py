"""Text from a user's files (session names, paths, class labels) is shown as written in
every table, never read as Rich markup: "[/x]" would raise MarkupError and close the app,
"[bold]" would vanish and restyle the rest of the cell."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text
from tui_helpers import aio, wait_until
from textual.widgets import DataTable

from tuneterm.tui.app import make_app
from tuneterm.tui.confusion import render_matrix
from tuneterm.tui.queue_screen import QueueScreen

NAME = "a[/i] [bold]b"
DATA = "data/[red]x.csv"  # the queue shows the file name, "[red]x.csv"


@aio
async def test_queue_cells_with_brackets_are_shown_as_written(fake):
    fake.sessions[0].update(name=NAME, data=DATA)
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=(160, 36)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                         and app.screen.query_one("#queue", DataTable).row_count > 0, what="the queue")
        await pilot.pause()
        table = app.screen.query_one("#queue", DataTable)
        name, _, data = table.get_row_at(0)[:3]
        assert isinstance(name, Text) and name.plain == NAME and not name.spans
        assert isinstance(data, Text) and data.plain == "[red]x.csv" and not data.spans
        # a cell changed later (a rename through the queue) goes the same way
        table.update_cell_at((0, 0), "[/]")
        await pilot.pause()
        assert table.get_cell_at((0, 0)).plain == "[/]"
        assert app.is_running


def test_confusion_labels_with_brackets_render_as_written():
    data = {"labels": ["[/x]", "[bold]y"], "matrix": [[3, 1], [0, 4]]}
    console = Console(record=True, width=80)
    console.print(render_matrix(data))
    out = console.export_text()
    assert out.count("[/x]") == 2 and out.count("[bold]y") == 2  # a column and a row each
