"""DoRA (`[lora] use_dora = true`) through PEFT: PEFT's trainable parameters, every live LoRA
edit applied and replayed bit for bit, and exports (adapter and --merge) that equal the
run's own model when loaded fresh through transformers/PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_helpers import rows, run_cli, strip_clock
from tiny_sessions import tiny_session_toml

from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.engine import lora

DORA = '\n[lora]\nenabled = true\nr = 4\nalpha = 8\ndropout = 0.1\nuse_dora = true\n'
SCRIPT = [  # every live LoRA edit, and a freeze/unfreeze of a block's adapters
    {"type": "freeze", "id": "fr", "layers": ["layer.0"], "at_step": 2},
    {"type": "set", "id": "dp", "values": {"lora_dropout": 0.3}, "at_step": 3},
    {"type": "set", "id": "tb", "values": {"train_base": ["layer.1"]}, "at_step": 4},
    {"type": "set", "id": "lp", "values": {"lora_lr_ratio": 4.0}, "at_step": 5},
    {"type": "unfreeze", "id": "uf", "layers": ["layer.0"], "at_step": 6},
]
TEXTS = ["star moon orbit", "oven salt flour", "the goal keeper", "a match in the league"]


@pytest.mark.parametrize("source,causal", [("builtin:tiny-bert", False), ("builtin:tiny-llama", True)])
def test_dora_trains_the_parameters_peft_trains(make_session, make_base, source, causal):
    from peft import get_peft_model

    s = make_session(model=source, task="causal-lm" if causal else "sequence-classification", use_dora=True)
    ref = get_peft_model(make_base(source, causal=causal), lora.peft_config(s))
    expected, _ = ref.get_nb_trainable_parameters()
    dctx = drop.DropoutContext(s.session.seed)
    model = lora.attach(make_base(source, causal=causal), s, dctx, "torch")
    assert lora.trainable_count(model) == expected
    magnitudes = [n for n, p in model.named_parameters() if ".lora_magnitude_vector." in n]
    assert magnitudes and all(p.requires_grad for n, p in model.named_parameters() if n in magnitudes)
    groups = L.layer_groups(model)
    assert sum(g.trainable_numel() for g in groups) == expected
    assert all(any(n in g.adapter for g in groups) for n in magnitudes)  # each in its block's adapters
    plain = make_session(model=source, task="causal-lm" if causal else "sequence-classification")
    assert expected > get_peft_model(make_base(source, causal=causal), lora.peft_config(plain)) \
        .get_nb_trainable_parameters()[0]


def _dora_run(workspace: Path, capsys) -> Path:
    session = workspace / "sessions" / "dora.toml"
    session.write_text(tiny_session_toml("dora", seed=3, steps=10, eval_interval=5, checkpoint_interval=4,
                                         keep_last=20) + DORA)
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in SCRIPT))
    code, out, err = run_cli(["run", str(session), "--control", str(ctl)], capsys)
    assert code == 0, err
    return Path(out.strip())


def _logits(model, tok) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(**tok(t, return_tensors="pt")).logits.float().reshape(-1) for t in TEXTS])


def test_a_dora_run_with_live_edits_replays_bit_identically_and_exports_its_model(workspace, capsys, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneterm.engine.predict import load_run

    run_dir = _dora_run(workspace, capsys)
    edits = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "edit"]
    assert [e["edit"]["step"] for e in edits] == [2, 3, 4, 5, 6]
    ckpt = load_file(str(run_dir / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert any(".lora_magnitude_vector." in k for k in ckpt)  # the magnitudes are checkpointed (they train)

    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    assert strip_clock(rows(Path(out.strip()))) == strip_clock(rows(run_dir))

    run = load_run(run_dir, workspace, "last")
    ours = _logits(run.model, run.tokenizer)
    for merge in (False, True):
        out_dir = tmp_path / ("merged" if merge else "adapter")
        code, _, err = run_cli(["export", run_dir.name, str(out_dir), "--checkpoint", "last"] + ["--merge"] * merge,
                               capsys)
        assert code == 0, err
        tok = AutoTokenizer.from_pretrained(str(out_dir))
        if merge:
            model = AutoModelForSequenceClassification.from_pretrained(str(out_dir))
            assert not any("lora_" in n for n, _ in model.named_parameters())
        else:
            assert json.loads((out_dir / "adapter_config.json").read_text())["use_dora"] is True
            model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
                str(out_dir / "base")), str(out_dir))
        assert "- DoRA: r = 4" in (out_dir / "README.md").read_text()
        gap = (_logits(model, tok) - ours).abs().max().item()
        assert gap < 1e-5, f"{out_dir.name}: logits differ from the run's model by up to {gap:.3g}"
