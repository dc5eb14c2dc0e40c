"""The task table (session/tasks.py): each row agrees with its engine module, everything
that differs between tasks reads it, and a name not in it fails loudly everywhere."""

from __future__ import annotations

import importlib

import pytest

from tuneterm.errors import UserError
from tuneterm.session import schema
from tuneterm.session.tasks import METRIC_MODES, TASK_TABLE, task_spec


@pytest.mark.parametrize("name", list(TASK_TABLE))
def test_each_row_agrees_with_its_engine_module(name):
    spec = TASK_TABLE[name]
    module, cls = spec.engine
    task = getattr(importlib.import_module(module), cls)()
    assert task.name == name and tuple(task.metrics) == tuple(spec.metrics)
    assert all(task.mode(m) == mode for m, mode in spec.metrics.items())
    for hook in ("bind", "prepare", "step_metrics", "evaluate_file", "predict_file"):
        assert callable(getattr(task, hook)), hook
    assert schema.TASK_METRICS[name] == tuple(spec.metrics)
    assert all(METRIC_MODES[m] == mode for m, mode in spec.metrics.items())
    assert spec.formats[0] == "auto" and set(spec.formats) <= set(schema.LM_FORMATS)
    assert all(getattr(schema.SECTIONS[spec.section](), k) is not None for k in spec.live_knobs)


def test_an_unknown_task_fails_loudly_everywhere():
    from tuneterm.engine import lora
    from tuneterm.engine.layer_report import meta_model
    from tuneterm.engine.tasks import get_task

    s = schema.Session()
    s.model.task = "translation"
    for call in (lambda: task_spec("translation"), lambda: get_task(s), lambda: lora.peft_config(s),
                 lambda: meta_model(s, None)):
        with pytest.raises(UserError, match="model.task: unknown task 'translation'"):
            call()


def test_the_peft_task_type_and_export_class_come_from_the_row():
    from tuneterm.engine import lora

    s = schema.Session()
    s.model.task = "preference"
    assert str(lora.peft_config(s).task_type) in ("CAUSAL_LM", "TaskType.CAUSAL_LM")
    assert task_spec("preference").export_class == "AutoModelForCausalLM"
    assert task_spec("sequence-classification").pipeline_tag == "text-classification"


@pytest.mark.parametrize("task,mode,problem", [
    ("preference", "", None),
    ("preference", "min", "early_stopping.mode: 'min' does not fit val_reward_accuracy (higher is better)"),
    ("causal-lm", "", "early_stopping.metric: val_reward_accuracy is not a causal-lm metric"),
])
def test_early_stopping_takes_the_preference_metrics(workspace, task, mode, problem):
    from pref_helpers import pref_session

    from tuneterm.session import check_session_text

    path = pref_session(workspace, "es")
    text = path.read_text().replace('task = "preference"', f'task = "{task}"').replace(
        '[checkpoint]', f'[early_stopping]\nenabled = true\nmetric = "val_reward_accuracy"\nmode = "{mode}"\n\n[checkpoint]')
    if task != "preference":
        text = text.replace('source = "pairs.jsonl"', 'source = "builtin:bbc-news"')
    _, problems = check_session_text(text, "es.toml", workspace)
    if problem is None:
        assert problems == []
    else:
        assert f"{problems[0].field}: {problems[0].message}".startswith(problem)


def test_trackers_get_the_task_s_training_values():
    from tuneterm.tracking.rows import Translator

    row = {"kind": "train", "step": 3, "loss": 0.6, "lr": 1e-5, "reward_accuracy": 0.75, "reward_margin": 0.2}
    (scalars,) = Translator().metric(row)
    assert scalars.values["train/reward_accuracy"] == 0.75 and scalars.values["train/reward_margin"] == 0.2


def test_the_runner_s_best_metric_goes_the_task_s_way(tmp_path):
    from tuneterm.runner.tail import Tailer

    (tmp_path / "session.toml").write_text('[model]\ntask = "preference"\n[early_stopping]\n'
                                           'metric = "val_reward_rejected"\n')
    tail = Tailer(tmp_path)
    tail._read_metric()
    assert tail.mode == "min"  # lower rejected rewards are better, though the name ends in neither loss nor acc
