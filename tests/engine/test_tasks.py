"""The task seam: the registry, and a new task trained by the unchanged trainer."""

from __future__ import annotations

import sys
import types

import pytest
from engine_helpers import rows

from tuneterm.engine.control import Mailbox
from tuneterm.engine.runs import create_run
from tuneterm.engine.tasks import REGISTRY, get_task
from tuneterm.engine.tasks.classification import SequenceClassificationTask
from tuneterm.engine.trainer import Trainer
from tuneterm.errors import UserError
from tuneterm.session import schema
from tuneterm.session.io import load_session


def test_get_task_picks_the_session_s_task_and_refuses_an_unknown_one(workspace, tiny_session):
    session = load_session(tiny_session(), workspace)
    assert isinstance(get_task(session), SequenceClassificationTask)
    assert get_task(session) is not get_task(session)  # a fresh one per run
    session.model.task = "translation"
    with pytest.raises(UserError, match="model.task: unknown task 'translation'"):
        get_task(session)


class ToyTask(SequenceClassificationTask):
    """Classification data, but its own metric, token-weighted micro-batches and samples."""
    name = "toy"
    metrics = ("val_loss", "val_score")
    collated: list = []

    def mode(self, metric):
        return "max" if metric == "val_score" else "min"

    def collate(self, dataset, indices, device):
        ToyTask.collated.append(list(indices))
        return super().collate(dataset, indices, device)

    def batch_weight(self, batch):
        return int(batch["attention_mask"].sum())

    def evaluate(self, model, data, device, batch_size):
        res = super().evaluate(model, data, device, batch_size)
        return {"val_loss": res["val_loss"], "val_score": 1.0 - res["val_loss"]}

    def samples(self, model, data, device, session, step):
        return [{"step": step, "prompt": "p", "reference": "r", "output": f"o{step}"}]


def test_a_new_task_plugs_in_without_changing_the_trainer(workspace, tiny_session, monkeypatch):
    module = types.ModuleType("toy_task_for_tests")
    module.ToyTask = ToyTask
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(REGISTRY, "toy", (module.__name__, "ToyTask"))
    monkeypatch.setitem(schema.TASK_METRICS, "toy", ToyTask.metrics)
    monkeypatch.setitem(schema.METRIC_MODES, "val_score", "max")
    ToyTask.collated = []
    session = load_session(tiny_session(), workspace)
    session.model.task = "toy"
    session.hyperparameters.max_steps = 6
    session.early_stopping.metric = "val_score"
    t = Trainer(session, create_run(workspace, session), workspace, sinks=[], mailbox=Mailbox())
    t.setup()
    assert t.train() == "done"
    t.cleanup()
    assert t.state.early_stopping.mode == "max"  # from the task
    evals = [r for r in rows(t.run_dir) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 6]
    assert all(set(r) == {"kind", "step", "epoch", "val_loss", "val_score", "time"} for r in evals)
    assert [r["step"] for r in rows(t.run_dir, "samples.jsonl")] == [4, 6]
    # the trainer asked the task for exactly the plan's batches: 6 steps of 8 from the epoch order
    from tuneterm.engine.data import epoch_order

    order = epoch_order(session.session.seed, 0, 96)
    assert ToyTask.collated == [list(order[i * 8:(i + 1) * 8]) for i in range(6)]
    start = rows(t.run_dir, "events.jsonl")[0]
    assert start["task"] == "toy" and start["train_examples"] == 96
