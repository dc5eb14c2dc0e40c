"""LoRA sessions end to end: live edits replay bit-identically, kill -9 + --resume equal the
uninterrupted run, a changed base is refused, and the losses are a plain PEFT loop's."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from engine_helpers import kill9_after_checkpoint, rows, run_cli, strip_clock
from safetensors.torch import load_file
from tiny_sessions import tiny_session_toml

LORA = '\n[lora]\nenabled = true\nr = 4\nalpha = 8\ndropout = 0.1\n'

SCRIPT = [
    {"type": "freeze", "id": "fr", "layers": ["layer.0"], "at_step": 2},
    {"type": "set", "id": "dp", "values": {"lora_dropout": 0.3}, "at_step": 3},
    {"type": "set", "id": "tb", "values": {"train_base": ["layer.1"]}, "at_step": 4},
    {"type": "set", "id": "lr", "values": {"learning_rate": 1e-3}, "at_step": 5},
    {"type": "set", "id": "lp", "values": {"lora_lr_ratio": 4.0}, "at_step": 6},
    {"type": "unfreeze", "id": "uf", "layers": ["layer.0"], "at_step": 7},
    {"type": "set", "id": "bad", "values": {"train_base": ["layer.9"]}, "at_step": 8},
]


def _session(workspace: Path, name: str, *, steps: int = 12, extra: str = LORA, model: str = "builtin:tiny-bert",
             checkpoint_interval: int = 4) -> Path:
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(tiny_session_toml(name, model=model, seed=3, steps=steps, eval_interval=6,
                                      checkpoint_interval=checkpoint_interval, keep_last=20, threads=1) + extra)
    # threads = 1: the killed run's subprocess and the in-process runs must use the same
    # thread count (an earlier test may have set this process's), or their sums differ.
    return path


def _steered(workspace: Path, capsys, steps: int = 12) -> Path:
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in SCRIPT))
    code, out, err = run_cli(["run", str(_session(workspace, "lora", steps=steps)), "--control", str(ctl)], capsys)
    assert code == 0, err
    return Path(out.strip())


def test_live_lora_edits_apply_and_replay_bit_identically(workspace, capsys):
    from tuneterm.session.io import load_session

    run_dir = _steered(workspace, capsys)
    edits = load_session(run_dir / "session.toml", workspace).edits
    assert [(e.step, e.set, e.freeze, e.unfreeze) for e in edits] == [
        (2, {}, ["layer.0"], []), (3, {"lora_dropout": 0.3}, [], []), (4, {"train_base": ["layer.1"]}, [], []),
        (5, {"learning_rate": 1e-3}, [], []), (6, {"lora_lr_ratio": 4.0}, [], []), (7, {}, [], ["layer.0"])]
    rejects = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "reject"]
    assert [r["id"] for r in rejects] == ["bad"] and "layer.9" in rejects[0]["reason"]
    # the checkpoint after step 4 holds layer.1's base weights; the one before only adapters
    first, later = (load_file(str(run_dir / "checkpoints" / f"step-{s:08d}" / "model.safetensors")) for s in (4, 8))
    base1 = [k for k in later if ".layer.1." in k and ".lora_" not in k]
    assert base1 and not any(k in first for k in base1)
    assert all(".lora_" in k or ".modules_to_save." in k for k in first)

    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    assert strip_clock(rows(Path(out.strip()))) == strip_clock(rows(run_dir))


def test_kill9_and_resume_equal_the_uninterrupted_lora_run(workspace, capsys):
    reference = _steered(workspace, capsys, steps=40)
    # the steered run's session (with its edit log) again, killed after its checkpoint at step 8
    s = workspace / "sessions" / "again.toml"
    s.write_text((reference / "session.toml").read_text())
    run_dir = kill9_after_checkpoint(workspace, s, 8, timeout=180)
    assert max(r["step"] for r in rows(run_dir) if r["kind"] == "train") < 40
    code, out, err = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert strip_clock(rows(run_dir)) == strip_clock(rows(reference))
    last = lambda d: load_file(str(sorted((d / "checkpoints").glob("step-*"))[-1] / "model.safetensors"))  # noqa: E731
    a, b = last(reference), last(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_against_a_changed_base_is_refused(workspace, capsys, tokenizer):
    from tuneterm.engine.models import build_model

    folder = workspace / "base"
    build_model("builtin:tiny-bert", 5, tokenizer=tokenizer, seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    s = _session(workspace, "fold", steps=4, checkpoint_interval=2)
    s.write_text(s.read_text().replace('source = "builtin:tiny-bert"', f'source = "{folder}"'))
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    # another base under the same path: same architecture and shapes, other weights
    build_model("builtin:tiny-bert", 5, tokenizer=tokenizer, seed=2).save_pretrained(folder)
    capsys.readouterr()  # save_pretrained's progress bar
    code, out, err = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]  # (above it: transformers' progress bar loading the folder)
    assert line.startswith("tuneterm: error: run --resume: the base model is not the one this run trained") and \
        "fingerprint" in line and "Traceback" not in err, err
    # a replay of the run on the changed base would not be the same run either: refused, and
    # (a fresh run's setup failure) no run directory is left behind
    before = sorted(p.name for p in (workspace / "runs").iterdir())
    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 2 and out == "", err
    line = err.strip().splitlines()[-1]
    assert line.startswith("tuneterm: error: replay: the base model is not the one this run trained") and \
        "replay with the same model.source weights" in line and "Traceback" not in err, err
    assert sorted(p.name for p in (workspace / "runs").iterdir()) == before


def test_losses_equal_a_plain_peft_loop(workspace, capsys):
    """lora.dropout = 0, no edits: tuneterm's losses are PEFT's, to fp32 tolerance."""
    from peft import get_peft_model

    from tuneterm.engine import data as D
    from tuneterm.engine import lora
    from tuneterm.engine.runs import create_run
    from tuneterm.engine.tasks import get_task
    from tuneterm.engine.trainer import Trainer
    from tuneterm.session.io import load_session

    extra = LORA.replace("dropout = 0.1", "dropout = 0.0")
    path = _session(workspace, "plain", steps=8, extra=extra)
    # no hidden dropout, a constant learning rate, no decay, no clipping: nothing but AdamW and PEFT
    path.write_text(path.read_text().replace("dropout = 0.1\n", "dropout = 0.0\n").replace(
        'schedule = "linear"', 'schedule = "constant"').replace("warmup_steps = 2", "warmup_steps = 0\ngrad_clip = 0.0")
        .replace("weight_decay = 0.01", "weight_decay = 0.0"))
    session = load_session(path, workspace)
    assert session.hyperparameters.grad_clip == 0.0 and session.lora.dropout == 0.0
    t = Trainer(session, create_run(workspace, session), workspace, sinks=[])
    t.setup()
    t.train()
    ours = [r["loss"] for r in rows(t.run_dir) if r["kind"] == "train"]
    t.cleanup()

    # the plain loop: the same base model, PEFT's get_peft_model, torch's AdamW, the same batches
    task = get_task(session)
    data = task.load_data(session, workspace, t.tokenizer)
    torch.manual_seed(session.session.seed)
    base = task.build_model(session, workspace, t.tokenizer, data)
    for m in base.modules():  # the session's dropout 0 (BERT's config says 0.1)
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for attr in ("dropout_prob", "attention_dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
    torch.manual_seed(session.session.seed)
    model = get_peft_model(base, lora.peft_config(session))
    hp = session.hyperparameters
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.learning_rate,
                            betas=(hp.adam_beta1, hp.adam_beta2), eps=hp.adam_eps, weight_decay=0.0)
    model.train()
    order = D.epoch_order(session.session.seed, 0, len(data.train))
    ref = []
    for step in range(8):
        batch = task.collate(data.train, order[step * 8:(step + 1) * 8], torch.device("cpu"))
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        ref.append(float(loss.detach()))
    assert len(ours) == 8 and len(set(ours)) > 4  # it trained
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(ref), rtol=1e-5, atol=1e-6)
