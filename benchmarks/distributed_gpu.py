"""DDP and FSDP2 scaling on the GPUs of one machine: the same session on 1 GPU, then on
every GPU with `strategy = "ddp"` and with `strategy = "fsdp"` (gpu_check.sh's multi-GPU
part; it prints one line and exits 0 on a machine with fewer than 2 GPUs).

    python benchmarks/distributed_gpu.py                     # SmolLM2-135M-shaped, seq 1024
    python benchmarks/distributed_gpu.py --model qwen2.5-0.5b --steps 20 --batch-size 32

The model is built from gpu_e2e.py's configs (random weights, no hub) and saved with a
word-level tokenizer into a throwaway workspace; the data are rows of random words, one
text record a row, every row max_length tokens. Each side is `tuneterm run --processes N`
in its own subprocess, bf16 autocast, Triton kernels, `batch_size` the global batch (so
every side trains the same units). Per side: samples/s over steps 3..N from the metrics
rows' own clocks (setup, the first steps' warm-up and the end checkpoint outside the
window), scaling = samples/s over the 1-GPU side's, and the largest relative difference of
the per-step losses from the 1-GPU run's (a session means the same run at any process
count; bf16 on GPUs agrees to ~1e-2, not the CPU's 1e-4).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ holds a script named kernels.py: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

SESSION = """\
[session]
name = "bench"
seed = 1
[model]
source = "{model}"
task = "causal-lm"
[data]
source = "text.jsonl"
max_length = {seq}
validation_split = 0.02
[hyperparameters]
batch_size = {batch}
max_steps = {steps}
dropout = 0.0
[evaluation]
interval_steps = 0
samples = 0
[checkpoint]
interval_steps = 0
[runtime]
device = "cuda"
kernels = "auto"
precision = "bf16"
[distributed]
strategy = "{strategy}"
"""


def _gpu_e2e():
    spec = importlib.util.spec_from_file_location("gpu_e2e", ROOT / "benchmarks" / "gpu_e2e.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def workspace(root: Path, model: str, seq: int, rows: int) -> tuple[Path, Path]:
    """A workspace with the model saved as a folder and ``rows`` text records."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    e2e = _gpu_e2e()
    net = e2e.build(model, False, torch.float32)
    vocab = net.config.vocab_size
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1", unk_token="t0")
    ws = root / "ws"
    (ws / "sessions").mkdir(parents=True)
    (ws / "runs").mkdir()
    folder = ws / "model"  # a session's model folder lies inside its workspace
    net.save_pretrained(folder)
    fast.save_pretrained(folder)
    rng = random.Random(0)
    with open(ws / "text.jsonl", "w") as fh:
        for _ in range(rows):
            fh.write(json.dumps({"text": " ".join(f"t{rng.randrange(2, vocab)}" for _ in range(seq))}) + "\n")
    return ws, folder


def side(ws: Path, folder: Path, processes: int, strategy: str, args) -> dict:
    name = f"p{processes}-{strategy}"
    (ws / "sessions" / f"{name}.toml").write_text(SESSION.format(
        model=folder, seq=args.seq, batch=args.batch_size, steps=args.steps, strategy=strategy))
    # The repository root on the path: the device machine runs from a checkout, not an install.
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "TUNETERM_HOME": str(ws), "PYTHONPATH": path}
    r = subprocess.run([sys.executable, "-m", "tuneterm", "run", f"sessions/{name}.toml", "--processes",
                        str(processes)], cwd=ws, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return {"side": name, "error": (r.stderr.strip().splitlines() or ["?"])[-1][:200]}
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    train = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in train if x["kind"] == "train"]
    window = train[2:]
    span = window[-1]["time"] - window[0]["time"]
    return {"side": name, "processes": processes, "strategy": strategy,
            "samples_per_s": round(args.batch_size * (len(window) - 1) / span, 1),
            "losses": [x["loss"] for x in train]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="a gpu_e2e.py model name")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16, help="the global batch (every side)")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args(argv)
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        print(f"multi-GPU part skipped: {n} GPU(s) on this machine (DDP/FSDP2 scaling needs 2 or more)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        ws, folder = workspace(Path(tmp), args.model, args.seq, args.batch_size * (args.steps + 2))
        rows = [side(ws, folder, 1, "ddp", args), side(ws, folder, n, "ddp", args), side(ws, folder, n, "fsdp", args)]
    base = rows[0].get("samples_per_s")
    print(f"{args.model}, seq {args.seq}, global batch {args.batch_size}, {n} GPUs "
          f"({torch.cuda.get_device_name(0)}), bf16, {args.steps} steps")
    print("| side | samples/s | scaling vs 1 GPU | max rel. loss diff vs 1 GPU |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['side']} | failed: {r['error']} | | |")
            continue
        scale = f"{r['samples_per_s'] / base:.2f}x" if base else "-"
        diff = "-"
        if "losses" in rows[0] and r is not rows[0]:
            diff = f"{max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(rows[0]['losses'], r['losses'])):.1e}"
        print(f"| {r['side']} | {r['samples_per_s']} | {scale} | {diff} |")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
