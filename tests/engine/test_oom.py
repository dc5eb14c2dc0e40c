"""Out of memory at a step: the micro-batch halves, accumulation doubles, the edit is
recorded, the step is redone (a fake CUDA OOM through TUNETERM_FAULT_OOM_AT_STEP)."""

from __future__ import annotations

import pytest
from engine_helpers import rows, strip_clock

from tuneterm.engine.control import Mailbox
from tuneterm.engine.oom import FAULT_ENV
from tuneterm.engine.runs import create_run
from tuneterm.engine.trainer import Trainer
from tuneterm.errors import TrainingError
from tuneterm.session.io import load_session
from tuneterm.session.schema import Edit


def _run(workspace, session):
    t = Trainer(session, create_run(workspace, session), workspace, sinks=[], mailbox=Mailbox())
    t.setup()
    try:
        t.train()
    finally:
        t.cleanup()
    return t.run_dir


def test_an_oom_halves_the_micro_batch_and_equals_a_run_that_used_it_from_that_step(workspace, tiny_session,
                                                                                    monkeypatch):
    session = load_session(tiny_session(epochs=1), workspace)  # 12 steps of 8
    monkeypatch.setenv(FAULT_ENV, "6")
    halved = _run(workspace, session.copy())
    monkeypatch.delenv(FAULT_ENV)

    log = load_session(halved / "session.toml", workspace).edits
    assert [(e.step, e.set) for e in log] == [(5, {"batch_size": 4, "gradient_accumulation": 2})]
    ev = rows(halved, "events.jsonl")
    assert [e["source"] for e in ev if e["kind"] == "edit"] == ["oom"]
    warn = [e for e in ev if e["kind"] == "warning"]
    assert len(warn) == 1 and "halved to 4 x 2" in warn[0]["message"] and warn[0]["step"] == 5
    train = [r for r in rows(halved) if r["kind"] == "train"]
    assert [r["batch_size"] for r in train] == [8] * 5 + [4] * 7
    assert {r["total_steps"] for r in train} == {12}  # the same examples per step: the same plan
    assert ev[-1]["state"] == "done"

    smaller = session.copy()
    smaller.edits = [Edit(step=5, set={"batch_size": 4, "gradient_accumulation": 2})]
    reference = _run(workspace, smaller)
    assert strip_clock(rows(halved)) == strip_clock(rows(reference))
    (a,), (b,) = [sorted((d / "checkpoints").glob("step-*"))[-1:] for d in (halved, reference)]
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_an_oom_at_batch_size_one_fails_with_a_clear_message(workspace, tiny_session, monkeypatch):
    session = load_session(tiny_session(), workspace)
    session.hyperparameters.batch_size = 1
    session.hyperparameters.max_steps = 4
    monkeypatch.setenv(FAULT_ENV, "3")
    with pytest.raises(TrainingError, match="out of memory at step 3 with batch_size 1"):
        _run(workspace, session)
