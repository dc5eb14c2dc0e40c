"""Runs side by side: their training and validation curves overlaid in distinct colours,
each run's edits marked on its curves, and the table of `tuneterm compare` (session
differences, edit logs, best and final metrics). Opened from the queue: `m` marks runs,
`c` compares the marked ones. The run directories are read in a thread (no torch)."""

from __future__ import annotations

from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.strip import Strip
from textual.widgets import DataTable, Footer, Header, Static

from tuneterm.tui.chart import GUTTER, Line, LineChart, rasterize
from tuneterm.tui.plain import PlainTable
from tuneterm.tui.series import MinMaxSeries

PALETTE = ("#5fafff", "#ffaf5f", "#87d787", "#d787d7", "#ff5f87", "#d7d75f", "#5fd7d7", "#afafaf")
MARK = "◆"
MARKED = "● "


class MarkedChart(LineChart):
    """A LineChart that also draws a marker on line ``i`` at each of ``marks[i]``'s steps."""

    def __init__(self, title: str, lines: list[Line], marks: list[list[int]], *, id: str | None = None) -> None:
        super().__init__(title, lines, id=id)
        self.marks = marks

    def _build(self) -> list[Strip]:
        strips = super()._build()
        w, h = self.size.width, self.size.height
        present = [ln for ln in self.lines if len(ln.series)]
        plot_w = w - GUTTER
        if not present or plot_w <= 0 or h <= 0 or getattr(self, "_marked_key", None) == self._cache_key:
            return strips
        _, _, lo, hi = rasterize(self.lines, plot_w, h)  # the y-range the curves were drawn with
        x0 = min(ln.series.xs[0] for ln in present)
        x1 = max(ln.series.xs[-1] for ln in present)
        span, yspan = (x1 - x0) or 1.0, (hi - lo) or 1.0
        base = self.rich_style
        for li, steps in enumerate(self.marks):
            series = self.lines[li].series if li < len(self.lines) else None
            if series is None or not len(series):
                continue
            style = base + Style(color=self.lines[li].color, bold=True)
            for step in steps:
                y = _value_at(series, step)
                if y is None:
                    continue
                cx = min(plot_w - 1, int((step - x0) / span * (plot_w * 2 - 1)) // 2)
                cy = min(h - 1, max(0, int(round((hi - y) / yspan * (h * 4 - 1))) // 4))
                left, _, right = strips[cy].divide([GUTTER + cx, GUTTER + cx + 1, w])
                strips[cy] = Strip.join([left, Strip([Segment(MARK, style)], 1), right])
        self._marked_key = self._cache_key
        return strips


def _value_at(series: MinMaxSeries, step: float) -> float | None:
    """The series' value at the last point at or before ``step`` (else its first point)."""
    from bisect import bisect_right

    if not len(series):
        return None
    i = bisect_right(series.xs, step) - 1
    return series.ys[max(i, 0)]


def load(run_dirs: list[Path]) -> dict:
    """Everything the screen shows, read from the run directories (runs in a thread)."""
    from tuneterm.compare import compare_runs, table_rows
    from tuneterm.rundir import RunDir, read_jsonl

    cmp = compare_runs(run_dirs)
    curves = []
    for d in run_dirs:
        train, val = MinMaxSeries(), MinMaxSeries()
        for r in read_jsonl(RunDir(d).metrics):
            if r.get("kind") == "train" and isinstance(r.get("loss"), (int, float)):
                train.add(r["step"], r["loss"])
            elif r.get("kind") == "eval" and isinstance(r.get("val_loss"), (int, float)):
                val.add(r["step"], r["val_loss"])
        curves.append((train, val))
    return {"cmp": cmp, "rows": table_rows(cmp), "curves": curves}


class CompareScreen(Screen):
    CSS_PATH = "results.tcss"
    BINDINGS = [Binding("escape,q", "back", "Back", id="compare.back")]
    HELP = ("Runs side by side: training and validation loss overlaid (one colour per run, "
            f"{MARK} marks an edit), then the session keys that differ, the edit logs and the metrics.")

    def __init__(self, run_dirs: list[Path], names: list[str] | None = None) -> None:
        super().__init__()
        self.run_dirs = [Path(d) for d in run_dirs]
        self.names = names or [d.name for d in self.run_dirs]
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="≈")
        yield Static("reading the runs…", id="compare-legend")
        with Horizontal(id="compare-charts"):
            yield MarkedChart("training loss", [], [], id="compare-train")
            yield MarkedChart("validation loss", [], [], id="compare-val")
        yield PlainTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = f"compare {len(self.run_dirs)} runs"
        dirs = list(self.run_dirs)
        self.app.run_in_thread("compare", lambda: load(dirs), then=self._loaded)

    def _loaded(self, data: dict) -> None:
        runs = data["cmp"]["runs"]
        colours = [PALETTE[i % len(PALETTE)] for i in range(len(runs))]
        marks = [[e["step"] for e in r["edits"] if isinstance(e.get("step"), int)] for r in runs]
        for chart_id, k in (("#compare-train", 0), ("#compare-val", 1)):
            chart = self.query_one(chart_id, MarkedChart)
            chart.lines = [Line(c[k], colour, name) for c, colour, name in zip(data["curves"], colours, self.names)]
            chart.marks = marks
            chart._cache_key = None
            chart.update_data()
            chart.border_subtitle = ""
        legend = Text()
        for i, (name, colour) in enumerate(zip(self.names, colours)):
            if i:
                legend.append("   ")
            legend.append("━━ ", style=f"bold {colour}")
            legend.append(name)
        legend.append(f"   {MARK} edit", style="dim")
        self.query_one("#compare-legend", Static).update(legend)
        table = self.query_one("#compare-table", DataTable)
        table.clear(columns=True)
        table.add_column("", key="label")
        for i, (name, colour) in enumerate(zip(self.names, colours)):
            table.add_column(Text(name, style=f"bold {colour}"), key=f"run{i}")
        for label, cells in data["rows"][1:]:  # the first row names the runs: the header does
            if not cells:
                table.add_row(Text(label.lstrip("# "), style="bold underline"), *[""] * len(runs))
            else:
                table.add_row(label, *cells)
        self.loaded = True

    def action_back(self) -> None:
        self.app.pop_screen()


# ---------------------------------------------------------------------------- the queue's marks

def with_marks(cells: dict, marked: list) -> dict:
    """The queue's row cells with a mark before the names of the marked sessions."""
    return {k: ((MARKED + v[0],) + tuple(v[1:]) if k in marked else v) for k, v in cells.items()}


def toggle_mark(screen) -> None:
    """`m` in the queue: mark or unmark the selected session for comparison."""
    key = screen.selected_key()
    if key is None:
        screen.notify("no session selected", severity="warning")
        return
    if key in screen.marked:
        screen.marked.remove(key)
    else:
        screen.marked.append(key)
    screen.sessions_changed(screen.app.sessions)
    n = len(screen.marked)
    screen.notify(f"{n} marked: press c to compare" if n >= 2 else f"{n} marked (mark another with m)")


def open_compare(screen) -> None:
    """`c` in the queue: compare the marked sessions (at least two with a run directory)."""
    by_key = {str(s.get("id")): s for s in screen.app.sessions}
    chosen = [by_key[k] for k in screen.marked if k in by_key and screen.app.run_dir_of(by_key[k]) is not None]
    if len(chosen) < 2:
        screen.notify("mark two or more sessions that have run (m), then press c", severity="warning")
        return
    screen.app.push_screen(CompareScreen([screen.app.run_dir_of(s) for s in chosen],
                                         [str(s.get("name", s.get("id"))) for s in chosen]))
