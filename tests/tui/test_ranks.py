"""The session screen's per-rank line (tuneterm/tui/ranks.py) and the queue's "x2", from
the views the daemon answers: a stalled rank in red, nothing new for one process."""

from __future__ import annotations

from test_pilot import SIZE, app_for, open_queue, open_session
from tui_helpers import aio, cell_texts

from textual.widgets import DataTable

from tuneterm.tui.ranks import RanksLine

RANKS = [{"rank": 0, "world": 2, "step": 120, "seconds": 0.41, "median_s": 0.4, "age_s": 0.5, "host": "h",
          "pid": 1, "health": "ok"},
         {"rank": 1, "world": 2, "step": 120, "seconds": 0.43, "median_s": 0.4, "age_s": 42.0, "host": "h",
          "pid": 2, "health": "stalled"}]


@aio
async def test_a_multi_process_session_shows_its_ranks_and_the_stalled_one_in_red(fake):
    fake.sessions[1].update(processes=2, ranks=RANKS)  # bbc-minilm, running
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_queue(pilot)
        names = [row[0] for row in cell_texts(app.screen.query_one("#queue", DataTable))]
        assert names[:3] == ["tweets-minilm", "bbc-minilm x2", "smoke-tiny"]
        screen = await open_session(pilot, 1)
        line = screen.query_one(RanksLine)
        assert line.display
        assert line.text == "processes 2 · rank 0 step 120 0.41 s · rank 1 stalled 42 s at step 120"
        stalled = [line.text[s.start:s.end] for s in line.line.spans if s.style == "bold red"]
        assert stalled == ["rank 1 stalled 42 s at step 120"]


@aio
async def test_a_single_process_session_shows_no_rank_line(fake):
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        assert not screen.query_one(RanksLine).display and screen.query_one(RanksLine).text == ""
