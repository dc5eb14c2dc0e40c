"""The Samples tab of a causal-LM session: each prompt, its reference, the output at the
latest evaluation beside the one before (Pilot test on a FakeClient workspace, snapshot)."""

from __future__ import annotations

import json

import pytest
from fake_client import FakeClient
from rich.console import Console
from test_snapshots import session_ready
from textual.widgets import TabbedContent
from tui_helpers import aio, wait_until

from tuneterm.tui.app import make_app
from tuneterm.tui.samples import latest_two, read_samples, render

PROMPTS = [("Write a short headline for this news article:\n\nThe Bank of England raised rates again.",
            "Bank raises interest rates"),
           ("Write a short headline for this news article:\n\nA striker scored twice on his debut.",
            "Debut double for striker")]
OUTPUTS = {10: ["The Bank of England", "A striker scored twice on his debut"],
           20: ["Bank of England raises rates", "Striker scores twice on debut"],
           30: ["Bank raises interest rates", "Striker scores twice on debut"]}


def _lm_run(ws):
    """The FakeClient's running bbc-minilm run, made a causal-LM run with samples."""
    fake = FakeClient(ws)
    rd = next(ws.glob("runs/bbc-minilm-2026*"))
    toml = (rd / "session.toml").read_text()
    (rd / "session.toml").write_text(toml.replace('source = "builtin:minilm-l6"',
                                                  'source = "builtin:smollm2-135m"\ntask = "causal-lm"'))
    metrics = (rd / "metrics.jsonl").read_text()  # a causal-LM run's evaluations: token accuracy
    (rd / "metrics.jsonl").write_text(metrics.replace('"val_accuracy"', '"val_token_accuracy"'))
    rows = [{"step": step, "prompt": p, "reference": r, "output": o}
            for step, outs in OUTPUTS.items() for (p, r), o in zip(PROMPTS, outs)]
    (rd / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "pro')
    return fake, rd


def _text(renderable, width=100) -> str:
    console = Console(width=width, record=True)
    console.print(renderable)
    return " ".join(console.export_text().split())  # wrapped cells read as one line


def test_latest_two_pairs_each_prompt_with_its_previous_output(tmp_path):
    _, rd = _lm_run(tmp_path / "ws")
    rows = read_samples(rd)  # the half-written last line is skipped
    assert len(rows) == 6
    last, prev, items = latest_two(rows)
    assert (last, prev) == (30, 20)
    assert [(i["latest"], i["before"]) for i in items] == [
        ("Bank raises interest rates", "Bank of England raises rates"),
        ("Striker scores twice on debut", "Striker scores twice on debut")]
    assert latest_two(rows[:2]) == (10, None, [
        {"prompt": PROMPTS[0][0], "reference": PROMPTS[0][1], "latest": OUTPUTS[10][0], "before": None},
        {"prompt": PROMPTS[1][0], "reference": PROMPTS[1][1], "latest": OUTPUTS[10][1], "before": None}])
    assert "no samples yet" in _text(render([]))


@aio
async def test_samples_tab_shows_prompt_reference_latest_and_before(tmp_path):
    fake, rd = _lm_run(tmp_path / "ws")
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        await session_ready(pilot)
        screen = app.screen
        await wait_until(pilot, lambda: screen.query("#tab-samples"), what="the Samples tab")
        screen.query_one(TabbedContent).active = "tab-samples"
        view = screen.query_one("#samples")
        await wait_until(pilot, lambda: len(view.rows) == 6, what="the samples read")
        text = _text(render(view.rows))
        assert "latest: step 30 · before: step 20" in text
        for (prompt, ref), latest, before in zip(PROMPTS, OUTPUTS[30], OUTPUTS[20]):
            assert ref in text and latest in text and before in text
            assert " ".join(prompt.split()) in text
        # a new evaluation lands in samples.jsonl: the tab follows
        with open(rd / "samples.jsonl", "w") as fh:
            for step, outs in {**OUTPUTS, 40: ["Rates up again", "Two on debut"]}.items():
                for (p, r), o in zip(PROMPTS, outs):
                    fh.write(json.dumps({"step": step, "prompt": p, "reference": r, "output": o}) + "\n")
        await wait_until(pilot, lambda: len(view.rows) == 8, timeout=10, what="the new evaluation")
        assert "latest: step 40 · before: step 30" in _text(render(view.rows))


@aio
async def test_a_lora_causal_lm_run_shows_token_accuracy_and_its_lora_knobs(tmp_path):
    fake, rd = _lm_run(tmp_path / "ws")
    toml = (rd / "session.toml").read_text()
    (rd / "session.toml").write_text(toml + "\n[lora]\nenabled = true\ndropout = 0.1\nlr_ratio = 4.0\n")
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        await session_ready(pilot)
        screen = app.screen
        assert screen.query_one("#chart-acc").border_title == "token accuracy"
        table = screen.query_one("#knobs-table")
        await wait_until(pilot, lambda: "lora_lr_ratio" in [k.value for k in table.rows], what="the LoRA knobs")
        assert [str(c) for c in table.get_row("lora_dropout")[:2]] == ["lora_dropout", "0.1"]
        assert [str(c) for c in table.get_row("lora_lr_ratio")[:2]] == ["lora_lr_ratio", "4"]


def test_a_classification_run_has_no_samples_tab(tmp_path):
    from tuneterm.tui import samples

    class Screen:
        run_dir = next((FakeClient(tmp_path / "ws").workspace / "runs").glob("bbc-minilm-2026*"))

        def query(self, _):
            return []

        def query_one(self, _):
            raise AssertionError("no tab is added")

    samples.add_tab(Screen(), {})


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_samples_tab_snapshot(snap_compare, tmp_path, size):
    fake, _ = _lm_run(tmp_path / "ws")

    async def run_before(pilot):
        await session_ready(pilot)
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.query("#tab-samples"), what="the Samples tab")
        screen.query_one(TabbedContent).active = "tab-samples"
        await wait_until(pilot, lambda: len(screen.query_one("#samples").rows) == 6, what="the samples")
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(fake, poll_interval=0), terminal_size=size, run_before=run_before)
