"""LoRA runs: the export is a PEFT adapter folder (plus its base), or with --merge a plain
model; both give `tuneterm predict`'s probabilities when loaded with no tuneterm code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from engine_helpers import run_cli
from results_helpers import LABELS

LOADER = r"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, kind, texts = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
tok = AutoTokenizer.from_pretrained(folder)
if kind == "peft":
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(folder + "/base"), folder)
else:
    model = AutoModelForSequenceClassification.from_pretrained(folder)
model.eval()
with torch.no_grad():
    probs = [torch.softmax(model(**tok(t, truncation=True, return_tensors="pt")).logits.float(), -1)[0].tolist()
             for t in texts]
print(json.dumps({"probs": probs, "tuneterm_loaded": any(m.startswith("tuneterm") for m in sys.modules)}))
"""


def _predict(ws, run, tmp_path, capsys) -> tuple[list, list]:
    texts = [f"{a} {b}" for a, b in (("star", "moon"), ("oven", "salt"), ("goal", "keeper"), ("the", "ball"))]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    code, out, err = run_cli(["-w", str(ws), "predict", run.name, str(src), "--probs"], capsys)
    assert code == 0, err
    return texts, [[json.loads(x)["probs"][n] for n in LABELS] for x in out.splitlines()]


def _load(folder, kind, texts, tmp_path) -> dict:
    tf = tmp_path / f"texts-{kind}.json"
    tf.write_text(json.dumps(texts))
    res = subprocess.run([sys.executable, "-c", LOADER, str(folder), kind, str(tf)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tuneterm_loaded"] is False
    return out


def test_lora_adapter_folder_through_peft(lora_run, results_ws, tmp_path, capsys):
    out = tmp_path / "adapter"
    code, _, err = run_cli(["-w", str(results_ws), "export", lora_run.name, str(out)], capsys)
    assert code == 0, err
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "session.toml"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["base_model_name_or_path"] == "base"
    assert json.loads((out / "base" / "config.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(LABELS)}
    assert "library_name: peft" in (out / "README.md").read_text()
    texts, ours = _predict(results_ws, lora_run, tmp_path, capsys)
    theirs = _load(out, "peft", texts, tmp_path)
    for a, b in zip(ours, theirs["probs"]):
        assert a == pytest.approx(b, abs=1e-5)


def test_lora_merge_is_a_plain_model(lora_run, results_ws, tmp_path, capsys):
    out = tmp_path / "merged"
    code, _, err = run_cli(["-w", str(results_ws), "export", lora_run.name, str(out), "--merge"], capsys)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names and "base" not in names
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any("lora_" in k or "base_model.model" in k for k in keys)
    texts, ours = _predict(results_ws, lora_run, tmp_path, capsys)
    theirs = _load(out, "plain", texts, tmp_path)
    for a, b in zip(ours, theirs["probs"]):
        assert a == pytest.approx(b, abs=1e-5)
