"""The Samples tab of a causal-LM session: each validation prompt, its reference, and the
model's greedy output at the latest evaluation beside the one before — so a person sees
the model learn (or start to overfit) as the run goes.

The rows come from RUN_DIR/samples.jsonl (``{"step", "prompt", "reference", "output"}``,
written by the engine at each evaluation), read in a thread every few seconds; the TUI
never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tuneterm.rundir import RunDir, read_jsonl

POLL_S = 2.0
PROMPT_CHARS = 240


def read_samples(run_dir: Path) -> list:
    """Every well-formed row of samples.jsonl (a half-written last line is skipped)."""
    return [r for r in read_jsonl(RunDir(run_dir).samples) if isinstance(r.get("step"), int) and "output" in r]


def latest_two(rows: list) -> tuple[int | None, int | None, list]:
    """(latest step, the step before, one entry per prompt of the latest evaluation with
    its ``before`` output, or None when that prompt had none)."""
    steps = sorted({r["step"] for r in rows})
    if not steps:
        return None, None, []
    last, prev = steps[-1], (steps[-2] if len(steps) > 1 else None)
    before = {(r.get("prompt"), r.get("reference")): r.get("output") for r in rows if r["step"] == prev}
    items = [{"prompt": str(r.get("prompt", "")), "reference": str(r.get("reference", "")),
              "latest": str(r.get("output", "")), "before": before.get((r.get("prompt"), r.get("reference"))),
              **{k: r[k] for k in ("rejected", "logps_chosen", "logps_rejected") if k in r}}  # preference's
             for r in rows if r["step"] == last]
    return last, prev, items


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render(rows: list):
    last, prev, items = latest_two(rows)
    if last is None:
        return Text("no samples yet: the first evaluation writes them (greedy outputs for "
                    "[evaluation] samples validation prompts)", style="dim")
    head = Text(f"{len(items)} validation prompts · latest: step {last}"
                + (f" · before: step {prev}" if prev is not None else ""), style="dim")
    parts: list = [head]
    for i, it in enumerate(items, 1):
        t = Table(box=None, show_header=False, padding=(0, 1), expand=True)
        t.add_column(style="bold", no_wrap=True, width=12)
        t.add_column(ratio=1)
        t.add_row(f"{i}. prompt", Text(_short(it["prompt"], PROMPT_CHARS), style="dim"))
        t.add_row("reference", Text(it["reference"], style="green"))
        if "rejected" in it:  # a preference pair: the other completion, and both log-probs now
            t.add_row("rejected", Text(str(it["rejected"]), style="red"))
            t.add_row("log-probs", Text(f"chosen {it.get('logps_chosen', 0):.2f} · rejected "
                                        f"{it.get('logps_rejected', 0):.2f}", style="dim"))
        changed = it["before"] is not None and it["before"] != it["latest"]
        t.add_row(f"step {last}", Text(it["latest"] or "(empty)", style="bold" if changed else ""))
        if prev is not None:
            t.add_row(f"step {prev}", Text(it["before"] if it["before"] is not None else "—", style="dim"))
        parts += [Text(""), t]
    return Group(*parts)


class SamplesView(Static):
    """The rendered samples; ``rows`` holds what is shown (tests read it back)."""

    rows: list = []

    def show_rows(self, rows: list) -> None:
        if rows == self.rows and self.rows:
            return
        self.rows = rows
        self.update(render(rows))


def add_tab(screen, s: dict) -> None:
    """On the session screen of a causal-LM run: a Samples tab, refreshed from samples.jsonl."""
    from tuneterm.session.schema import ModelSpec
    from tuneterm.session.tasks import TASK_TABLE
    from tuneterm.tui.data import read_toml

    rd = screen.run_dir
    if rd is None or screen.query("#tab-samples"):
        return
    spec = TASK_TABLE.get((read_toml(RunDir(rd).session).get("model") or {}).get("task") or ModelSpec().task)
    if spec is None or not spec.samples:  # causal LM, preference: generation samples at each evaluation
        return
    from textual.widgets import TabbedContent, TabPane

    view = SamplesView(id="samples")
    screen.query_one(TabbedContent).add_pane(TabPane("Samples", view, id="tab-samples"))
    view.show_rows([])
    busy = {"on": False}

    def done(result) -> None:
        busy["on"] = False
        if isinstance(result, list):
            view.show_rows(result)

    def poll() -> None:
        if not busy["on"]:
            busy["on"] = True
            screen.app.run_in_thread("samples", lambda: read_samples(rd), then=done)

    poll()
    view.set_interval(POLL_S, poll)
