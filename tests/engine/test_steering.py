"""Live edits: applied at step boundaries, recorded in the edit log, replayed exactly."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from engine_helpers import rows, run_cli, strip_clock

from tuneterm.session.io import load_session

SCRIPT = [
    {"type": "set", "id": "lr", "values": {"learning_rate": 5e-4}, "at_step": 3},
    {"type": "freeze", "id": "fr", "layers": ["embeddings", "layer.0"], "at_step": 5},
    {"type": "set", "id": "dp", "values": {"dropout": 0.3}, "at_step": 7},
    {"type": "unfreeze", "id": "uf", "layers": ["layer.0"], "at_step": 9},
    {"type": "set", "id": "bs", "values": {"batch_size": 4}, "at_step": 11},
    {"type": "set", "id": "bad", "values": {"learning_rate": -1.0}, "at_step": 12},
    {"type": "freeze", "id": "bad2", "layers": ["layer.9"], "at_step": 12},
]


def _steered_run(workspace: Path, tiny_session, capsys) -> Path:
    s = tiny_session()
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in SCRIPT))
    code, out, err = run_cli(["run", str(s), "--control", str(ctl)], capsys)
    assert code == 0, err
    return Path(out.strip())


def test_live_edits_land_in_the_edit_log_with_their_steps(workspace, tiny_session, capsys):
    run_dir = _steered_run(workspace, tiny_session, capsys)
    edits = load_session(run_dir / "session.toml", workspace).edits
    assert [(e.step, e.set, e.freeze, e.unfreeze) for e in edits] == [
        (3, {"learning_rate": 5e-4}, [], []),
        (5, {}, ["embeddings", "layer.0"], []),
        (7, {"dropout": 0.3}, [], []),
        (9, {}, [], ["layer.0"]),
        (11, {"batch_size": 4}, [], []),
    ]
    ev = rows(run_dir, "events.jsonl")
    rejects = [e for e in ev if e["kind"] == "reject"]
    assert {r["id"] for r in rejects} == {"bad", "bad2"}
    assert any("learning_rate" in r["reason"] for r in rejects)
    assert any("layer.9" in r["reason"] for r in rejects)
    train = [r for r in rows(run_dir) if r["kind"] == "train"]
    # the learning rate was re-based at step 3: lr(step) = 5e-4 * linear factor
    assert train[3]["lr"] < train[2]["lr"] / 3
    # batch size 4 from step 12 on: the remaining examples take more steps, order unchanged
    assert train[11]["batch_size"] == 4 and train[10]["batch_size"] == 8
    assert len(train) > 24


def test_steered_run_replays_bit_identically_and_check_catches_tampering(workspace, tiny_session, capsys):
    run_dir = _steered_run(workspace, tiny_session, capsys)
    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    assert "matches" in err
    replay_dir = Path(out.strip())
    assert strip_clock(rows(replay_dir)) == strip_clock(rows(run_dir))

    # Tamper with the recorded edit at step 3: the replay must differ from step 4 on.
    text = (run_dir / "session.toml").read_text()
    assert "learning_rate = 0.0005" in text
    (run_dir / "session.toml").write_text(text.replace("learning_rate = 0.0005", "learning_rate = 0.0006"))
    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 1
    assert "step 4 " in err and "loss" in err


def test_replay_check_of_a_session_file_is_bad_input(workspace, tiny_session, capsys):
    code, _, err = run_cli(["replay", str(tiny_session()), "--check"], capsys)
    assert code == 2 and "run directory" in err


def _trainer(workspace, tiny_session, extra=""):
    from tuneterm.engine.trainer import Trainer
    from tuneterm.engine.runs import create_run

    session = load_session(tiny_session(extra=extra), workspace)
    rd = create_run(workspace, session)
    t = Trainer(session, rd, workspace, sinks=[])
    t.setup()
    return t


def test_frozen_parameters_stay_bit_identical_and_unfrozen_start_fresh(workspace, tiny_session):
    t = _trainer(workspace, tiny_session, extra='\n[freeze]\nlayers = ["embeddings"]\n')
    emb = {n: p.detach().clone() for n, p in t.groups[0].params}
    l1 = {n: p.detach().clone() for n, p in t.groups[2].params}
    for _ in range(3):
        t.boundary()
        t.train_step()
    for n, p in t.groups[0].params:
        assert torch.equal(p, emb[n]), n
        assert p.grad is None and p not in t.opt.opt.state  # no gradient, no optimizer state
    assert any(not torch.equal(p, l1[n]) for n, p in t.groups[2].params)
    # layer.1 has state with step 3; freeze it, train, unfreeze: it starts again from zero
    p0 = t.groups[2].params[0][1]
    assert float(t.opt.opt.state[p0]["step"]) == 3
    t.mailbox.put({"type": "freeze", "id": "f", "layers": ["layer.1"]})
    t.boundary()
    assert p0 not in t.opt.opt.state
    before = p0.detach().clone()
    t.train_step()
    assert torch.equal(p0, before)
    t.mailbox.put({"type": "unfreeze", "id": "u", "layers": ["layer.1", "embeddings"]})
    t.boundary()
    t.train_step()
    st = t.opt.opt.state[p0]
    assert float(st["step"]) == 1
    # after one step from zero moments: m = (1 - beta1) * g exactly as a fresh AdamW would
    grad_free_check = st["exp_avg"] / (1 - t.hp.adam_beta1)
    assert torch.allclose(st["exp_avg_sq"], (1 - t.hp.adam_beta2) * grad_free_check ** 2, rtol=1e-5, atol=1e-12)
    t.close()


def _nan_at(trainer, step):
    model = trainer.model
    orig = model.forward

    def forward(*a, **k):
        out = orig(*a, **k)
        if trainer.dctx.step == step:
            out.logits = out.logits * float("nan")
        return out

    model.forward = forward


def test_nonfinite_loss_under_stop_fails_and_keeps_the_last_good_checkpoint(workspace, tiny_session):
    import pytest

    from tuneterm.errors import TrainingError

    t = _trainer(workspace, tiny_session)
    _nan_at(t, 5)  # the sixth step (5 done) produces NaN
    with pytest.raises(TrainingError, match="step 6"):
        t.train()
    t.close()
    ck = sorted(p.name for p in (t.run_dir / "checkpoints").glob("step-*"))
    assert ck[-1] == "step-00000004"
    end = rows(t.run_dir, "events.jsonl")[-1]
    assert end["kind"] == "end" and end["state"] == "failed" and "step 6" in end["reason"]


def test_nonfinite_loss_under_skip_leaves_parameters_unchanged(workspace, tiny_session):
    t = _trainer(workspace, tiny_session, extra='\n[runtime]\nnonfinite = "skip"\n'.replace("[runtime]\n", ""))
    t.session.runtime.nonfinite = "skip"
    _nan_at(t, 2)
    for _ in range(2):
        t.boundary()
        t.train_step()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train_step()  # NaN: skipped
    for n, p in t.model.named_parameters():
        assert torch.equal(p, before[n]), n
    last = rows(t.run_dir)[-1]
    assert last["step"] == 3 and last["loss"] is None and last["nonfinite"]
    t.train_step()  # training goes on
    assert any(not torch.equal(p, before[n]) for n, p in t.model.named_parameters())
    t.close()
