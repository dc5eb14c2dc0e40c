"""benchmarks/distributed_gpu.py (gpu_check.sh's multi-GPU part) here, on the CPU: it skips
with one line below 2 GPUs, and its workspace (a model folder from gpu_e2e's configs, a
word-level tokenizer, text rows) and its session run as they would on the GPUs, so the one
device call does not fail on the script's own logic."""

import importlib.util
import types
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "distributed_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("distributed_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_skips_below_two_gpus(capsys):
    if __import__("torch").cuda.device_count() >= 2:
        pytest.skip("a multi-GPU machine runs the real thing")
    assert _module().main([]) == 0
    assert "multi-GPU part skipped" in capsys.readouterr().out


def test_its_workspace_and_session_train_on_two_processes(tmp_path, monkeypatch):
    mod = _module()
    e2e = mod._gpu_e2e()
    e2e.MODELS["smollm2-135m"] = ("llama", e2e.TINY["llama"])  # the same family, tiny
    monkeypatch.setattr(mod, "_gpu_e2e", lambda: e2e)
    monkeypatch.setattr(mod, "SESSION", mod.SESSION.replace('"cuda"', '"cpu"').replace('"bf16"', '"fp32"')
                        .replace('kernels = "auto"', 'kernels = "torch"'))
    args = types.SimpleNamespace(seq=16, batch_size=4, steps=4)
    ws, folder = mod.workspace(tmp_path, "smollm2-135m", args.seq, 30)
    one, two = mod.side(ws, folder, 1, "ddp", args), mod.side(ws, folder, 2, "ddp", args)
    assert "error" not in one and "error" not in two, (one, two)
    assert len(one["losses"]) == len(two["losses"]) == 4
    for a, b in zip(one["losses"], two["losses"]):
        assert abs(a - b) <= 1e-4 * abs(a)
