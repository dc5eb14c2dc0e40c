"""The session screen's per-rank line for a multi-process session: its process count and
each rank's last step and step time, a stalled rank in red (runner/health.py's rule, over
the heartbeat files each rank writes; the view the daemon answers carries it). A
single-process session shows nothing here."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from tuneterm.runner.health import NO_STEP, STALLED, STARTING, rank_text, session_processes


class RanksLine(Static):
    """``processes 2 · rank 0 step 17 0.41 s · rank 1 stalled 42 s at step 17``."""

    def __init__(self, **kw) -> None:
        super().__init__("", **kw)
        self.display = False
        self._configured: int | None = None  # [distributed] processes, read once
        self._run_dir: Path | None = None
        self.text = ""
        self.line = Text()  # what is shown, with its styles

    def show(self, s: dict, run_dir: Path | None) -> None:
        if run_dir is not None and run_dir != self._run_dir:
            self._run_dir, self._configured = run_dir, session_processes(run_dir)
        ranks = s.get("ranks") or []
        processes = s.get("processes") or self._configured
        if not processes or processes < 2:
            return
        text = Text(f"processes {processes}", style="bold")
        for r in ranks:
            style = "bold red" if r["health"] == STALLED else "dim" if r["health"] == STARTING else ""
            text.append(" · ").append(rank_text(r), style=style)
        if not ranks:
            text.append(f" · {NO_STEP}", style="dim")
        if text.plain != self.text:
            self.text, self.line = text.plain, text
            self.display = True
            self.update(text)
