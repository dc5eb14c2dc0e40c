"""The queue: every session with its status, progress, latest loss and best metric."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tuneterm.rundir import RunDir
from tuneterm.states import SessionState as S
from tuneterm.tui.compare_screen import with_marks
from tuneterm.tui.data import fmt_best, fmt_num, fmt_progress, short_source
from tuneterm.tui.plain import PlainTable

STATE_STYLE = {
    S.RUNNING: "bold green", S.QUEUED: "", S.PAUSED: "yellow", S.DONE: "blue",
    S.FAILED: "bold red", S.CANCELLED: "dim", S.INTERRUPTED: "magenta",
}
COLUMNS = (("name", "name"), ("model", "model"), ("data", "data"), ("state", "status"),
           ("progress", "progress"), ("loss", "loss"), ("best", "best"))
# column widths for narrow (80 columns) and wide terminals; the queue order is the row order
WIDTHS = {False: (12, 9, 8, 9, 13, 6, 9), True: (22, 12, 16, 11, 22, 8, 14)}
STATE_COL = 3


class QueueTable(PlainTable):
    BINDINGS = [
        Binding("enter", "select_cursor", "Open", id="queue.open"),
        Binding("j", "cursor_down", "Down", id="queue.down", show=False),
        Binding("k", "cursor_up", "Up", id="queue.up", show=False),
    ]


def short_best(best) -> str:
    return fmt_best(best).replace("val_accuracy", "acc").replace("val_loss", "loss").replace("val_f1", "f1")


def row_cells(s: dict, wide: bool = True) -> tuple:
    state = str(s.get("state", ""))
    n = s.get("processes")
    return (
        str(s.get("name", "")) + (f" x{n}" if isinstance(n, int) and n > 1 else ""),  # its process count
        short_source(s.get("model")),
        short_source(s.get("data")),
        state,
        fmt_progress(s, epoch=wide),
        fmt_num(s.get("loss"), 3),
        short_best(s.get("best_metric")),
    )


class QueueScreen(Screen):
    BINDINGS = [
        Binding("a", "add", "Add", id="queue.add"),
        Binding("n", "new", "New", id="queue.new"),
        Binding("p", "pause", "Pause", id="queue.pause"),
        Binding("r", "resume", "Resume", id="queue.resume"),
        Binding("x", "cancel", "Cancel", id="queue.cancel"),
        Binding("t", "retry", "Retry", id="queue.retry", show=False),
        Binding("K,shift+up", "move(-1)", "Up", id="queue.move_up", show=False),
        Binding("J,shift+down", "move(1)", "Down", id="queue.move_down", show=False),
        Binding("d", "duplicate", "Duplicate", id="queue.duplicate", show=False),
        Binding("y", "replay", "Replay", id="queue.replay", show=False),
        Binding("w", "sweeps", "Sweeps", id="queue.sweeps"),
        Binding("m", "mark", "Mark", id="queue.mark", show=False),
        Binding("c", "compare", "Compare", id="queue.compare", show=False),
        Binding("q", "app.quit", "Quit", id="queue.quit"),
    ]
    HELP = ("The queue, in order. Sessions run one after another; a running one keeps "
            "training when you close the app (q).")

    def __init__(self) -> None:
        super().__init__(id="queue-screen")
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}
        self.wide = False
        self._summary_text = ""
        self.marked: list[str] = []  # session ids marked for comparison (m), in marking order

    def compose(self) -> ComposeResult:
        yield Header(icon="≈")
        table = QueueTable(id="queue", cursor_type="row", zebra_stripes=True)
        self.wide = self.app.size.width >= 110
        widths = WIDTHS[self.wide]
        for (key, label), width in zip(COLUMNS, widths):
            table.add_column(label, key=key, width=width)
        yield table
        yield Static("", id="queue-summary")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sessions_changed(self.app.sessions)

    # -- data
    def sessions_changed(self, sessions: list[dict]) -> None:
        table = self.query_one("#queue", DataTable)
        order = [str(s.get("id")) for s in sessions]
        cells = with_marks({str(s.get("id")): row_cells(s, self.wide) for s in sessions}, self.marked)
        if order != self._order:
            current = self.selected_key()
            table.clear()
            for key in order:
                table.add_row(*self._styled(cells[key]), key=key)
            if current in order:
                table.move_cursor(row=order.index(current), animate=False)
        else:
            for key in order:
                old, new = self._cells.get(key), cells[key]
                if old == new:
                    continue
                styled = self._styled(new)
                for i, (col, _) in enumerate(COLUMNS):
                    if old is None or old[i] != new[i]:
                        table.update_cell(key, col, styled[i])
        self._order, self._cells = order, cells
        self._summary(sessions)

    @staticmethod
    def _styled(cells: tuple) -> list:
        out: list[Any] = list(cells)
        out[STATE_COL] = Text(cells[STATE_COL], style=STATE_STYLE.get(cells[STATE_COL], ""))
        return out

    def _summary(self, sessions: list[dict]) -> None:
        summary = self.query_one("#queue-summary", Static)
        if not sessions:
            self._summary_text = ""
            summary.update("No sessions yet: press [b]a[/] to queue one from sessions/, [b]n[/] for a new one.")
            return
        counts: dict[str, int] = {}
        for s in sessions:
            counts[s.get("state", "?")] = counts.get(s.get("state", "?"), 0) + 1
        order = (S.RUNNING, S.QUEUED, S.PAUSED, S.DONE, S.FAILED, S.CANCELLED, S.INTERRUPTED)
        parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
        text = f"{len(sessions)} sessions · " + " · ".join(parts)
        if text != self._summary_text:
            self._summary_text = text
            summary.update(text)

    def runner_down(self, reason: str) -> None:
        self._summary_text = ""
        self.query_one("#queue-summary", Static).update(Text(f"runner unreachable: {reason}", style="red"))

    def selected_key(self) -> str | None:
        table = self.query_one("#queue", DataTable)
        if not self._order or table.cursor_row is None or not (0 <= table.cursor_row < len(self._order)):
            return None
        return self._order[table.cursor_row]

    def selected(self) -> dict | None:
        key = self.selected_key()
        if key is None:
            return None
        for s in self.app.sessions:
            if str(s.get("id")) == key:
                return s
        return None

    def _need(self) -> dict | None:
        s = self.selected()
        if s is None:
            self.notify("no session selected", severity="warning")
        return s

    # -- actions
    @on(DataTable.RowSelected, "#queue")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        s = self._need()
        if s:
            from tuneterm.tui.session_screen import SessionScreen

            self.app.push_screen(SessionScreen(s["id"]))

    def _verb(self, verb: str) -> None:
        s = self._need()
        if s:
            name = s.get("name", s["id"])
            self.app.request(f"{verb} {name}", verb, s["id"],
                             then=lambda _r: (self.notify(f"{verb}: {name}"), self.app.poll()))

    def action_pause(self) -> None:
        self._verb("pause")

    def action_resume(self) -> None:
        self._verb("resume")

    def action_retry(self) -> None:
        self._verb("retry")

    def action_cancel(self) -> None:
        s = self._need()
        if not s:
            return
        from tuneterm.tui.dialogs import Confirm

        def done(ok: bool | None) -> None:
            if ok:
                self._verb("cancel")

        self.app.push_screen(Confirm(f"Cancel {s.get('name')}? A running session stops "
                                     "(its checkpoints stay)."), done)

    def action_move(self, by: int) -> None:
        s = self._need()
        if s:
            self.app.request(f"move {s.get('name')}", "move", s["id"], by=by, then=lambda _r: self.app.poll())

    def action_add(self) -> None:
        from tuneterm.tui.dialogs import PickSession

        def picked(path) -> None:
            if path == "new":
                self.action_new()
            elif path:
                self.queue_file(path)

        self.app.push_screen(PickSession(self.app.workspace), picked)

    def queue_file(self, path) -> None:
        self.app.request(f"add {path.name}", "add", str(path),
                         then=lambda r: (self.notify(f"queued {r.get('name', path.stem) if isinstance(r, dict) else path.stem}"),
                                         self.app.poll()))

    def action_new(self) -> None:
        from tuneterm.tui.new_session import NewSessionScreen

        self.app.push_screen(NewSessionScreen(), self._saved)

    def action_duplicate(self) -> None:
        s = self._need()
        if not s:
            return
        from tuneterm.tui.data import read_toml
        from tuneterm.tui.new_session import NewSessionScreen

        rd = self.app.run_dir_of(s)
        data = read_toml(RunDir(rd).session) if rd else {}
        if not data:
            self.notify("this session has no session.toml yet; starting from the template", severity="warning")
        data.pop("edits", None)
        self.app.push_screen(NewSessionScreen(data, duplicate_of=s.get("name")), self._saved)

    def _saved(self, result) -> None:
        if result and result[1]:  # (path, queue?)
            self.queue_file(result[0])

    def action_replay(self) -> None:
        s = self._need()
        if s:
            from tuneterm.tui.replay_screen import ReplayScreen

            self.app.push_screen(ReplayScreen(s["id"]))

    def action_mark(self) -> None:
        from tuneterm.tui.compare_screen import toggle_mark

        toggle_mark(self)

    def action_compare(self) -> None:
        from tuneterm.tui.compare_screen import open_compare

        open_compare(self)

    def action_sweeps(self) -> None:
        """The selected trial's sweep; else the workspace's one sweep, or a choice of them."""
        from tuneterm.tui.sweep_screen import sweep_names, sweep_of

        ws = self.app.workspace
        s = self.selected()
        name = sweep_of(s.get("name") if s else None, ws)
        if name:
            self.open_sweep(name)
            return
        names = sweep_names(ws)
        if not names:
            self.notify("no sweeps in this workspace: add a [sweep] table to a session and run "
                        "`tuneterm sweep FILE` (docs/sweep.md)", severity="warning")
        elif len(names) == 1:
            self.open_sweep(names[0])
        else:
            from tuneterm.tui.dialogs import PickOne

            self.app.push_screen(PickOne("Open a sweep", names), lambda n: n and self.open_sweep(n))

    def open_sweep(self, name: str) -> None:
        from tuneterm.tui.sweep_screen import SweepScreen, study_loader

        self.app.push_screen(SweepScreen(study_loader(self.app.workspace, name)))

    def palette(self):
        yield "queue: Add session", "Queue a session file from sessions/", self.action_add
        yield "queue: New session", "A new session file from a form", self.action_new
        yield "sweep: Open", "A sweep's trials, best so far and objective over trials", self.action_sweeps
        s = self.selected()
        if s:
            n = s.get("name")
            yield "run: Open", f"Open {n}", self.action_open
            yield "run: Pause", f"Pause {n}", self.action_pause
            yield "run: Resume", f"Resume {n}", self.action_resume
            yield "run: Cancel", f"Cancel {n}", self.action_cancel
            yield "run: Retry", f"Retry {n}", self.action_retry
            yield "queue: Move up", f"Move {n} up", lambda: self.action_move(-1)
            yield "queue: Move down", f"Move {n} down", lambda: self.action_move(1)
            yield "queue: Duplicate and edit", f"A new session from {n}", self.action_duplicate
            yield "run: Replay", f"Replay {n} with its edits", self.action_replay
