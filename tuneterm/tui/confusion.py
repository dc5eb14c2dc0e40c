"""The confusion matrix of a finished classification run on its validation set, as a
heat map: rows are the true labels, columns the predictions, each cell shaded by its
share of the row (a picture read faster than a table of numbers).

The matrix comes from RUN_DIR/confusion.json; when a run has none yet it is computed
from the best checkpoint by ``python -m tuneterm.engine.predict confusion`` in a
subprocess, in a thread: the TUI itself never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tuneterm.rundir import RunDir
from tuneterm.states import RunEnd, SessionState
COMPUTE_TIMEOUT_S = 600.0


def read_confusion(run_dir: Path) -> dict | None:
    try:
        data = json.loads(RunDir(run_dir).confusion.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("labels"), list) and isinstance(data.get("matrix"), list)
    return data if ok else None


def load_or_compute(run_dir: Path, workspace: Path) -> dict:
    """The run's confusion.json, computing it first when missing (blocking: call in a thread)."""
    data = read_confusion(run_dir)
    if data is not None:
        return data
    res = subprocess.run([sys.executable, "-m", "tuneterm.engine.predict", "confusion", str(run_dir), str(workspace)],
                         capture_output=True, text=True, timeout=COMPUTE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    data = read_confusion(run_dir)
    if data is None:
        lines = (res.stderr or res.stdout or "no output").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {res.returncode}")
    return data


def shade(share: float) -> str:
    """A background from dark to the accent colour as ``share`` goes 0 -> 1."""
    r0, g0, b0 = 0x1c, 0x1c, 0x1c
    r1, g1, b1 = 0x00, 0x87, 0xd7
    s = max(0.0, min(1.0, share))
    return f"#{int(r0 + (r1 - r0) * s):02x}{int(g0 + (g1 - g0) * s):02x}{int(b0 + (b1 - b0) * s):02x}"


def render_matrix(data: dict, width: int = 9) -> Table:
    labels = [str(x) for x in data["labels"]]
    matrix = data["matrix"]
    short = [lab if len(lab) <= width else lab[: width - 1] + "…" for lab in labels]
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("true \\ predicted", style="bold", no_wrap=True)
    for lab in short:  # Text, not str: a label such as "[x]" is data, not markup
        table.add_column(Text(lab), justify="right", no_wrap=True)
    for lab, row in zip(short, matrix):
        total = sum(row) or 1
        cells = []
        for j, n in enumerate(row):
            share = n / total
            style = f"{'bold ' if share >= 0.5 else ''}white on {shade(share)}"
            cells.append(Text(f"{n:>{max(3, len(short[j]))}}", style=style))
        table.add_row(Text(lab), *cells)
    return table


class ConfusionMatrix(Static):
    """Shows "computing…", then the matrix with its checkpoint and accuracy, or the error."""

    shown = None  # the renderable last shown (tests read it back)

    def _show(self, renderable) -> None:
        self.shown = renderable
        self.update(renderable)

    def show_loading(self) -> None:
        self._show(Text("computing the validation confusion matrix from the best checkpoint…", style="dim"))

    def show(self, data: dict) -> None:
        n = sum(sum(r) for r in data["matrix"])
        acc = data.get("accuracy")
        head = Text(f"validation set, {n} examples, {data.get('checkpoint', '')} (step {data.get('step', '?')})"
                    + (f", accuracy {acc:.3f}" if isinstance(acc, float) else ""), style="dim")
        from rich.console import Group

        self._show(Group(head, Text(""), render_matrix(data)))

    def show_error(self, message: str) -> None:
        self._show(Text(f"no confusion matrix: {message}", style="red"))


# finished with a model worth a matrix: the queue's done, or (on the session screen, from the
# run's end row) a run that stopped early
TRAINED_STATES = (SessionState.DONE, RunEnd.EARLY_STOPPED)


def add_tab(screen, s: dict) -> None:
    """On the session screen of a finished classification run — opened after it ended, or
    open while it ends — a Confusion tab, filled from confusion.json (computed in a
    subprocess when missing). Once per screen."""
    from tuneterm.session.schema import ModelSpec
    from tuneterm.session.tasks import TASK_TABLE
    from tuneterm.tui.data import read_toml

    rd = screen.run_dir
    if rd is None or s.get("state") not in TRAINED_STATES or getattr(screen, "_confusion_tab", False):
        return
    screen._confusion_tab = True  # decided once: later stream rows do not re-read session.toml
    spec = TASK_TABLE.get((read_toml(RunDir(rd).session).get("model") or {}).get("task") or ModelSpec().task)
    if spec is None or not spec.confusion:
        return
    from textual.widgets import TabbedContent, TabPane

    widget = ConfusionMatrix(id="confusion")
    screen.query_one(TabbedContent).add_pane(TabPane("Confusion", widget, id="tab-confusion"))
    widget.show_loading()
    ws = screen.app.workspace

    def done(result) -> None:
        if isinstance(result, dict):
            widget.show(result)
        else:
            widget.show_error(str(result))

    def work():
        try:
            return load_or_compute(rd, ws)
        except Exception as e:  # noqa: BLE001 - shown in the tab, never a crash
            return str(e) or type(e).__name__

    screen.app.run_in_thread("confusion", work, then=done)
