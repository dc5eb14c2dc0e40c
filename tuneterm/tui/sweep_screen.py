"""The sweep view: a study's trials, the best so far and the objective over trials.

Opened by `tuneterm sweep show NAME --watch` (an app of its own) or from the queue of the
main app (`w`). It reads the study through ``tuneterm.sweep.study`` (Optuna's SQLite
storage in the workspace; no torch) in a thread every ``poll`` seconds, so it follows a
sweep that another process drives and never blocks the screen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable


from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tuneterm.tui.chart import Line, LineChart
from tuneterm.tui.plain import PlainTable
from tuneterm.tui.series import MinMaxSeries

VALUE, BEST = "#5fafff", "#87d75f"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class SweepScreen(Screen):
    BINDINGS = [
        Binding("r", "refresh", "Refresh", id="sweep.refresh"),
        Binding("i", "importances", "Importances", id="sweep.importances"),
        Binding("escape", "back", "Back", id="sweep.back"),
        Binding("q", "app.quit", "Quit", id="sweep.quit"),
    ]
    HELP = ("A sweep's trials (state, parameters, objective), the best so far and the "
            "objective over trials; it follows the sweep as it runs.")

    def __init__(self, load: Callable[[bool], dict], poll: float = 2.0) -> None:
        super().__init__(id="sweep-screen")
        self.load = load  # load(importances) -> describe_study's dict; called in a thread
        self.poll = poll
        self.info: dict = {}
        self.values = MinMaxSeries()
        self.best = MinMaxSeries()
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="sweep-title")
        yield Static("", id="sweep-best")
        yield LineChart("objective over trials", [Line(self.values, VALUE, "trial"), Line(self.best, BEST, "best")],
                        id="sweep-chart")
        yield PlainTable(id="sweep-trials", cursor_type="row", zebra_stripes=True)
        yield Static("", id="sweep-importances")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sweep-title", Static).update("reading the study…")
        self.action_refresh()
        if self.poll > 0:
            self.set_interval(self.poll, self.action_refresh)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # pushed over the queue: back to it
            self.app.pop_screen()

    def action_refresh(self) -> None:
        self.run_worker(lambda: self._load(False), thread=True, exclusive=True, group="sweep-refresh")

    def action_importances(self) -> None:
        self.query_one("#sweep-importances", Static).update("computing importances…")
        self.run_worker(lambda: self._load(True), thread=True, exclusive=True, group="sweep-importances")

    def _load(self, importances: bool) -> None:
        try:
            info = self.load(importances)
        except Exception as e:  # a removed sweep, a locked database: say so, keep the screen
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.app.call_from_thread(self.query_one("#sweep-title", Static).update, f"cannot read the sweep: {msg}")
            return
        self.app.call_from_thread(self._loaded, info, importances)

    def _loaded(self, info: dict, importances: bool) -> None:
        if not self.is_attached:
            return
        self.show(info)
        if importances:
            self._show_importances(info)

    def _show_importances(self, info: dict) -> None:
        imp = info.get("importances") or {}
        text = ("importances: " + "  ".join(f"{k} {v:.3f}" for k, v in imp.items())) if imp \
            else (info.get("importances_note") or "no importances")
        self.query_one("#sweep-importances", Static).update(text)

    def show(self, info: dict) -> None:
        self.info = info
        key = tuple((t["number"], t["state"], t["value"], t["steps"]) for t in info["trials"])
        if key == self._shown:
            return
        self._shown = key
        obj = info.get("objective") or "value"
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(info["counts"].items()))
        self.query_one("#sweep-title", Static).update(
            f"sweep {info['name']}: {info['direction']} {obj}; {counts or 'no trials yet'}")
        b = info.get("best")
        self.query_one("#sweep-best", Static).update(
            f"best so far: trial {b['number']}  {obj} {_fmt(b['value'])}  "
            + " ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items()) + f"  run {b['run_id']}"
            if b else "best so far: -")
        # The objective over trials: each complete trial's value and the running best.
        self.values.__init__()
        self.best.__init__()
        better = min if info["direction"] == "minimize" else max
        cur = None
        for t in info["trials"]:
            if t["state"] == "COMPLETE" and t["value"] is not None:
                cur = t["value"] if cur is None else better(cur, t["value"])
                self.values.add(t["number"], t["value"])
                self.best.add(t["number"], cur)
        self.query_one("#sweep-chart", LineChart).update_data()
        table = self.query_one("#sweep-trials", DataTable)
        names = sorted({k for t in info["trials"] for k in t["params"]})
        table.clear(columns=True)
        table.add_columns("trial", "state", obj, "steps", *names, "run")
        for t in info["trials"]:
            table.add_row(str(t["number"]), t["state"], _fmt(t["value"]), _fmt(t["steps"]),
                          *[_fmt(t["params"].get(k)) for k in names], t["run_id"] or "-")


TRIAL_NAME = re.compile(r"^(?P<sweep>.+)-t\d{3,}$")  # spec.Sweep.trial_name


def sweep_names(workspace: Path) -> list[str]:
    """Sweeps started in this workspace (each has a folder of trial sessions)."""
    d = workspace / "sessions" / "sweeps"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def sweep_of(session_name: str | None, workspace: Path) -> str | None:
    """The sweep a queued session is a trial of, if any."""
    m = TRIAL_NAME.match(session_name or "")
    return m.group("sweep") if m and m.group("sweep") in sweep_names(workspace) else None


def study_loader(workspace: Path, name: str) -> Callable[[bool], dict]:
    """load(importances) for SweepScreen; the study is opened on the first call (which
    imports optuna: do it off the UI thread)."""
    state: dict = {}

    def load(importances: bool) -> dict:
        from tuneterm.sweep.study import describe_study, open_study

        if "study" not in state:
            state["study"] = open_study(workspace, name)
        return describe_study(state["study"], importances=importances)

    return load


class SweepApp(App):
    TITLE = "tuneterm sweep"

    def __init__(self, load: Callable[[bool], dict], poll: float = 2.0) -> None:
        super().__init__()
        self._load, self._poll = load, poll

    def on_mount(self) -> None:
        self.push_screen(SweepScreen(self._load, self._poll))


def make_sweep_app(workspace: Path, name: str, poll: float = 2.0) -> SweepApp:
    from tuneterm.sweep.study import open_study

    open_study(workspace, name)  # a missing sweep is a one-line error before the app starts
    return SweepApp(study_loader(workspace, name), poll)
