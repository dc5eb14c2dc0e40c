"""A tiny-Llama DPO session through the trainer: a live beta edit and a freeze replay
bit-identically (samples included), kill -9 + --resume equals the uninterrupted run with
the reference precomputed, and beta / sft_weight are refused where they do not belong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import assert_same_weights, kill9_after_checkpoint, rows, run_cli, strip_clock
from pref_helpers import pref_session

SCRIPT = [
    {"type": "set", "id": "beta", "values": {"beta": 0.1}, "at_step": 2},
    {"type": "freeze", "id": "fr", "layers": ["embeddings", "layer.0"], "at_step": 3},
    {"type": "set", "id": "sft", "values": {"sft_weight": 0.5, "learning_rate": 1e-3}, "at_step": 5},
]


def _control(workspace: Path, script: list) -> Path:
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in script))
    return ctl


def test_a_steered_dpo_run_replays_bit_identically(workspace, capsys):
    s = pref_session(workspace, "dpo")
    code, out, err = run_cli(["run", str(s), "--control", str(_control(workspace, SCRIPT))], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    line = next(x for x in err.splitlines() if x.startswith("eval @ step 4:"))  # the progress line: the task's
    assert "val_loss=" in line and "val_reward_accuracy=" in line and "val_reward_margin=" in line
    ev = rows(run_dir, "events.jsonl")
    assert not [e for e in ev if e["kind"] == "reject"]
    edits = [e["edit"] for e in ev if e["kind"] == "edit"]
    assert edits[0] == {"step": 2, "set": {"beta": 0.1}} and edits[2]["set"]["sft_weight"] == 0.5
    train = [r for r in rows(run_dir) if r["kind"] == "train"]
    keys = {"reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "logps_chosen", "logps_rejected"}
    assert all(keys <= r.keys() for r in train)
    evals = [r for r in rows(run_dir) if r["kind"] == "eval"]
    assert all({f"val_{k}" for k in keys} | {"val_loss"} <= r.keys() for r in evals)
    samples = rows(run_dir, "samples.jsonl")
    assert [r["step"] for r in samples] == [4, 4, 8, 8]
    assert all({"prompt", "reference", "rejected", "output", "logps_chosen", "logps_rejected"} <= r.keys()
               for r in samples)
    saved = (run_dir / "session.toml").read_text()
    assert "beta = 0.1" in saved and "sft_weight = 0.5" in saved  # in the edit log

    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    replay = Path(out.strip())
    assert strip_clock(rows(replay)) == strip_clock(rows(run_dir))
    assert rows(replay, "samples.jsonl") == samples
    assert_same_weights(run_dir, replay)

    # without the beta edit the run is the same up to step 2 and another from step 3 on
    code, out, err = run_cli(["run", str(s), "--control", str(_control(workspace, SCRIPT[1:]))], capsys)
    assert code == 0, err
    other = [r for r in strip_clock(rows(Path(out.strip()))) if r["kind"] == "train"]
    assert other[:2] == strip_clock(train[:2]) and other[2]["loss"] != train[2]["loss"]


def test_kill9_then_resume_equals_uninterrupted_with_a_precomputed_reference(workspace, capsys):
    s = pref_session(workspace, "kill", steps=10, preference='reference = "precompute"')
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    reference = Path(out.strip())
    s.write_text(s.read_text().replace('name = "kill"', 'name = "kill-b"'))  # its own run, the same data
    run_dir = kill9_after_checkpoint(workspace, s, 4)
    assert max(r["step"] for r in rows(run_dir) if r["kind"] == "train") < 10
    code, _, err = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert strip_clock(rows(run_dir)) == strip_clock(rows(reference))
    assert rows(run_dir, "samples.jsonl") == rows(reference, "samples.jsonl")
    assert_same_weights(run_dir, reference)
    resumed = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "resume"][-1]
    assert resumed["reference_cache"] == "cached"  # the file the killed attempt wrote


@pytest.mark.parametrize("values,message", [
    ({"beta": 0.0}, "beta: 0.0 is out of range (0, 100]"),
    ({"sft_weight": -1.0}, "sft_weight: -1.0 is out of range [0, 100]"),
])
def test_bad_knob_values_are_refused_live(workspace, capsys, values, message):
    s = pref_session(workspace, "bad", steps=3)
    script = [{"type": "set", "id": "x", "values": values, "at_step": 1}]
    code, out, err = run_cli(["run", str(s), "--control", str(_control(workspace, script))], capsys)
    assert code == 0, err
    rejects = [e for e in rows(Path(out.strip()), "events.jsonl") if e["kind"] == "reject"]
    assert rejects and rejects[0]["reason"] == message


def test_beta_belongs_to_preference_runs_only(workspace, capsys):
    from tuneterm.session.check import check_set_values
    from tuneterm.session.schema import Session

    assert check_set_values({"beta": 0.2}, Session()) == [
        "beta: a preference knob, but this session's task is sequence-classification"]
    s = Session()
    s.model.task = "preference"
    assert check_set_values({"beta": 0.2, "sft_weight": 1.0}, s) == []
