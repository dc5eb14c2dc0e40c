"""End to end: the same tiny session with the Triton kernels (interpreter) and with PyTorch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli

pytest.importorskip("triton")

SMALL = """
[freeze]
layers = ["embeddings"]
"""


def _both_kernels(session: Path, capsys, *args: str) -> tuple[list[dict], list[dict]]:
    """The train and eval rows of ``tuneterm run`` with --kernels torch, then triton."""
    out_rows = []
    for impl in ("torch", "triton"):
        code, out, err = run_cli(["run", str(session), "--kernels", impl, *args], capsys)
        assert code == 0, err
        run_dir = Path(out.strip())
        assert rows(run_dir, "events.jsonl")[0]["kernels"] == impl
        out_rows.append([r for r in rows(run_dir) if r["kind"] in ("train", "eval")])
    return out_rows[0], out_rows[1]


def test_triton_and_torch_kernels_write_the_same_metrics(workspace, tiny_session, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    a, b = _both_kernels(tiny_session(extra=SMALL), capsys, "--max-steps", "4")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 4]
    # Step 1 sees identical weights and identical dropout masks: the loss is bit-identical.
    assert a[0]["loss"] == b[0]["loss"]
    for ra, rb in zip(a, b):
        for key in ("loss", "val_loss", "lr"):
            if key in ra:
                # AdamW differs only by fp32 rounding (fused vs per-tensor arithmetic).
                assert math.isclose(ra[key], rb[key], rel_tol=1e-5, abs_tol=1e-7), (ra["step"], key, ra[key], rb[key])


def test_triton_without_cuda_or_interpreter_is_a_clear_error(workspace, tiny_session, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    code, _, err = run_cli(["run", str(tiny_session()), "--kernels", "triton", "--max-steps", "3"], capsys)
    assert code == 2
    assert "CUDA" in err and "Traceback" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_triton_and_torch_kernels_agree(workspace, tiny_session, capsys, monkeypatch):
    """On a GPU: the compiled Triton kernels and the PyTorch path train the same tiny run."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    a, b = _both_kernels(tiny_session(extra=SMALL), capsys, "--device", "cuda", "--max-steps", "6")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert len(a) >= 6
    # Same weights and the same Philox masks at step 1: only float rounding may differ.
    assert math.isclose(a[0]["loss"], b[0]["loss"], rel_tol=1e-6), (a[0]["loss"], b[0]["loss"])
    for ra, rb in zip(a, b):
        for key in ("loss", "val_loss", "lr"):
            if key in ra:
                assert math.isfinite(rb[key])
                assert math.isclose(ra[key], rb[key], rel_tol=1e-4, abs_tol=1e-6), (ra["step"], key, ra[key], rb[key])


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_run_with_triton_kernels_trains(workspace, tiny_session, capsys, monkeypatch):
    """bf16 parameters with fp32 master weights in the flat AdamW: the run trains and
    tracks the PyTorch path to bf16 precision."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    s = tiny_session(extra=SMALL)
    text = s.read_text().replace('source = "builtin:tiny-bert"', 'source = "builtin:tiny-bert"\ndtype = "bfloat16"', 1)
    s.write_text(text)
    a, b = (
        [r for r in rows_ if r["kind"] == "train"]
        for rows_ in _both_kernels(s, capsys, "--device", "cuda", "--max-steps", "8"))
    assert len(a) == len(b) == 8
    assert all(math.isfinite(r["loss"]) for r in a + b)
    assert abs(a[0]["loss"] - b[0]["loss"]) <= 0.02 * abs(a[0]["loss"])
    assert abs(a[-1]["loss"] - b[-1]["loss"]) <= 0.1 * abs(a[-1]["loss"])
