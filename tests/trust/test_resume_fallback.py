"""A resume verifies checkpoints and falls back to the newest intact one, saying so in the
events; with none usable it reports the real error, in one line and as the attempt's end
(issue 14, item 6). Checkpoints without a manifest (round 1) are tried, and skipped when
they fail to load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli, strip_clock
from trust_helpers import delete_field, error_lines, garble, truncate


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A 12-step tiny run with checkpoints at steps 4, 8 and 12 (trained once per module)."""
    import os

    from tiny_sessions import tiny_session_toml

    from tuneterm.cli import main

    ws = tmp_path_factory.mktemp("fallback") / "ws"
    (ws / "sessions").mkdir(parents=True)
    (ws / "runs").mkdir()
    s = ws / "sessions" / "t.toml"
    s.write_text(tiny_session_toml("t", steps=12, eval_interval=4, checkpoint_interval=4, keep_last=3))
    old = os.environ.get("TUNETERM_HOME")
    os.environ["TUNETERM_HOME"] = str(ws)
    try:
        assert main(["run", str(s)]) == 0
    finally:
        if old is None:
            os.environ.pop("TUNETERM_HOME")
        else:
            os.environ["TUNETERM_HOME"] = old
    (run_dir,) = (ws / "runs").iterdir()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        ["step-00000004", "step-00000008", "step-00000012"]
    return run_dir


@pytest.fixture
def copy_of(finished: Path, workspace: Path) -> Path:
    dest = workspace / "runs" / finished.name
    shutil.copytree(finished, dest)
    return dest


@pytest.mark.parametrize("damage, name, reason", [
    (truncate, "model.safetensors", "model.safetensors is truncated"),
    (garble, "state.json", "state.json does not match its checksum"),
    (delete_field, "state.json", "state.json is truncated"),
])
def test_a_damaged_newest_checkpoint_falls_back_and_says_so(finished, copy_of, capsys, damage, name, reason):
    damage(copy_of / "checkpoints" / "step-00000012" / name)
    code, out, err = run_cli(["run", "--resume", str(copy_of)], capsys)
    assert code == 0, err
    assert "checkpoint step-00000012 skipped: " + reason in err
    events = rows(copy_of, "events.jsonl")
    (skip,) = [e for e in events if e["kind"] == "checkpoint_skipped"]
    assert skip["checkpoint"] == "step-00000012" and skip["reason"].startswith(reason)
    assert skip["moved_to"] == "checkpoints/.corrupt-step-00000012"
    assert [e["checkpoint"] for e in events if e["kind"] == "resume"] == ["step-00000008"]
    assert (copy_of / "checkpoints" / ".corrupt-step-00000012" / name).exists()
    # steps 9-12 trained again, exactly as the first time
    assert strip_clock(rows(copy_of)) == strip_clock(rows(finished))
    assert (copy_of / "checkpoints" / "step-00000012" / "manifest.json").is_file()


def test_with_no_usable_checkpoint_the_real_error_is_the_end(copy_of, capsys):
    for d in ("step-00000004", "step-00000008", "step-00000012"):
        truncate(copy_of / "checkpoints" / d / "model.safetensors")
    code, out, err = run_cli(["run", "--resume", str(copy_of)], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith("tuneterm: error: checkpoints: none of the 3 checkpoints can be used "
                           "(step-00000012: model.safetensors is truncated")
    end = rows(copy_of, "events.jsonl")[-1]
    assert end["kind"] == "end" and end["state"] == "failed"
    assert end["reason"].startswith("setup failed: checkpoints: none of the 3 checkpoints can be used")
    assert sorted(p.name for p in (copy_of / "checkpoints").iterdir()) == \
        ["step-00000004", "step-00000008", "step-00000012"]  # nothing set aside when nothing loads


def test_round1_checkpoints_are_tried_and_a_broken_one_skipped(finished, copy_of, capsys):
    for d in (copy_of / "checkpoints").iterdir():
        (d / "manifest.json").unlink()  # as round 1 wrote them
    delete_field(copy_of / "checkpoints" / "step-00000012" / "state.json")
    code, out, err = run_cli(["run", "--resume", str(copy_of)], capsys)
    assert code == 0, err
    (skip,) = [e for e in rows(copy_of, "events.jsonl") if e["kind"] == "checkpoint_skipped"]
    assert skip["reason"].startswith("unverified (no manifest): loading failed: ") and "cursor" in skip["reason"]
    assert [e["checkpoint"] for e in rows(copy_of, "events.jsonl") if e["kind"] == "resume"] == ["step-00000008"]
    assert strip_clock(rows(copy_of)) == strip_clock(rows(finished))


def test_the_worker_ends_an_unusable_resume_with_the_real_reason(copy_of):
    # What the runner reads after a worker exits: the last end row of events.jsonl. Before,
    # it was the previous attempt's ("paused on request"); now it is this attempt's error.
    import subprocess
    import sys

    from tuneterm.runner.tail import last_end_event

    with open(copy_of / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"kind": "end", "step": 12, "state": "paused", "reason": "paused on request"}) + "\n")
    for d in ("step-00000004", "step-00000008", "step-00000012"):
        garble(copy_of / "checkpoints" / d / "state.json")
    r = subprocess.run([sys.executable, "-m", "tuneterm.engine.worker", str(copy_of), "--resume"],
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    end = last_end_event(copy_of)
    assert end["state"] == "failed" and "none of the 3 checkpoints can be used" in end["reason"]
    assert "state.json does not match its checksum" in end["reason"]
