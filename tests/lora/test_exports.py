"""A LoRA run's exports equal the run's own model: the adapter folder (with its base) and the
merged folder, each loaded fresh through transformers/PEFT, give the logits of the model
`tuneterm eval`/`predict` load from the run's checkpoint — with base weights that a live
`set train_base` started training, and with GPT-2's tied token embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from engine_helpers import run_cli
from tiny_sessions import tiny_session_toml

TEXTS = ["star moon orbit", "oven salt flour", "the goal keeper", "a match in the league"]


def _train(workspace: Path, capsys, name: str, *, model: str, extra: str = "", causal: bool = False) -> Path:
    text = tiny_session_toml(name, seed=3, steps=4, eval_interval=4, checkpoint_interval=0)
    if causal:
        text = text.replace('source = "builtin:tiny-bert"', f'source = "{model}"\ntask = "causal-lm"')
        text = text.replace('source = "builtin:bbc-news"', 'source = "data/lm.jsonl"')
        (workspace / "data").mkdir(exist_ok=True)
        (workspace / "data" / "lm.jsonl").write_text("".join(
            json.dumps({"prompt": f"say {w}", "completion": f" {w} {w}"}) + "\n" for w in TEXTS * 4))
    else:
        text = text.replace('source = "builtin:tiny-bert"', f'source = "{model}"')
    session = workspace / "sessions" / f"{name}.toml"
    session.write_text(text + "\n[lora]\nenabled = true\nr = 4\nalpha = 8\n" + extra)
    ctl = workspace / f"{name}-control.jsonl"  # a live edit: only the edit log knows of it
    base = "embeddings" if causal else "layer.1"
    ctl.write_text(json.dumps({"v": 1, "type": "set", "id": "tb", "values": {"train_base": [base]},
                               "at_step": 2}) + "\n")
    code, out, err = run_cli(["run", str(session), "--control", str(ctl)], capsys)
    assert code == 0, err
    return Path(out.strip())


def _logits(model, tok, causal: bool) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(**tok(t, return_tensors="pt")).logits.float().reshape(-1) for t in TEXTS])


def _exports_equal_the_run(workspace: Path, capsys, tmp_path: Path, run_dir: Path, causal: bool) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tuneterm.engine.predict import load_run

    auto = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    run = load_run(run_dir, workspace, "last")
    ours = _logits(run.model, run.tokenizer, causal)
    for merge in (False, True):
        out = tmp_path / ("merged" if merge else "adapter")
        code, _, err = run_cli(["export", run_dir.name, str(out), "--checkpoint", "last"] + ["--merge"] * merge, capsys)
        assert code == 0, err
        tok = AutoTokenizer.from_pretrained(str(out))
        if merge:
            model = auto.from_pretrained(str(out))
        else:
            base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
            if (out / base).is_dir():  # the base the export wrote beside the adapters
                base_model = auto.from_pretrained(str(out / base))
            else:  # a hub id: its head is sized by whoever loads it
                base_model = auto.from_pretrained(base, **({} if causal else {"num_labels": len(run.label_names)}))
            model = PeftModel.from_pretrained(base_model, str(out))
        theirs = _logits(model, tok, causal)
        assert theirs.shape == ours.shape
        gap = (theirs - ours).abs().max().item()
        assert gap < 1e-5, f"{out.name}: logits differ from the run's model by up to {gap:.3g}"


def test_an_adapter_export_of_a_hub_model_holds_the_base_a_live_edit_trained(workspace, capsys, tmp_path,
                                                                              monkeypatch, tokenizer):
    """A hub base is not copied into the export unless its weights trained; the live
    `set train_base` lives only in the edit log, which the export did not read: the folder
    pointed at the pristine hub base (logits off by 0.40)."""
    import huggingface_hub.constants
    from transformers import BertModel

    from tuneterm.engine.models import _tiny_config

    cache = tmp_path / "hub"
    snapshot = cache / "models--tt--tiny-bert" / "snapshots" / ("0" * 40)
    BertModel(_tiny_config("builtin:tiny-bert", 2, len(tokenizer), tokenizer.pad_token_id)).save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (cache / "models--tt--tiny-bert" / "refs").mkdir()
    (cache / "models--tt--tiny-bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # offline: served from here

    run_dir = _train(workspace, capsys, "hub", model="tt/tiny-bert")
    _exports_equal_the_run(workspace, capsys, tmp_path, run_dir, causal=False)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"


def test_exports_of_a_tied_gpt2_whose_embeddings_trained_equal_the_run(workspace, capsys, tmp_path):
    run_dir = _train(workspace, capsys, "gpt2", model="builtin:tiny-gpt2", causal=True)
    _exports_equal_the_run(workspace, capsys, tmp_path, run_dir, causal=True)
