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


WORDS = "red green blue cat dog sun moon tree river stone bird fish".split()


def _cuda_lm_session(workspace: Path, name: str, kernels: str, runtime: str = "") -> Path:
    """A tiny-Llama SFT session on CUDA (its own data: 40 three-word chats)."""
    import json

    lines = [json.dumps({"messages": [{"role": "user", "content": f"Repeat: {WORDS[i % 12]} {WORDS[(i * 5) % 12]}"},
                                      {"role": "assistant", "content": f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]}"}]})
             for i in range(40)]
    (workspace / "chat.jsonl").write_text("\n".join(lines) + "\n")
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(f"""\
[session]
name = "{name}"
seed = 4

[model]
source = "builtin:tiny-llama"
task = "causal-lm"

[data]
source = "chat.jsonl"
max_length = 48
validation_split = 0.2
packing = true

[hyperparameters]
learning_rate = 3e-3
batch_size = 4
max_steps = 10
dropout = 0.1
warmup_steps = 1

[evaluation]
interval_steps = 5
samples = 1
max_new_tokens = 4

[runtime]
device = "cuda"
kernels = "{kernels}"
{runtime}
""")
    return path


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_deterministic_causal_lm_replays_bit_identically(workspace, capsys, monkeypatch):
    """[runtime] deterministic = true: replay --check passes bit for bit on the same GPU
    (bf16 autocast, the Triton kernels, the fused linear cross-entropy)."""
    from engine_helpers import strip_clock

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    s = _cuda_lm_session(workspace, "det", "triton", 'precision = "bf16"\ndeterministic = true')
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err
    assert strip_clock(rows(Path(out.strip()))) == strip_clock(rows(run_dir))


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_causal_lm_triton_and_torch_train_to_the_same_losses(workspace, capsys, monkeypatch):
    """bf16 autocast: the two kernel sets differ by bf16 rounding only (2 % per step)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    losses = []
    for impl in ("torch", "triton"):
        code, out, err = run_cli(["run", str(_cuda_lm_session(workspace, impl, impl, 'precision = "bf16"'))], capsys)
        assert code == 0, err
        losses.append([r["loss"] for r in rows(Path(out.strip())) if r["kind"] == "train"])
    assert len(losses[0]) == len(losses[1]) == 10
    for a, b in zip(*losses):
        assert math.isfinite(b) and abs(a - b) <= 0.02 * abs(a), (a, b)
