"""`tuneterm predict --out` never writes over or into a run directory (its metrics, events,
session, a checkpoint file...), the workspace's own folders, or a run kept elsewhere: one
line naming the path, exit 2, nothing written. Each test works on its own copy of a
workspace: a failing one must not damage the run the other results tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from engine_helpers import run_cli
from results_helpers import listing


def _checkpoint_file(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1] / "model.safetensors"


# --out as a function of (workspace, run, another run kept outside the workspace)
TARGETS = {
    "metrics.jsonl": lambda ws, run, other: run / "metrics.jsonl",
    "events.jsonl": lambda ws, run, other: run / "events.jsonl",
    "session.toml": lambda ws, run, other: run / "session.toml",
    "a checkpoint file": lambda ws, run, other: _checkpoint_file(run),
    "a new file in the run": lambda ws, run, other: run / "predictions.csv",
    "the queue database": lambda ws, run, other: ws / ".tuneterm" / "queue.db",
    "a new file in runs/": lambda ws, run, other: ws / "runs" / "predictions.csv",
    "another run's metrics": lambda ws, run, other: other / "metrics.jsonl",
    "a new file in another run": lambda ws, run, other: other / "predictions.csv",
}


@pytest.mark.parametrize("where", list(TARGETS))
def test_predict_refuses_to_write_into_a_run(own_ws, tmp_path, capsys, where):
    ws, run = own_ws
    other = tmp_path / "elsewhere" / "kept"
    shutil.copytree(run, other)
    out = TARGETS[where](ws, run, other)
    before = listing(tmp_path)
    code, stdout, err = run_cli(["-w", str(ws), "predict", run.name, str(ws / "data" / "test.csv"),
                                 "--out", str(out)], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and stdout == "", err
    assert str(out) in err and "never" in err, err
    assert listing(tmp_path) == before  # nothing written, nothing replaced


def test_predict_beside_the_runs_is_fine(own_ws, capsys):
    ws, run = own_ws
    out = ws / "predictions.csv"
    code, _, err = run_cli(["-w", str(ws), "predict", run.name, str(ws / "data" / "test.csv"),
                            "--out", str(out)], capsys)
    assert code == 0, err
    assert out.read_text().startswith("id,")
