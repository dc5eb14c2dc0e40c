"""beta and sft_weight are sweep knobs of a preference session, its metrics objectives; a
session of another task refuses them on their line."""

from __future__ import annotations

import pytest
from pref_helpers import pref_session

from tuneterm.session import check_session_text, dumps_session
from tuneterm.session.problems import SessionError
from tuneterm.sweep.spec import load_sweep
from tuneterm.sweep.trial import trial_session

SWEEP = """
[sweep]
objective = "val_reward_accuracy"
trials = 4
max_steps = 6
space.beta = { low = 0.05, high = 0.5, log = true }
space.sft_weight = { low = 0.0, high = 1.0 }
"""


def test_beta_and_sft_weight_are_sweepable(workspace):
    path = pref_session(workspace, "sw")
    path.write_text(path.read_text() + SWEEP)
    sw = load_sweep(path, workspace)
    assert sw.direction == "maximize" and set(sw.space) == {"beta", "sft_weight"}
    t = trial_session(sw, {"beta": 0.2, "sft_weight": 0.3}, 1)
    assert (t.preference.beta, t.preference.sft_weight) == (0.2, 0.3)
    _, problems = check_session_text(dumps_session(t), "t.toml", workspace)
    assert not problems


@pytest.mark.parametrize("task,space,message", [
    ("sequence-classification", "space.beta = { low = 0.05, high = 0.5 }",
     "sweep.space.beta: a preference knob, but the session's task is sequence-classification"),
    ("preference", "space.beta = { low = 0.0, high = 0.5 }", "sweep.space.beta.low: 0.0 is out of range (0, 100]"),
])
def test_a_knob_the_session_cannot_take_is_refused_on_its_line(workspace, task, space, message):
    path = pref_session(workspace, "bad")
    text = path.read_text().replace('task = "preference"', f'task = "{task}"').replace(
        'source = "builtin:tiny-llama"', 'source = "builtin:tiny-bert"' if task != "preference" else
        'source = "builtin:tiny-llama"')
    if task != "preference":
        text = text.replace('source = "pairs.jsonl"', 'source = "builtin:bbc-news"')
    path.write_text(text + f'\n[sweep]\nobjective = "val_loss"\ntrials = 2\nmax_steps = 4\n{space}\n')
    with pytest.raises(SessionError) as e:
        load_sweep(path, workspace)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if x.startswith("space.beta"))
    assert str(e.value) == f"{path}:{line}: {message}"
