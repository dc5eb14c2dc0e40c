"""The preference demo: `tuneterm demo` copies it, it validates, and (slow: SmolLM2-135M)
a few steps of it train with the preference metrics and samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import rows, run_cli

from tuneterm.cli import tui_verbs

DEMO = Path(__file__).parents[2] / "sessions" / "bbc-headline-preference-smollm2.toml"


def _run_demo(workspace: Path, capsys, *changes) -> Path:
    """The demo session with ``changes`` ((old, new) text pairs) run in the foreground."""
    text = DEMO.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    s = workspace / "sessions" / "demo.toml"
    s.write_text(text)
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    return Path(out.strip())


def test_demo_copies_the_preference_session(tmp_path):
    tui_verbs.prepare_demo(tmp_path / "demo")
    assert (tmp_path / "demo" / "sessions" / DEMO.name).read_text() == DEMO.read_text()


@pytest.mark.slow
def test_the_demo_trains_with_rewards_and_samples(workspace, capsys):
    run_dir = _run_demo(workspace, capsys, ("max_steps = 40", "max_steps = 2"),
                        ("interval_steps = 10", "interval_steps = 2"), ("max_samples = 200", "max_samples = 8"), ("max_eval_samples = 16", "max_eval_samples = 4"),
                        ("samples = 3", "samples = 1"), ("max_new_tokens = 20", "max_new_tokens = 4"))
    train = [r for r in rows(run_dir) if r["kind"] == "train"]
    assert train[0]["reward_accuracy"] == 0.0 and train[0]["reward_margin"] == 0.0  # policy == reference at step 1
    ev = [r for r in rows(run_dir) if r["kind"] == "eval"][-1]
    assert 0.0 <= ev["val_reward_accuracy"] <= 1.0
    sample = rows(run_dir, "samples.jsonl")[0]
    assert sample["prompt"] and sample["reference"] != sample["rejected"] and sample["logps_chosen"] < 0


@pytest.mark.slow
def test_a_precomputed_reference_ties_the_policy_exactly_at_step_1(workspace, capsys):
    """The training pairs' reference log-probs are precomputed in the first epoch's batches:
    at step 1 (the policy is its reference) every reward is exactly 0, as with a reference
    computed each step — no pair is won or lost by rounding. (SmolLM2: its matmuls round
    differently for batches padded differently; the tiny models' do not show it.)"""
    run_dir = _run_demo(workspace, capsys, ("max_steps = 40", "max_steps = 1"),
                        ("interval_steps = 10", "interval_steps = 100"), ("max_samples = 200", "max_samples = 16"),
                        ("max_eval_samples = 16", "max_eval_samples = 4"), ("samples = 3", "samples = 0"),
                        ('reference = "auto"', 'reference = "precompute"'))
    first = [r for r in rows(run_dir) if r["kind"] == "train"][0]
    assert (first["reward_margin"], first["reward_accuracy"], first["reward_chosen"]) == (0.0, 0.0, 0.0)
