"""One session on 1 process x 2 threads against 2 processes x 1 thread (DDP and FSDP2 on
gloo), on this CPU, and the cost of the per-boundary control broadcast.

    python benchmarks/distributed_cpu.py                 # tiny-llama, 12 steps, 3 repeats
    python benchmarks/distributed_cpu.py --steps 30 --batch-size 16 --repeats 5

Each side is `tuneterm run` in its own subprocess on a throwaway workspace; the sides run
one after the other in each repeat, the first side rotating per repeat, and the table gives
each side's median with the per-repeat speed-ups against 1 x 2 (paired: this machine is
shared and noisy). samples/s:
steps 2..N from the metrics rows' own clocks (step 1 warms up; setup, evaluation and
checkpoints outside the window). Peak RSS: the largest process of the side (for 2
processes, the larger rank; RUSAGE_CHILDREN's maximum). Broadcast: the mean time of one
`Strategy.broadcast` of an empty message list in a 2-rank gloo group (what every step
boundary costs when no control message is due), against the side's mean step time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/ holds a script named kernels.py: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SESSION = """\
[session]
name = "bench"
seed = 1
[model]
source = "builtin:tiny-llama"
task = "causal-lm"
[data]
source = "chat.jsonl"
max_length = 64
validation_split = 0.1
[hyperparameters]
batch_size = {batch}
max_steps = {steps}
dropout = 0.1
[evaluation]
interval_steps = 0
samples = 0
[checkpoint]
interval_steps = 0
[runtime]
device = "cpu"
kernels = "torch"
threads = {threads}
[distributed]
strategy = "{strategy}"
"""


def _workspace(root: Path, batch: int, steps: int, threads: int, strategy: str) -> Path:
    ws = root / f"ws-{threads}-{strategy}"
    (ws / "sessions").mkdir(parents=True)
    (ws / "runs").mkdir()
    words = "red green blue cat dog sun moon tree river stone bird fish".split()
    rows = [{"messages": [{"role": "user", "content": "Repeat: " + " ".join(words[(i + k) % 12] for k in range(6))},
                          {"role": "assistant", "content": " ".join(words[(i * 5 + k) % 12] for k in range(6))}]}
            for i in range(400)]
    (ws / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ws / "sessions" / "bench.toml").write_text(SESSION.format(batch=batch, steps=steps, threads=threads,
                                                               strategy=strategy))
    return ws


def side(root: Path, processes: int, threads: int, strategy: str, batch: int, steps: int) -> dict:
    ws = _workspace(root / f"p{processes}", batch, steps, threads, strategy)
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    env = {**os.environ, "TUNETERM_HOME": str(ws), "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "tuneterm", "run", "sessions/bench.toml",
                        "--processes", str(processes)], cwd=ws, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{processes} processes: {r.stderr[-2000:]}")
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    train = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in train if x["kind"] == "train"]
    span = train[-1]["time"] - train[0]["time"]
    return {"processes": processes, "threads": threads, "strategy": strategy, "samples_per_s": round(batch * (len(train) - 1) / span, 2),
            "step_ms": round(1000 * span / (len(train) - 1), 1), "peak_rss_mb": int(r.stderr.split()[-1]) // 1024,
            "last_loss": train[-1]["loss"]}


def _broadcast_rank(n: int) -> float:
    import torch

    from tuneterm.engine.strategy import DDP

    s = DDP("gloo", torch.device("cpu"))
    s.broadcast([])
    t0 = time.perf_counter()
    for _ in range(n):
        s.broadcast([])
    dt = (time.perf_counter() - t0) / n
    s.close()
    return dt


def broadcast_us(n: int = 500) -> float:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="bench", rdzv_backend="c10d",
                       rdzv_endpoint="localhost:0", max_restarts=0)
    out = elastic_launch(cfg, _broadcast_rank)(n)
    return 1e6 * max(out.values())


SIDES = ((1, 2, "ddp"), (2, 1, "ddp"), (2, 1, "fsdp"))  # processes, threads, strategy (1 process: no strategy)


def main() -> int:
    import statistics

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    got: dict = {sd: [] for sd in SIDES}
    for rep in range(args.repeats):
        order = SIDES[rep % len(SIDES):] + SIDES[:rep % len(SIDES)]
        for sd in order:
            with tempfile.TemporaryDirectory() as tmp:
                got[sd].append(side(Path(tmp), *sd, args.batch_size, args.steps))
    bc = broadcast_us()
    base = got[SIDES[0]]
    print("| processes x threads | strategy | samples/s (median) | speed-up vs 1 x 2, per repeat | step ms "
          "| peak RSS MB (largest process) | last loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (p, t, strat), runs in got.items():
        ratios = [r["samples_per_s"] / b["samples_per_s"] for r, b in zip(runs, base)]
        med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
        print(f"| {p} x {t} | {strat if p > 1 else '-'} | {med('samples_per_s'):.2f} | "
              f"{', '.join(f'{x:.2f}x' for x in ratios)} | {med('step_ms'):.1f} | {int(med('peak_rss_mb'))} "
              f"| {runs[0]['last_loss']:.6f} |")
    step = statistics.median(r["step_ms"] for r in got[SIDES[1]])
    print(f"\nper-boundary broadcast (empty): {bc:.0f} us = {100 * bc / (1000 * step):.2f} % of a 2-process "
          "DDP step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
