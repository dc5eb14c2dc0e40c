"""`?`: the keys of the screen underneath, and what the screens are for."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

ABOUT = (
    "Screens: the queue (enter opens a session) · the session (charts, knobs, layers, "
    "timeline, log, guidance; a multi-process session's ranks under its header) · replay (y) "
    "· new session (n).\n"
    "Live edits apply at the next optimizer step; the knobs tab shows \"applied at step N\" "
    "or why the run refused. Closing the app (q) never stops a run.\n"
    "ctrl+p opens the command palette (every action, \"group: Verb\")."
)


def key_table(screen: Screen) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    seen = set()
    bindings = []
    for node in [screen.focused, screen, screen.app]:
        if node is None:
            continue
        for b in getattr(node, "BINDINGS", []):
            if isinstance(b, Binding) and b.description and b.action not in seen:
                seen.add(b.action)
                bindings.append(b)
    for b in bindings:
        keys = " ".join(k.strip().replace("question_mark", "?") for k in b.key.split(","))
        table.add_row(keys, b.description)
    table.add_row("ctrl+p", "command palette")
    return table


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, under: Screen) -> None:
        super().__init__(classes="dialog")
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box", id="help-box"):
            title = getattr(self.under, "HELP", "") or ""
            yield Static(Text("Help", style="bold"))
            if title:
                yield Static(title)
            yield Static(key_table(self.under))
            yield Static(ABOUT, classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
