"""Sweeps search the adapters' r, alpha and dropout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweep"))
from sweep_helpers import BASE, sweep_text  # noqa: E402

from tuneterm.session.problems import SessionError  # noqa: E402
from tuneterm.sweep.spec import load_sweep  # noqa: E402
from tuneterm.sweep.trial import trial_session  # noqa: E402

SPACE = """\
lora_r = { choices = [4, 8, 16] }
lora_alpha = { low = 4.0, high = 32.0, log = true }
lora_dropout = { low = 0.0, high = 0.3 }
"""
LORA = "[lora]\nenabled = true\n\n"


def _write(ws, text, name="sl.toml"):
    p = ws / "sessions" / name
    p.write_text(text.replace("[sweep]\n", LORA + "[sweep]\n") if "enabled = false" not in text else text)
    return p


def test_lora_knobs_are_searched(workspace):
    sw = load_sweep(_write(workspace, sweep_text(name="sl", space=SPACE)), workspace)
    assert sw.space["lora_r"].choices == [4, 8, 16] and sw.space["lora_alpha"].log
    t = trial_session(sw, {"lora_r": 16, "lora_alpha": 8.0, "lora_dropout": 0.2}, 1)
    assert (t.lora.r, t.lora.alpha, t.lora.dropout) == (16, 8.0, 0.2) and t.lora.enabled


def test_lora_knobs_checked_against_the_schema(workspace):
    text = sweep_text(name="sl", space="lora_dropout = { low = 0.0, high = 1.5 }\n")
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, text), workspace)
    assert "sweep.space.lora_dropout.high" in str(e.value)


def test_lora_knobs_need_lora_enabled(workspace):
    text = BASE.format(name="sn", trials=4, steps=6, sampler="random", extra="", space="lora_r = { low = 2, high = 8 }\n")
    p = workspace / "sessions" / "sn.toml"
    p.write_text(text)
    with pytest.raises(SessionError) as e:
        load_sweep(p, workspace)
    assert "sweep.space.lora_r" in str(e.value) and "no LoRA adapters" in str(e.value)
