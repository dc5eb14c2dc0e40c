"""Sweep benchmark (issue 6, "Performance"): prints figures, asserts nothing.

    python benchmarks/sweep.py [--trials 16] [--steps 30] [--eval 5] [--sampler tpe] [--device cpu|cuda]

The same search (same base session, space, sampler and seed) on a tiny BERT, run twice by
`tuneterm sweep` in fresh temporary workspaces, each with its own daemon: once with the
median pruner, once without. For each it prints the wall time, trials finished per minute,
the optimizer steps trained in all, how many trials were pruned, and the best objective.
Wall time includes each trial's worker start-up (a fresh Python with torch: seconds on a
CPU), which pruning does not save; the steps column shows the training it does save.

The Ray executor's overhead (the other half of the issue's figures) is not measured here:
there is no Ray executor yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = """\
[session]
name = "bench"
seed = 1

[model]
source = "builtin:tiny-bert"

[data]
source = "builtin:bbc-news"
max_length = 32
max_samples = 256
max_eval_samples = 64

[hyperparameters]
learning_rate = 1e-3
batch_size = 16

[evaluation]
interval_steps = {eval}

[checkpoint]
interval_steps = 0

[runtime]
kernels = "torch"
device = "{device}"
threads = 1

[sweep]
objective = "val_loss"
trials = {trials}
max_steps = {steps}
sampler = "{sampler}"
pruner = "{pruner}"
pruner_startup_trials = 2
seed = 0

[sweep.space]
learning_rate = {{ low = 1e-6, high = 1e-1, log = true }}
dropout = {{ low = 0.0, high = 0.3 }}
weight_decay = {{ low = 1e-4, high = 1e-1, log = true }}
batch_size = {{ choices = [8, 16] }}
"""


def run_one(args, pruner: str) -> dict:
    base = Path(tempfile.mkdtemp(prefix="tt-bench-"))
    ws = base / "ws"
    (ws / "sessions").mkdir(parents=True)
    env = dict(os.environ, TUNETERM_RUNTIME_DIR=str(base / "r"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TUNETERM_HOME=str(ws))
    f = ws / "sessions" / "bench.toml"
    f.write_text(BASE.format(eval=args.eval, device=args.device, trials=args.trials, steps=args.steps,
                             sampler=args.sampler, pruner=pruner))
    try:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "tuneterm", "sweep", str(f), "--json", "--workspace", str(ws)],
                           capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if r.returncode not in (0, 1):
            raise SystemExit(f"sweep failed ({pruner}): {r.stderr[-2000:]}")
        info = json.loads(r.stdout)
        steps = 0
        for t in info["trials"]:
            run = ws / "runs" / (t["run_id"] or "-")
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if run.exists() else []
            steps += max([x["step"] for x in rows if x.get("kind") == "train"] or [0])
        done = sum(1 for t in info["trials"] if t["state"] in ("COMPLETE", "PRUNED", "FAIL"))
        return {"pruner": pruner, "wall_s": wall, "trials": done, "per_min": 60 * done / wall,
                "steps": steps, "pruned": info["counts"].get("PRUNED", 0),
                "best": (info["best"] or {}).get("value")}
    finally:
        subprocess.run([sys.executable, "-m", "tuneterm", "daemon", "stop", "--workspace", str(ws)],
                       capture_output=True, env=env, timeout=120)
        pid = ws / ".tuneterm" / "daemon.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--eval", type=int, default=5)
    ap.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"device {args.device}; {args.trials} trials x {args.steps} steps, eval every {args.eval}, "
          f"sampler {args.sampler}")
    results = [run_one(args, "median"), run_one(args, "none")]
    print(f"{'pruner':<8} {'wall s':>8} {'trials/min':>10} {'steps trained':>13} {'pruned':>6} {'best val_loss':>13}")
    for r in results:
        best = f"{r['best']:.4f}" if r["best"] is not None else "-"
        print(f"{r['pruner']:<8} {r['wall_s']:>8.1f} {r['per_min']:>10.2f} {r['steps']:>13} {r['pruned']:>6} {best:>13}")
    a, b = results
    print(f"pruning: {b['steps'] / max(1, a['steps']):.2f}x fewer steps, {a['per_min'] / b['per_min']:.2f}x the trials/min")


if __name__ == "__main__":
    main()
