"""LoRA+ (`lora_lr_ratio`) on the flat optimizer: the Triton kernels (the default on CUDA;
here through the interpreter) and bf16 parameters train with a ratio set in the file, in
the edit log and live, and agree with the torch optimizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli
from tiny_sessions import tiny_session_toml

LORA = '\n[lora]\nenabled = true\nr = 4\nalpha = 8\ndropout = 0.0\nlr_ratio = 2.0\n'
RECORDED = '\n[[edits]]\nstep = 2\nset = { lora_lr_ratio = 4.0 }\n'


def _session(workspace: Path, name: str, *, dtype: str = "float32") -> Path:
    text = tiny_session_toml(name, seed=3, steps=4, eval_interval=4, checkpoint_interval=0)
    text = text.replace('source = "builtin:tiny-bert"', f'source = "builtin:tiny-bert"\ndtype = "{dtype}"')
    # the interpreter is slow: no dropout kernels (the optimizer is what is tested), few eval rows
    text = text.replace("max_eval_samples = 32", "max_eval_samples = 8").replace("dropout = 0.1", "dropout = 0.0")
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(text + LORA + RECORDED)
    return path


def _run(session: Path, capsys, *args: str) -> Path:
    ctl = session.parent / f"{session.stem}-control.jsonl"
    ctl.write_text(json.dumps({"v": 1, "type": "set", "id": "lp", "values": {"lora_lr_ratio": 8.0},
                               "at_step": 3}) + "\n")
    code, out, err = run_cli(["run", str(session), "--control", str(ctl), *args], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    events = rows(run_dir, "events.jsonl")
    assert [e["edit"]["set"] for e in events if e["kind"] == "edit"] == [{"lora_lr_ratio": 4.0},
                                                                          {"lora_lr_ratio": 8.0}]
    assert not [e for e in events if e["kind"] == "reject"] and events[-1]["state"] == "done"
    return run_dir


def test_lora_lr_ratio_on_the_triton_optimizer_equals_the_torch_one(workspace, capsys, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    session = _session(workspace, "flat")
    code, _, err = run_cli(["validate", str(session)], capsys)
    assert code == 0, err
    a = [r for r in rows(_run(session, capsys, "--kernels", "torch")) if r["kind"] == "train"]
    b = [r for r in rows(_run(session, capsys, "--kernels", "triton")) if r["kind"] == "train"]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):  # fused torch AdamW vs the flat kernel: fp32 rounding only
        assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-5), (ra["step"], ra["loss"], rb["loss"])


def test_lora_lr_ratio_with_bf16_parameters_trains(workspace, capsys):
    """bf16 parameters keep fp32 masters in the flat optimizer: LoRA+ works there too
    (`validate` passed this session, and `run` refused it at setup)."""
    session = _session(workspace, "bf16", dtype="bfloat16")
    code, _, err = run_cli(["validate", str(session)], capsys)
    assert code == 0, err
    run_dir = _run(session, capsys)
    assert all(math.isfinite(r["loss"]) for r in rows(run_dir) if r["kind"] == "train")
