"""The session screen of a preference run: reward accuracy (training and validation) in the
accuracy chart, a reward-margin chart beside it, beta and sft_weight in the Knobs tab with
their help and ranges, and the Samples tab with each pair's rejected completion and
log-probs (Pilot test on a FakeClient workspace)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tui"))

from fake_client import FakeClient  # noqa: E402
from test_snapshots import session_ready  # noqa: E402
from textual.widgets import TabbedContent  # noqa: E402
from tui_helpers import aio, wait_until  # noqa: E402

from tuneterm.tui.app import make_app  # noqa: E402
from tuneterm.tui.chart import LineChart  # noqa: E402
from tuneterm.tui.data import RunView  # noqa: E402
from tuneterm.tui.knobs import check_knob, knob_help  # noqa: E402


def _pref_run(ws):
    """The FakeClient's running bbc-minilm run, made a preference run with rewards and samples."""
    fake = FakeClient(ws)
    rd = next(ws.glob("runs/bbc-minilm-2026*"))
    toml = (rd / "session.toml").read_text()
    (rd / "session.toml").write_text(toml.replace('source = "builtin:minilm-l6"',
                                                  'source = "builtin:smollm2-135m"\ntask = "preference"')
                                     + "\n[preference]\nbeta = 0.25\n")
    out = []
    for line in (rd / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "train":
            row.update(reward_accuracy=min(1.0, row["step"] / 100), reward_margin=row["step"] / 50)
        elif row.get("kind") == "eval":
            row["val_reward_accuracy"], row["val_reward_margin"] = row.pop("val_accuracy", 0.5), row["step"] / 60
        out.append(json.dumps(row))
    (rd / "metrics.jsonl").write_text("\n".join(out) + "\n")
    (rd / "samples.jsonl").write_text(json.dumps({"step": 100, "prompt": "Write a headline: rates rise",
                                                  "reference": "Bank raises rates", "rejected": "Striker scores",
                                                  "output": "Bank raises rates", "logps_chosen": -3.5,
                                                  "logps_rejected": -21.25}) + "\n")
    return fake, rd


def test_the_view_reads_the_task_s_charts_and_knobs(tmp_path):
    fake, rd = _pref_run(tmp_path / "ws")
    v = RunView()
    v.load_session_toml(__import__("tomllib").loads((rd / "session.toml").read_text()))
    assert v.knob_keys[-2:] == ("beta", "sft_weight") and (v.knobs["beta"], v.knobs["sft_weight"]) == (0.25, 0.0)
    assert v.accuracy_key == "val_reward_accuracy" and [c.title for c in v.charts] == ["reward accuracy",
                                                                                         "reward margin"]
    for line in (rd / "metrics.jsonl").read_text().splitlines():
        v.add_metric(json.loads(line))
    assert len(v.chart_train) and len(v.val_accuracy) and len(v.extra_train) and len(v.extra_val)
    assert v.evals and "reward_accuracy" in v.timeline[-1].text
    v._apply_edit({"step": 3, "set": {"beta": 0.1}})
    assert v.knobs["beta"] == 0.1
    assert "range (0.0, 100.0]" in knob_help("beta") and "how far the policy may move" in knob_help("beta")
    assert check_knob("beta", "0.2") == (0.2, None)
    assert check_knob("beta", "0")[1] == "beta: 0.0 is out of range (0, 100]"


@aio
async def test_the_session_screen_charts_rewards_and_shows_the_pairs(tmp_path):
    fake, rd = _pref_run(tmp_path / "ws")
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=(120, 36)) as pilot:
        await session_ready(pilot)
        screen = app.screen
        acc = screen.query_one("#chart-acc", LineChart)
        assert acc.chart_title == "reward accuracy" and [ln.label for ln in acc.lines] == ["train", "val"]
        margin = screen.query_one("#chart-extra", LineChart)
        assert margin.chart_title == "reward margin" and all(len(ln.series) for ln in margin.lines)
        assert [c.id for c in screen.query(LineChart)] == ["chart-loss", "chart-acc", "chart-extra", "chart-lr"]
        knobs = screen.query_one("#knobs")
        await wait_until(pilot, lambda: "beta" in knobs._rows(), what="the beta row")
        await wait_until(pilot, lambda: screen.query("#tab-samples"), what="the Samples tab")
        screen.query_one(TabbedContent).active = "tab-samples"
        view = screen.query_one("#samples")
        await wait_until(pilot, lambda: len(view.rows) == 1, what="the samples read")
        from test_samples import _text

        from tuneterm.tui.samples import render

        text = _text(render(view.rows))
        assert "rejected Striker scores" in text and "chosen -3.50 · rejected -21.25" in text
