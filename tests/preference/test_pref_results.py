"""What a preference run leaves behind: `eval` on a file of pairs equals the run's own
evaluation (reward accuracy and margin against its reference), `predict` completes each
row's prompt, `export` writes the policy (or, under LoRA, its adapter), `compare` shows
the new metrics; a LoRA preference run takes live LoRA edits, a freeze and a beta edit,
and `tuneterm layers` lists its adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli
from pref_helpers import pair_records, pref_session, write_pairs

LORA = "[lora]\nenabled = true\nr = 4\nalpha = 8\ndropout = 0.0\n"
METRICS = ("loss", "reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "logps_chosen",
           "logps_rejected")


def _run(workspace: Path, name: str, capsys, control: list | None = None, **kw) -> Path:
    write_pairs(workspace / "val.jsonl", pair_records(8)[::-1])
    s = pref_session(workspace, name, **kw)
    s.write_text(s.read_text().replace("validation_split = 0.2", 'validation = "val.jsonl"'))
    argv = ["run", str(s)]
    if control:
        ctl = workspace / f"{name}.control.jsonl"
        ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in control))
        argv += ["--control", str(ctl)]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    return Path(out.strip())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_eval_on_a_file_of_pairs_equals_the_run_s_own_evaluation(workspace, capsys, lora):
    run = _run(workspace, "ev", capsys, steps=4, dropout=0.0, lora=LORA if lora else "")
    code, out, err = run_cli(["eval", run.name, str(workspace / "val.jsonl"), "--checkpoint", "last", "--json"],
                             capsys)
    assert code == 0, err
    res = json.loads(out)
    own = [r for r in rows(run) if r["kind"] == "eval" and r["step"] == res["step"]][0]
    assert res["examples"] == 8 and res["reference"] == "frozen-copy"
    for k in METRICS:
        assert res[k] == pytest.approx(own[f"val_{k}"], rel=1e-5, abs=1e-6), k
    code, out, err = run_cli(["eval", run.name, str(workspace / "val.jsonl"), "--checkpoint", "last"], capsys)
    assert code == 0 and "reward_accuracy" in out.splitlines()[1]


def test_predict_export_and_compare(workspace, capsys, tmp_path):
    run = _run(workspace, "full", capsys, steps=4)
    preds = tmp_path / "preds.jsonl"
    code, _, err = run_cli(["predict", run.name, str(workspace / "val.jsonl"), "--max-new-tokens", "4",
                            "--out", str(preds)], capsys)
    assert code == 0, err
    out_rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(out_rows) == 8 and all(isinstance(r["output"], str) and "chosen" in r for r in out_rows)
    code, _, err = run_cli(["predict", run.name, str(workspace / "val.jsonl"), "--probs"], capsys)
    assert code == 2 and "--probs applies to classification runs only" in err

    folder = tmp_path / "policy"
    code, _, err = run_cli(["export", run.name, str(folder)], capsys)
    assert code == 0, err
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "- task: preference" in card and "val_reward_accuracy" in card
    from transformers import AutoModelForCausalLM

    assert type(AutoModelForCausalLM.from_pretrained(folder)).__name__ == "LlamaForCausalLM"

    other = _run(workspace, "other", capsys, steps=4, preference="sft_weight = 0.1")
    code, out, err = run_cli(["compare", run.name, other.name, "--json"], capsys)
    assert code == 0, err
    cmp = json.loads(out)
    text = json.dumps(cmp)
    assert "val_reward_accuracy" in text and "preference.sft_weight" in text


def test_a_lora_preference_run_takes_lora_edits_a_freeze_and_exports_its_adapter(workspace, capsys, tmp_path):
    script = [{"type": "set", "id": "ld", "values": {"lora_dropout": 0.2, "beta": 0.2}, "at_step": 2},
              {"type": "freeze", "id": "fr", "layers": ["layer.0"], "at_step": 3},
              {"type": "set", "id": "tb", "values": {"train_base": ["layer.1"]}, "at_step": 3}]
    run = _run(workspace, "lora", capsys, steps=6, lora=LORA, control=script)
    ev = rows(run, "events.jsonl")
    rejects = [e for e in ev if e["kind"] == "reject"]
    assert len(rejects) == 1 and 'reference = "auto" under LoRA' in rejects[0]["reason"]  # train_base: refused
    assert [e["edit"]["step"] for e in ev if e["kind"] == "edit"] == [2, 3]
    start = next(e for e in ev if e["kind"] == "start")
    assert start["reference"] == "adapters-off"

    code, out, err = run_cli(["layers", str(workspace / "sessions" / "lora.toml"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["lora"] is True

    folder = tmp_path / "adapter"
    code, _, err = run_cli(["export", run.name, str(folder)], capsys)
    assert code == 0, err
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 4
