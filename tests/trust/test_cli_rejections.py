"""A live edit the CLI itself refuses is logged where the run's history is: a `reject` row
with its reason and source "cli" in runs/<id>/events.jsonl (issue 14, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli
from tiny_sessions import tiny_session_toml


@pytest.fixture
def running(workspace: Path) -> Path:
    """A run directory as a worker leaves it mid-run: started, 7 steps trained, no end row."""
    rd = workspace / "runs" / "tiny-20261202-000000-abcd"
    rd.mkdir()
    (rd / "session.toml").write_text(tiny_session_toml("tiny", steps=50))
    (rd / "metrics.jsonl").write_text("".join(json.dumps({"kind": "train", "step": s, "loss": 1.0}) + "\n"
                                              for s in range(1, 8)))
    (rd / "events.jsonl").write_text(json.dumps({"kind": "start", "step": 0}) + "\n")
    return rd


@pytest.mark.parametrize("assignment, reason", [
    ("learning_rate=0", "learning_rate: 0.0 is out of range"),
    ("learning_rat=1e-4", "learning_rat: cannot be changed while a run trains; did you mean 'learning_rate'?"),
    ("batch_size=many", "batch_size: expected an integer, got 'many'"),
])
def test_a_value_the_cli_refuses_is_logged_in_the_runs_events(running: Path, capsys, assignment, reason):
    code, out, err = run_cli(["set", running.name, assignment], capsys)
    assert code == 2 and err.startswith(f"tuneterm: error: {reason}")
    last = rows(running, "events.jsonl")[-1]
    assert last["kind"] == "reject" and last["source"] == "cli" and last["step"] == 7
    assert last["reason"].startswith(reason)
    assert last["request"] == {"type": "set", "assignments": [assignment]}


def test_a_unique_prefix_of_the_run_id_finds_the_run(running: Path, capsys):
    assert run_cli(["set", "tiny-2026", "dropout=1.5"], capsys)[0] == 2
    assert rows(running, "events.jsonl")[-1]["source"] == "cli"


def test_a_finished_run_keeps_its_end_row_last(running: Path, capsys):
    end = {"kind": "end", "step": 7, "state": "done", "reason": ""}
    with open(running / "events.jsonl", "a") as fh:
        fh.write(json.dumps(end) + "\n")
    assert run_cli(["set", running.name, "learning_rate=0"], capsys)[0] == 2
    assert rows(running, "events.jsonl")[-1] == end
