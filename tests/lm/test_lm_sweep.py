"""Sweeps over a causal-LM session: val_perplexity / val_token_accuracy are objectives with
their direction; a classification metric is refused for an LM session and vice versa."""

from __future__ import annotations

import pytest

from tuneterm.session.problems import SessionError
from tuneterm.sweep.spec import load_sweep

LM = """\
[session]
name = "lm-sweep"

[model]
source = "builtin:tiny-llama"
task = "causal-lm"

[hyperparameters]
max_steps = 4

[sweep]
objective = "{objective}"
trials = 2
max_steps = 4

[sweep.space]
learning_rate = {{ low = 1e-4, high = 1e-2, log = true }}
"""


def _sweep(workspace, text):
    p = workspace / "sessions" / "sw.toml"
    p.write_text(text)
    return load_sweep(p, workspace, layers=False)


@pytest.mark.parametrize("objective, direction", [("val_perplexity", "minimize"),
                                                  ("val_token_accuracy", "maximize"), ("val_loss", "minimize")])
def test_lm_metrics_are_objectives(workspace, objective, direction):
    sw = _sweep(workspace, LM.format(objective=objective))
    assert sw.objective == objective and sw.direction == direction


def test_metrics_of_the_other_task_are_refused(workspace):
    with pytest.raises(SessionError, match=r"sweep.objective: val_f1 is not a causal-lm metric"):
        _sweep(workspace, LM.format(objective="val_f1"))
    cls = LM.format(objective="val_perplexity").replace('task = "causal-lm"', "")
    with pytest.raises(SessionError, match=r"sweep.objective: val_perplexity is not a sequence-classification"):
        _sweep(workspace, cls)
