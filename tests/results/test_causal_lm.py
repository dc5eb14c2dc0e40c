"""Causal-LM runs: eval gives the run's own evaluation; predict's greedy completions equal
transformers' greedy generate() on the exported folder, loaded with no tuneterm code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from engine_helpers import run_cli

LOADER = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts, n = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
outs = []
with torch.no_grad():
    for p in prompts:
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
        outs.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
print(json.dumps({"outputs": outs, "chat_template": bool(tok.chat_template),
                  "tuneterm_loaded": any(m.startswith("tuneterm") for m in sys.modules)}))
"""


def test_eval_equals_the_runs_own_evaluation(lm_run, results_ws, capsys):
    code, out, err = run_cli(["-w", str(results_ws), "eval", lm_run.name, str(results_ws / "data" / "lm-val.jsonl"),
                              "--checkpoint", "last", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    own = [r for r in map(json.loads, (lm_run / "metrics.jsonl").read_text().splitlines())
           if r["kind"] == "eval" and r["step"] == res["step"]][0]
    assert res["loss"] == pytest.approx(own["val_loss"], rel=1e-6)
    assert res["perplexity"] == pytest.approx(own["val_perplexity"], rel=1e-6)
    assert res["token_accuracy"] == own["val_token_accuracy"]
    assert res["examples"] == 10


def test_export_and_greedy_generate_give_predicts_text(lm_run, results_ws, tmp_path, capsys):
    out = tmp_path / "lm"
    code, _, err = run_cli(["-w", str(results_ws), "export", lm_run.name, str(out)], capsys)
    assert code == 0, err
    assert "pipeline_tag: text-generation" in (out / "README.md").read_text()
    src = results_ws / "data" / "lm-test.jsonl"
    preds = tmp_path / "preds.jsonl"
    code, _, err = run_cli(["-w", str(results_ws), "predict", lm_run.name, str(src), "--max-new-tokens", "6",
                            "--out", str(preds)], capsys)
    assert code == 0, err
    ours = [json.loads(x) for x in preds.read_text().splitlines()]
    inputs = [json.loads(x) for x in src.read_text().splitlines()]
    assert [{k: r[k] for k in ("prompt", "completion")} for r in ours] == inputs  # the input's own keys kept
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([r["prompt"] for r in inputs]))
    res = subprocess.run([sys.executable, "-c", LOADER, str(out), str(prompts), "6"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    assert theirs["tuneterm_loaded"] is False and theirs["chat_template"] is True
    assert theirs["outputs"] == [r["output"] for r in ours]


def test_predict_lm_bad_input(lm_run, results_ws, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Say red:", "n": 1}\n')
    code, out, err = run_cli(["-w", str(results_ws), "predict", lm_run.name, str(bad)], capsys)
    assert code == 0, err  # a prompt needs no reference completion
    (row,) = [json.loads(x) for x in out.splitlines()]
    assert row["n"] == 1 and isinstance(row["output"], str)
    bad.write_text('{"prompt": "Say red:"}\n{"prompt": 3}\n')
    code, _, err = run_cli(["-w", str(results_ws), "predict", lm_run.name, str(bad)], capsys)
    assert code == 2 and "bad.jsonl:2: prompt: expected a string" in err, err
    bad.write_text('{"question": "x"}\n')
    code, _, err = run_cli(["-w", str(results_ws), "predict", lm_run.name, str(bad)], capsys)
    assert code == 2 and "cannot tell the format" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["-w", str(results_ws), "predict", lm_run.name, str(results_ws / "data" / "lm-test.jsonl"),
                            "--probs"], capsys)
    assert code == 2 and "--probs" in err
