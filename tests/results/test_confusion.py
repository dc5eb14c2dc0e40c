"""A finished classification run's session screen shows its validation confusion matrix:
read from confusion.json, or computed from the best checkpoint in a subprocess."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tui"))

from fake_client import FakeClient  # noqa: E402
from textual.widgets import DataTable, TabbedContent  # noqa: E402
from tui_helpers import aio, wait_until  # noqa: E402

from tuneterm.tui.app import make_app  # noqa: E402
from tuneterm.tui.confusion import ConfusionMatrix, render_matrix  # noqa: E402
from tuneterm.tui.queue_screen import QueueScreen  # noqa: E402
from tuneterm.tui.session_screen import SessionScreen  # noqa: E402


def _text(widget) -> str:
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(widget.shown or "")
    return console.export_text()


async def _open(pilot, row: int):
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen)
                     and app.screen.query_one("#queue", DataTable).row_count == len(app.sessions), what="the queue")
    await pilot.press(*(["down"] * row), "enter")
    await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="the session")
    return app.screen


@aio
async def test_a_done_run_shows_its_confusion_matrix_and_a_running_one_does_not(tmp_path):
    fake = FakeClient(tmp_path / "ws")
    done_dir = Path(fake.sessions[0]["run_dir"])
    (done_dir / "confusion.json").write_text(json.dumps(
        {"labels": ["negative", "neutral", "positive"], "matrix": [[50, 7, 3], [9, 31, 10], [2, 6, 62]],
         "checkpoint": "step-00000150", "step": 150, "accuracy": 0.79}))
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open(pilot, 0)
        await wait_until(pilot, lambda: "62" in _text(screen.query_one(ConfusionMatrix)), what="the matrix")
        text = _text(screen.query_one(ConfusionMatrix))
        assert "step-00000150" in text and "accuracy 0.790" in text and "180 examples" in text
        lines = [ln for ln in text.splitlines() if ln.strip().startswith(("negative", "neutral", "positive"))]
        assert [ln.split()[1:] for ln in lines] == [["50", "7", "3"], ["9", "31", "10"], ["2", "6", "62"]]
        await pilot.press("left_square_bracket")  # `[` from Knobs goes round to the last tab
        await wait_until(pilot, lambda: screen.query_one(TabbedContent).active == "tab-confusion",
                         what="the Confusion tab through the tab keys")
        await pilot.press("right_square_bracket")  # and `]` round to the first
        await wait_until(pilot, lambda: screen.query_one(TabbedContent).active == "tab-knobs", what="Knobs again")
        await pilot.press("escape")
        screen = await _open(pilot, 1)  # bbc-minilm is still running: no such tab
        await pilot.pause()
        assert not screen.query("#tab-confusion")


@aio
async def test_a_run_that_ends_while_its_screen_is_open_gets_the_tab(tmp_path):
    fake = FakeClient(tmp_path / "ws", live=True)
    running = fake.sessions[1]  # bbc-minilm, running
    (Path(running["run_dir"]) / "confusion.json").write_text(json.dumps(
        {"labels": ["business", "sport"], "matrix": [[40, 2], [1, 37]], "checkpoint": "step-00000120",
         "step": 120, "accuracy": 0.9625}))
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open(pilot, 1)
        await pilot.pause()
        assert not screen.query("#tab-confusion")
        fake.pushed.put({"type": "event", "data": {"kind": "end", "step": 120, "state": "early_stopped",
                                                   "reason": "val_loss did not improve"}})
        await wait_until(pilot, lambda: screen.query("#tab-confusion"), what="the Confusion tab")
        await wait_until(pilot, lambda: "37" in _text(screen.query_one(ConfusionMatrix)), what="the matrix")
        assert "accuracy 0.963" in _text(screen.query_one(ConfusionMatrix))
        fake.pushed.put({"type": "state", "state": "early_stopped"})  # later rows add no second tab
        await pilot.pause(0.3)
        assert len(screen.query("#tab-confusion")) == 1
    fake.close()


@aio
async def test_computed_from_the_best_checkpoint_when_missing(run_a, results_ws):
    from tuneterm.engine.predict import load_run, validation_confusion

    (run_a / "confusion.json").unlink(missing_ok=True)
    session = {"id": 1, "run_id": run_a.name, "name": "tiny-a", "model": "builtin:tiny-bert", "data": "data/train.csv",
               "state": "done", "position": 1, "step": 12, "total_steps": 12, "epoch": 2.0, "loss": None,
               "best_metric": None, "eta_s": None, "run_dir": str(run_a), "created": "", "attempts": 1, "error": None}
    app = make_app(FakeClient(results_ws, sessions=[session]), poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open(pilot, 0)
        await wait_until(pilot, lambda: "true \\ predicted" in _text(screen.query_one(ConfusionMatrix)),
                         timeout=240, what="the computed matrix")
    written = json.loads((run_a / "confusion.json").read_text())
    expected = validation_confusion(load_run(run_a, results_ws, "best"))
    assert written["matrix"] == expected["matrix"] and written["labels"] == ["astronomy", "cooking", "football"]
    assert sum(map(sum, written["matrix"])) == 18


def test_render_matrix_shades_by_row_share():
    table = render_matrix({"labels": ["a", "b"], "matrix": [[9, 1], [0, 10]]})
    assert table.row_count == 2 and len(table.columns) == 3
