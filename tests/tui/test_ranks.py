"""The session screen's per-rank line (tuneterm/tui/ranks.py) and the queue's "x2", from
the views the daemon answers: a stalled rank in red, nothing new for one process."""

from __future__ import annotations

import json
from pathlib import Path

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


@aio
async def test_a_lost_groups_reason_with_brackets_shows_in_the_timeline_as_written(fake):
    # gloo's messages name their source as "[/path/file.cc:78]", which is not markup
    reason = ("GroupLost: rank 0: a rank of the group is gone ([/__w/pytorch/third_party/gloo/gloo/transport/"
              "tcp/unbound_buffer.cc:78] Timed out waiting 60000ms for recv operation to complete)")
    rd = Path(fake.sessions[1]["run_dir"])
    with open(rd / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"kind": "end", "state": "failed", "step": 120, "reason": reason}) + "\n")
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, 1)
        await pilot.press("right_square_bracket", "right_square_bracket")  # the Timeline tab
        await pilot.pause()
        table = screen.query_one("#timeline-table", DataTable)
        table.move_cursor(row=table.row_count - 1)
        await pilot.pause()
        assert "[/__w/pytorch" in str(table.get_row_at(table.row_count - 1)[2])
        assert app.is_running
