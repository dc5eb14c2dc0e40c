"""`tuneterm export`: a Hugging Face folder that transformers loads with no tuneterm code,
giving the same predictions and probabilities as `tuneterm predict`; refused and atomic."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from results_helpers import LABELS
from engine_helpers import run_cli

# Runs in a fresh interpreter with tuneterm off the path: only transformers and torch.
LOADER = r"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
folder, texts_file = sys.argv[1], sys.argv[2]
texts = json.load(open(texts_file))
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
probs = []
with torch.no_grad():
    for t in texts:
        enc = tok(t, truncation=True, return_tensors="pt")
        probs.append(torch.softmax(model(**enc).logits.float(), -1)[0].tolist())
pipe = pipeline("text-classification", model=folder, device="cpu")
labels = [r["label"] for r in pipe(texts, truncation=True, batch_size=4)]
print(json.dumps({"id2label": {str(k): v for k, v in model.config.id2label.items()}, "probs": probs,
                  "pipeline": labels, "tuneterm_loaded": any(m.startswith("tuneterm") for m in sys.modules)}))
"""


def _texts(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [r["text"] for r in csv.DictReader(fh)]


def test_export_round_trip_without_tuneterm(run_a, results_ws, tmp_path, capsys):
    out = tmp_path / "exported"
    code, stdout, err = run_cli(["-w", str(results_ws), "export", run_a.name, str(out)], capsys)
    assert code == 0, err
    assert Path(stdout.strip()) == out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "session.toml", "tokenizer_config.json"} <= names
    assert not any(n.endswith(".bin") or n.endswith(".pkl") for n in names)

    preds = tmp_path / "preds.jsonl"
    test_csv = results_ws / "data" / "test.csv"
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(test_csv)))
    code, _, err = run_cli(["-w", str(results_ws), "predict", run_a.name, str(jsonl), "--probs",
                            "--out", str(preds)], capsys)
    assert code == 0, err
    ours = [json.loads(x) for x in preds.read_text().splitlines()]

    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(_texts(test_csv)))
    res = subprocess.run([sys.executable, "-c", LOADER, str(out), str(texts_file)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    assert theirs["tuneterm_loaded"] is False
    assert theirs["id2label"] == {str(i): name for i, name in enumerate(LABELS)}  # the CSV's label names
    assert len(theirs["probs"]) == len(ours) == 21
    for row, p in zip(ours, theirs["probs"]):
        assert [row["probs"][name] for name in LABELS] == pytest.approx(p, abs=1e-5)
    assert theirs["pipeline"] == [row["prediction"] for row in ours]


def test_model_card_names_base_data_edits_metrics_version(run_b, results_ws, tmp_path, capsys):
    from tuneterm import __version__

    out = tmp_path / "b"
    code, _, err = run_cli(["-w", str(results_ws), "export", run_b.name, str(out), "--checkpoint", "step-8"], capsys)
    assert code == 0, err
    card = (out / "README.md").read_text()
    assert "builtin:tiny-bert" in card and "data/train.csv" in card and "data/val.csv" in card
    assert "step 4: learning_rate = 0.001" in card  # the edit log
    evals = {r["step"]: r for r in map(json.loads, (run_b / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "eval"}
    assert f"| val_loss | {evals[8]['val_loss']:.4f} |" in card  # the metrics at that checkpoint
    assert f"tuneterm {__version__}" in card and "checkpoint `step-00000008`" in card
    assert (out / "session.toml").read_text() == (run_b / "session.toml").read_text()
    assert json.loads((out / "config.json").read_text())["label2id"] == {n: i for i, n in enumerate(LABELS)}


def test_export_refuses_a_non_empty_target_unless_forced(run_a, results_ws, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["-w", str(results_ws), "export", run_a.name, str(out)], capsys)
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code, _, err = run_cli(["-w", str(results_ws), "export", run_a.name, str(out), "--force"], capsys)
    assert code == 0, err
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()


def test_a_failure_midway_leaves_nothing(run_a, results_ws, tmp_path, capsys, monkeypatch):
    from tuneterm.engine import export

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(export, "model_card", broken)  # after the weights and tokenizer are written
    out = tmp_path / "parent" / "out"
    with pytest.raises(OSError, match="simulated"):
        run_cli(["-w", str(results_ws), "export", run_a.name, str(out)], capsys)
    assert not out.exists()
    assert list((tmp_path / "parent").iterdir()) == []  # no temporary folder left either


def test_export_bad_checkpoint_and_merge_are_one_line_errors(run_a, results_ws, tmp_path, capsys):
    for extra, needle in ((["--checkpoint", "step-999"], "no checkpoint at step 999"),
                          (["--checkpoint", "newest"], "expected best, last or step-N"),
                          (["--merge"], "LoRA")):
        code, _, err = run_cli(["-w", str(results_ws), "export", run_a.name, str(tmp_path / "x"), *extra], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x").exists()
