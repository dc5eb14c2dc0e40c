"""A tiny-Llama SFT session through the trainer: live edits replay bit-identically (samples
included), kill -9 + --resume equals the uninterrupted run (packing on and off), and
gradient checkpointing changes nothing (bit-identical on the CPU in fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_helpers import assert_same_weights, kill9_after_checkpoint, rows, run_cli, strip_clock

WORDS = "red green blue cat dog sun moon tree river stone bird fish".split()


def _data(workspace: Path) -> None:
    lines = []
    for i in range(40):
        a, b, c = WORDS[i % 12], WORDS[(i * 5 + 1) % 12], WORDS[(i * 7 + 3) % 12]
        msgs = [{"role": "user", "content": f"Repeat: {a} {b} {c}"}, {"role": "assistant", "content": f"{a} {b} {c}"}]
        if i % 3 == 0:
            msgs += [{"role": "user", "content": "Reverse it."}, {"role": "assistant", "content": f"{c} {b} {a}"}]
        lines.append(json.dumps({"messages": msgs}))
    (workspace / "chat.jsonl").write_text("\n".join(lines) + "\n")


def lm_session(workspace: Path, name: str, *, steps: int = 12, packing: bool = False, extra: str = "") -> Path:
    _data(workspace)
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(f"""\
[session]
name = "{name}"
seed = 4

[model]
source = "builtin:tiny-llama"
task = "causal-lm"

[data]
source = "chat.jsonl"
max_length = 48
validation_split = 0.2
packing = {str(packing).lower()}

[hyperparameters]
learning_rate = 3e-3
batch_size = 4
max_steps = {steps}
dropout = 0.1
warmup_steps = 1

[evaluation]
interval_steps = 4
samples = 2
max_new_tokens = 6

[checkpoint]
interval_steps = 2
keep_last = 20

[runtime]
device = "cpu"
kernels = "torch"
threads = 1
{extra}""")
    return path


SCRIPT = [
    {"type": "set", "id": "lr", "values": {"learning_rate": 1e-3}, "at_step": 2},
    {"type": "set", "id": "dp", "values": {"dropout": 0.3}, "at_step": 3},
    {"type": "freeze", "id": "fr", "layers": ["embeddings", "layer.0"], "at_step": 4},
    {"type": "set", "id": "bs", "values": {"batch_size": 2}, "at_step": 5},
    {"type": "unfreeze", "id": "uf", "layers": ["layer.0"], "at_step": 7},
]


def test_steered_sft_replays_bit_identically_with_samples(workspace, capsys):
    s = lm_session(workspace, "sft")
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in SCRIPT))
    code, out, err = run_cli(["run", str(s), "--control", str(ctl)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    ev = rows(run_dir, "events.jsonl")
    assert not [e for e in ev if e["kind"] == "reject"]
    start = next(e for e in ev if e["kind"] == "start")
    assert start["task"] == "causal-lm" and start["format"] == "messages" and start["no_trained_tokens"] == 0
    evals = [r for r in rows(run_dir) if r["kind"] == "eval"]
    assert evals and all({"val_loss", "val_perplexity", "val_token_accuracy"} <= r.keys() for r in evals)
    samples = rows(run_dir, "samples.jsonl")
    assert [r["step"] for r in samples] == [4, 4, 8, 8, 12, 12]
    assert all(r.keys() == {"step", "prompt", "reference", "output"} for r in samples)

    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    replay = Path(out.strip())
    assert strip_clock(rows(replay)) == strip_clock(rows(run_dir))
    assert rows(replay, "samples.jsonl") == samples
    assert_same_weights(run_dir, replay)


@pytest.mark.parametrize("packing", [False, True])
def test_kill9_then_resume_equals_uninterrupted(workspace, capsys, packing):
    s = lm_session(workspace, f"kill-{packing}", steps=16, packing=packing)
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    reference = Path(out.strip())
    run_dir = kill9_after_checkpoint(workspace, s, 6)
    assert max(r["step"] for r in rows(run_dir) if r["kind"] == "train") < 16
    code, _, err = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert strip_clock(rows(run_dir)) == strip_clock(rows(reference))
    assert rows(run_dir, "samples.jsonl") == rows(reference, "samples.jsonl")
    assert_same_weights(run_dir, reference)


def test_gradient_checkpointing_is_bit_identical(workspace, capsys):
    runs = []
    for on in (False, True):
        s = lm_session(workspace, f"gc-{on}", steps=6, packing=True,
                       extra=f"gradient_checkpointing = {str(on).lower()}\n")
        code, out, err = run_cli(["run", str(s)], capsys)
        assert code == 0, err
        runs.append(Path(out.strip()))
    a, b = runs
    losses = [r["loss"] for r in rows(a) if r["kind"] == "train"]
    assert len(set(losses)) > 3  # it trained, with dropout on
    assert strip_clock(rows(a)) == strip_clock(rows(b))
    assert_same_weights(a, b)


def test_a_packed_run_replays_bit_identically(workspace, capsys):
    s = lm_session(workspace, "packed", steps=8, packing=True)
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    start = next(e for e in rows(run_dir, "events.jsonl") if e["kind"] == "start")
    assert start["packed_rows"] < start["train_examples"] and start["padding_packed"] < start["padding_unpacked"]
    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    replay = Path(out.strip())
    assert strip_clock(rows(replay)) == strip_clock(rows(run_dir))
    assert rows(replay, "samples.jsonl") == rows(run_dir, "samples.jsonl")
    assert_same_weights(run_dir, replay)


# The training loss goes through the fused linear cross-entropy (chunks of logits, never
# the whole [trained tokens x vocab] block): the plain logits -> cross_entropy loss and
# gradients to fp32 tolerance, tied head included.
@pytest.mark.parametrize("all_tokens", [False, True], ids=["completion", "all-tokens"])
@pytest.mark.parametrize("model", ["builtin:tiny-llama", "builtin:tiny-gpt2"])  # GPT-2 ties its head
def test_the_fused_training_loss_equals_the_plain_one(workspace, monkeypatch, all_tokens, model):
    from tuneterm_kernels import linear_ce

    from tuneterm.engine.runs import create_run
    from tuneterm.engine.trainer import Trainer
    from tuneterm.session.io import load_session

    path = lm_session(workspace, "fused", steps=2)
    path.write_text(path.read_text().replace('source = "builtin:tiny-llama"', f'source = "{model}"'))
    if all_tokens:  # train on every token: the case the fusion is for
        path.write_text(path.read_text().replace('source = "chat.jsonl"', 'source = "chat.jsonl"\nloss_on = "all"'))
    s = load_session(path, workspace)
    t = Trainer(s, create_run(workspace, s), workspace, sinks=[])
    t.setup()
    calls = []
    real = linear_ce.linear_cross_entropy
    monkeypatch.setattr(linear_ce, "linear_cross_entropy", lambda *a, **k: calls.append(k) or real(*a, **k))
    model, task = t.model, t.task
    model.eval()  # no dropout: the two losses see the same activations
    batch = task.collate(t.data.train, list(range(4)), t.device)
    params = [p for p in model.parameters() if p.requires_grad]

    fused = task.loss(model, batch)
    g_fused = torch.autograd.grad(fused, params)
    assert calls and calls[0]["impl"] == "torch"  # the fused path was taken (CPU)
    logits, targets = task.token_logits(model, batch)
    plain = torch.nn.functional.cross_entropy(logits, targets)
    g_plain = torch.autograd.grad(plain, params)
    assert targets.numel() > (40 if all_tokens else 4)
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (model.config.model_type == "gpt2")  # tied: the fused gradient adds to the embedding's
    t.cleanup()
