"""benchmarks/gpu_e2e.py on the CPU (--cpu-smoke: tiny models, every side that imports
here), so the GPU session's one call does not fail on a bug in the script's own logic."""

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_e2e.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_e2e", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_importable_and_the_default_plan_covers_the_issue():
    mod = _module()
    rows = mod.plan(mod.parse_args([]))
    models = {r[0] for r in rows}
    assert models == set(mod.MODELS)
    assert {r[1] for r in rows if r[0] != "bert-base"} >= {1024, 2048}
    assert {"tt-triton", "tt-torch", "hf", "liger"} <= {s for r in rows for s in r[4]}
    assert {"peft", "trl"} <= {s for r in rows if r[3] == "lora" for s in r[4]}
    assert mod.plan(mod.parse_args(["--cpu-smoke"]))  # a smoke plan exists
    assert mod.main(["--no-max-batch"]) == 2 or __import__("torch").cuda.is_available()  # refuses the CPU


@pytest.mark.slow
def test_cpu_smoke_runs_every_side(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, env={**__import__("os").environ,
                                                                          "TRITON_INTERPRET": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "gpu_e2e.csv")))
    ran = {(row["model"], row["mode"], row["side"]) for row in rows if row["tokens_s"]}
    for side in ("tt-triton", "tt-torch", "hf"):
        assert ("smollm2-135m", "full", side) in ran and ("bert-base", "full", side) in ran
    assert ("smollm2-135m", "lora", "tt-torch") in ran and ("smollm2-135m", "lora", "peft") in ran
    failed = [row for row in rows if row["error"] and not row["error"].startswith("skipped")]
    assert not failed, failed
    assert (tmp_path / "gpu_e2e.md").read_text().startswith("# Whole-step benchmark")


def test_the_tuneterm_sides_time_the_trainers_task_loss(monkeypatch, tmp_path):
    """A benchmark times what ships: the tt- sides compute each step's loss with the task
    the trainer uses (engine/tasks: CausalLMTask.loss, the fused linear cross-entropy over
    the trained positions; SequenceClassificationTask.loss), not a loss of their own."""
    from tuneterm.engine.tasks.causal_lm import CausalLMTask
    from tuneterm.engine.tasks.classification import SequenceClassificationTask

    calls = []
    for cls in (CausalLMTask, SequenceClassificationTask):
        real = cls.loss
        monkeypatch.setattr(cls, "loss", lambda self, model, batch, real=real: calls.append(self.name)
                            or real(self, model, batch))
    mod = _module()
    ctx = mod.Ctx(mod.parse_args(["--cpu-smoke", "--steps", "1", "--warmup", "0"]), tmp_path)
    for name, mode in (("smollm2-135m", "full"), ("smollm2-135m", "lora"), ("bert-base", "full")):
        row = mod.measure("tt-torch", name, 16, 2, mode, ctx)
        assert "error" not in row and row["tokens_s"] > 0, row
    assert calls == ["causal-lm", "causal-lm", "sequence-classification"]
