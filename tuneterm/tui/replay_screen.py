"""Replay: a finished run (or a session file) with its edit timeline; queue a replay and,
when it finishes, both curves and whether they match step for step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tuneterm.compare import edit_parts
from tuneterm.rundir import RunDir
from tuneterm.states import SessionState
from tuneterm.tui.chart import Line, LineChart
from tuneterm.tui.data import compare_metrics, fmt_num, is_finished, read_jsonl, read_toml
from tuneterm.tui.plain import PlainTable
from tuneterm.tui.series import MinMaxSeries

ORIGINAL, REPLAY = "#5fafff", "#ffaf5f"


def edit_text(e: dict) -> str:
    return ", ".join(p for p in edit_parts(e, fmt_num) if p != "stop")


def loss_series(rows: list[dict]) -> MinMaxSeries:
    s = MinMaxSeries()
    for r in rows:
        if r.get("kind") == "train" and isinstance(r.get("step"), int) and isinstance(r.get("loss"), (int, float)):
            s.add(r["step"], float(r["loss"]))
    return s


class ReplayScreen(Screen):
    BINDINGS = [
        Binding("escape,q", "back", "Back", id="replay.back"),
        Binding("r", "queue_replay", "Queue replay", id="replay.queue"),
        Binding("f", "pick_file", "Session file…", id="replay.pick_file"),
    ]
    HELP = ("Replay re-runs a session with its recorded edits at the same steps; with the "
            "same software and device the metrics must match step for step.")

    def __init__(self, session_id: Any = None) -> None:
        super().__init__()
        self.session_id = session_id
        self.source: Path | None = None  # the session file to queue
        self.original_rows: list[dict] = []
        self.replay_id: Any = None
        self.original = MinMaxSeries()
        self.replayed = MinMaxSeries()
        self.result: str = ""
        self._busy = False

    def compose(self) -> ComposeResult:
        yield Header(icon="≈")
        yield Static("", id="replay-what")
        table: DataTable = PlainTable(id="replay-edits", cursor_type="row")
        table.add_column("step", key="step", width=7)
        table.add_column("edit", key="edit")
        yield table
        yield LineChart("training loss", [Line(self.original, ORIGINAL, "original"),
                                          Line(self.replayed, REPLAY, "replay")], id="replay-chart")
        yield Static("press r to queue a replay", id="replay-result")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        s = self.app.session_by_id(self.session_id) if self.session_id is not None else None
        rd = self.app.run_dir_of(s) if s else None
        if rd is not None and RunDir(rd).session.exists():
            self._load(RunDir(rd).session, rd, s)
        else:
            self.query_one("#replay-what", Static).update(
                "No finished run selected: press f to pick a session file.")
        self.set_interval(1.0, self._watch)

    def _load(self, source: Path, run_dir: Path | None, s: dict | None) -> None:
        self.source = source
        data = read_toml(source)
        edits = [e for e in data.get("edits", []) or [] if isinstance(e, dict)]
        table = self.query_one("#replay-edits", DataTable)
        table.clear()
        for e in edits:
            table.add_row(Text(str(e.get("step", "")), justify="right"), edit_text(e))
        name = data.get("session", {}).get("name", source.stem)
        where = f"run {run_dir.name}" if run_dir else f"sessions/{source.name}"
        state = f" ({s.get('state')})" if s else ""
        self.query_one("#replay-what", Static).update(
            Text.assemble((str(name), "bold"), f" · {where}{state} · {len(edits)} recorded edits"))
        if run_dir is not None:
            self.app.run_in_thread("read metrics", lambda: read_jsonl(RunDir(run_dir).metrics),
                                   then=self._original_loaded)

    def _original_loaded(self, rows: list[dict]) -> None:
        self.original_rows = rows
        fresh = loss_series(rows)
        self.original.__init__()
        self.original.extend(zip(fresh.xs, fresh.ys))
        self.query_one(LineChart).update_data()

    def action_queue_replay(self) -> None:
        if self.source is None:
            self.notify("pick a run or a session file first", severity="warning")
            return
        # the run's own session file passed the pre-flight check when it was first queued
        path, check = str(self.source), self.source != RunDir(self.source.parent).session
        self.app.request("replay", lambda c: c.add(path, check=check), then=self._queued)

    def _queued(self, result: Any) -> None:
        if isinstance(result, dict):
            self.replay_id = result.get("id")
            self.query_one("#replay-result", Static).update(f"replay queued as session {self.replay_id}")
            self.app.poll()

    def _watch(self) -> None:
        if self.replay_id is None or self._busy:
            return
        s = self.app.session_by_id(self.replay_id)
        rd = self.app.run_dir_of(s) if s else None
        if rd is None:
            return
        self._busy = True
        state = s.get("state")
        self.app.run_in_thread("read replay", lambda: read_jsonl(RunDir(rd).metrics),
                               then=lambda rows: self._replay_rows(rows, state, s))

    def _replay_rows(self, rows: list[dict], state: str, s: dict) -> None:
        self._busy = False
        fresh = loss_series(rows)
        if len(fresh) != len(self.replayed):
            self.replayed.__init__()
            self.replayed.extend(zip(fresh.xs, fresh.ys))
            self.query_one(LineChart).update_data()
        box = self.query_one("#replay-result", Static)
        if not is_finished(state):
            # queued, running, paused, or interrupted (the runner resumes it): not ended yet,
            # so keep following it — comparing half a replay would report a false mismatch
            resumes = " (resumes from its checkpoint)" if state == SessionState.INTERRUPTED else ""
            box.update(f"replaying: {state}{resumes}, step {s.get('step') or 0}/{s.get('total_steps') or '?'}")
            return
        if state != SessionState.DONE:
            why = f": {s['error']}" if s.get("error") else ""
            box.update(Text(f"replay {state}{why}; not compared", style="bold red"))
            self.result = state
        elif not self.original_rows:
            box.update(Text(f"replay {state}; no original metrics to compare with", style="yellow"))
        else:
            cmp = compare_metrics(self.original_rows, rows)
            style = "bold green" if cmp.match else "bold red"
            box.update(Text(("✓ match: " if cmp.match else "✗ mismatch: ") + cmp.detail, style=style))
            self.result = "match" if cmp.match else "mismatch"
        self.replay_id = None  # it ended: done watching

    def action_pick_file(self) -> None:
        from tuneterm.tui.dialogs import PickSession

        def picked(path) -> None:
            if not isinstance(path, Path):
                return
            name = read_toml(path).get("session", {}).get("name")
            # the newest finished run of the same session is what a replay should match
            runs = [s for s in self.app.sessions if s.get("name") == name and s.get("state") == SessionState.DONE]
            s = runs[-1] if runs else None
            self.original.__init__()
            self.original_rows = []
            self._load(path, None, None)
            if s is not None and self.app.run_dir_of(s):
                rd = self.app.run_dir_of(s)
                self.app.run_in_thread("read metrics", lambda: read_jsonl(RunDir(rd).metrics),
                                       then=self._original_loaded)

        self.app.push_screen(PickSession(self.app.workspace, "Replay a session file"), picked)

    def action_back(self) -> None:
        self.app.pop_screen()

    def palette(self):
        yield "replay: Queue replay", "Queue this session again with its recorded edits", self.action_queue_replay
        yield "replay: Pick a session file", "Replay a session file from sessions/", self.action_pick_file
