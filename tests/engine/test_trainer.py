"""The Trainer through its public phases: a recorded loss curve, every schedule, a live
edit during a replay, log.txt."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli, strip_clock
from tiny_sessions import tiny_session_toml

from tuneterm.engine.control import Mailbox
from tuneterm.engine.runs import create_run
from tuneterm.engine.trainer import Trainer
from tuneterm.session.io import load_session
from tuneterm.session.schema import SCHEDULES


def _session_file(workspace: Path, name: str, **kw) -> Path:
    extra = kw.pop("extra", "")
    replace = kw.pop("replace", {})
    text = tiny_session_toml(name, **kw) + extra
    for a, b in replace.items():
        assert a in text, a
        text = text.replace(a, b)
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(text)
    return path


def _train(workspace: Path, session, messages=()) -> Trainer:
    rd = create_run(workspace, session)
    mailbox = Mailbox()
    for m in messages:
        mailbox.put(m)
    t = Trainer(session, rd, workspace, sinks=[], mailbox=mailbox)
    t.setup()
    t.train()
    t.cleanup()
    return t


# Recorded from the round-1 trainer (commit 97884c6, before the split into phases and
# tasks) on the CPU: tiny-bert, seed 11, 48 examples, batch 8, cosine, 2 warmup steps.
# torchtune's regression style: a change of arithmetic anywhere on the path shows here.
CURVE_LOSS = [1.6068779230117798, 1.5924196243286133, 1.6146142482757568, 1.5575875043869019,
              1.5902107954025269, 1.6033058166503906, 1.4633400440216064, 1.6180317401885986]
CURVE_VAL_LOSS = [1.5852875113487244, 1.6027716398239136]


def test_recorded_loss_curve_of_a_tiny_model(workspace, capsys):
    s = _session_file(workspace, "curve", seed=11, steps=8, eval_interval=4, checkpoint_interval=0, keep_last=1,
                      replace={"max_samples = 96": "max_samples = 48", 'schedule = "linear"': 'schedule = "cosine"'})
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    rs = rows(Path(out.strip()))
    losses = [r["loss"] for r in rs if r["kind"] == "train"]
    val = [r["val_loss"] for r in rs if r["kind"] == "eval"]
    assert losses == pytest.approx(CURVE_LOSS, rel=1e-4)
    assert val == pytest.approx(CURVE_VAL_LOSS, rel=1e-4)


def _expected_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """transformers' schedule shapes, written out again (not through tuneterm.engine.schedule)."""
    if step < warmup:
        return step / warmup
    p = (step - warmup) / (total - warmup)
    return {
        "constant": 1.0,
        "linear": 1.0 - p,
        "cosine": 0.5 * (1.0 + math.cos(math.pi * p)),
        "cosine_with_restarts": 0.5 * (1.0 + math.cos(math.pi * (p % 1.0))),
        "polynomial": 1.0 - p,  # power 1, lr_end 0
        "inverse_sqrt": 1.0 / math.sqrt(step / warmup),
    }[schedule]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_trains_with_its_learning_rates(workspace, schedule):
    path = _session_file(workspace, f"sched-{schedule}", seed=2, steps=6, eval_interval=0, checkpoint_interval=0,
                         keep_last=1, replace={"max_samples = 96": "max_samples = 24",
                                               'schedule = "linear"': f'schedule = "{schedule}"'})
    t = _train(workspace, load_session(path, workspace))
    train = [r for r in rows(t.run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    lrs = [r["lr"] for r in train]
    assert lrs == pytest.approx([2e-3 * _expected_factor(schedule, s, 6, 2) for s in range(6)], rel=1e-12, abs=1e-15)
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) for r in train)
    assert len({r["loss"] for r in train}) == 6  # it trained: every step saw a new model
    assert rows(t.run_dir, "events.jsonl")[-1]["state"] == "done"


def test_a_live_edit_during_a_replay_is_recorded_in_step_order_and_replays(workspace, tiny_session, capsys):
    ctl = workspace / "control.jsonl"
    ctl.write_text('{"v": 1, "type": "set", "id": "a", "values": {"learning_rate": 5e-4}, "at_step": 3}\n'
                   '{"v": 1, "type": "set", "id": "b", "values": {"batch_size": 4}, "at_step": 9}\n')
    code, out, err = run_cli(["run", str(tiny_session()), "--control", str(ctl)], capsys)
    assert code == 0, err
    original = Path(out.strip())
    session = load_session(original / "session.toml", workspace)
    assert [e.step for e in session.edits] == [3, 9]

    # The replay gets two live edits: one between the recorded ones, one at the step of one.
    t = _train(workspace, session, [
        {"v": 1, "type": "set", "id": "live1", "values": {"dropout": 0.2}, "at_step": 5},
        {"v": 1, "type": "freeze", "id": "live2", "layers": ["embeddings"], "at_step": 9},
    ])
    replay = t.run_dir
    log = load_session(replay / "session.toml", workspace).edits
    assert [(e.step, e.set, e.freeze) for e in log] == [
        (3, {"learning_rate": 5e-4}, []), (5, {"dropout": 0.2}, []),
        (9, {"batch_size": 4}, []), (9, {}, ["embeddings"])]
    ev = rows(replay, "events.jsonl")
    assert [(e["step"], e["source"]) for e in ev if e["kind"] == "edit"] == [(3, "log"), (5, "live"), (9, "log"),
                                                                          (9, "live")]
    assert ev[-1]["kind"] == "end" and ev[-1]["state"] == "done"
    m_orig, m_replay = rows(original), rows(replay)
    # identical up to the live edit, different after it, and consistent to the end
    assert strip_clock(m_orig[:5]) == strip_clock(m_replay[:5])
    assert strip_clock(m_orig) != strip_clock(m_replay)
    train = [r for r in m_replay if r["kind"] == "train"]
    assert train[-1]["step"] == train[-1]["total_steps"] == len(train)
    # and the replay's own log replays it bit for bit
    code, out, err = run_cli(["replay", str(replay), "--check"], capsys)
    assert code == 0, err


def test_log_txt_tells_a_person_what_happened(workspace, tiny_session, capsys):
    ctl = workspace / "control.jsonl"
    ctl.write_text('{"v": 1, "type": "set", "id": "a", "values": {"learning_rate": 5e-4}, "at_step": 2}\n'
                   '{"v": 1, "type": "set", "id": "b", "values": {"learning_rate": -1}, "at_step": 3}\n')
    code, out, err = run_cli(["run", str(tiny_session()), "--max-steps", "6", "--control", str(ctl)], capsys)
    assert code == 0, err
    text = (Path(out.strip()) / "log.txt").read_text()
    lines = text.splitlines()
    assert "started: model builtin:tiny-bert (sequence-classification), train examples 96, val examples 32" in text
    assert "device cpu, kernels torch" in text and "trainable parameters" in text
    assert any("step 2: edit applied (live): learning_rate=0.0005" in x for x in lines)
    assert any("step 3: edit rejected: learning_rate" in x and "WARNING" in x for x in lines)
    assert any("step 4: evaluation: val_loss=" in x for x in lines)
    assert any("step 4: new best val_loss = " in x for x in lines)
    assert any("step 4: checkpoint checkpoints/step-00000004 (best)" in x for x in lines)
    assert "ended at step 6: done" in lines[-1]
