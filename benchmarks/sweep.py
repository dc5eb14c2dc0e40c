"""Sweep benchmark (issue 6, "Performance"): prints figures, asserts nothing.

    python benchmarks/sweep.py [--trials 16] [--steps 30] [--eval 5] [--sampler tpe] [--device cpu|cuda]
                               [--parallel N] [--part all|sweep|executors]

The same search (same base session, space, sampler and seed) on a tiny BERT, run twice by
`tuneterm sweep` in fresh temporary workspaces, each with its own daemon: once with the
median pruner, once without. For each it prints the wall time, trials finished per minute,
the optimizer steps trained in all, how many trials were pruned, and the best objective.
Wall time includes each trial's worker start-up (a fresh Python with torch: seconds on a
CPU), which pruning does not save; the steps column shows the training it does save.

Then the executor overhead: the same tiny sessions (one at a time) through a daemon with
the local executor and through one with the Ray executor (`address = "local"`: a one-node
Ray the daemon starts; its start is timed apart). Per session it prints the start-up (from
`queue add` to the first training step's row) and the mean time per step, whose
difference between the two is what an actor and its relayed pipes cost.

    python benchmarks/sweep.py --part executors [--sessions 4] [--session-steps 60]
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

# The runner benchmark's tiny session (benchmarks/ is on sys.path when this runs as a script).
from runner import SESSION

from tuneterm.rundir import RunDir, read_jsonl

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
parallel = {parallel}
seed = 0

[sweep.space]
learning_rate = {{ low = 1e-6, high = 1e-1, log = true }}
dropout = {{ low = 0.0, high = 0.3 }}
weight_decay = {{ low = 1e-4, high = 1e-1, log = true }}
batch_size = {{ choices = [8, 16] }}
"""


def kill_daemon(ws: Path) -> None:
    """A daemon that did not stop when asked (the benchmark must not leave one behind)."""
    pid = ws / ".tuneterm" / "daemon.pid"
    if pid.exists():
        try:
            os.kill(int(pid.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def run_one(args, pruner: str) -> dict:
    base = Path(tempfile.mkdtemp(prefix="tt-bench-"))
    ws = base / "ws"
    (ws / "sessions").mkdir(parents=True)
    (ws / ".tuneterm").mkdir()
    (ws / ".tuneterm" / "config.toml").write_text(f"[runner]\nslots = {args.parallel}\n")
    env = dict(os.environ, TUNETERM_RUNTIME_DIR=str(base / "r"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TUNETERM_HOME=str(ws))
    f = ws / "sessions" / "bench.toml"
    f.write_text(BASE.format(eval=args.eval, device=args.device, trials=args.trials, steps=args.steps,
                             sampler=args.sampler, pruner=pruner, parallel=args.parallel))
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
            rows = read_jsonl(RunDir(ws / "runs" / (t["run_id"] or "-")).metrics)
            steps += max([x["step"] for x in rows if x.get("kind") == "train"] or [0])
        done = sum(1 for t in info["trials"] if t["state"] in ("COMPLETE", "PRUNED", "FAIL"))
        return {"pruner": pruner, "wall_s": wall, "trials": done, "per_min": 60 * done / wall,
                "steps": steps, "pruned": info["counts"].get("PRUNED", 0),
                "best": (info["best"] or {}).get("value")}
    finally:
        subprocess.run([sys.executable, "-m", "tuneterm", "daemon", "stop", "--workspace", str(ws)],
                       capture_output=True, env=env, timeout=120)
        kill_daemon(ws)
        shutil.rmtree(base, ignore_errors=True)




def run_executor(args, kind: str) -> dict:
    """``--sessions`` sessions one after another through a daemon with executor ``kind``."""
    from tuneterm.runner.client import RunnerClient

    base = Path(tempfile.mkdtemp(prefix="ttb-", dir="/tmp"))
    ws = base / "ws"
    (ws / "sessions").mkdir(parents=True)
    (ws / ".tuneterm").mkdir()
    cfg = '[runner]\nslots = 1\n'
    if kind == "ray":
        cfg += (f'executor = "ray"\n\n[runner.ray]\naddress = "local"\ntemp_dir = "{base}/ray"\n'
                f'gpus_per_session = {1 if args.device == "cuda" else 0}\n')
    (ws / ".tuneterm" / "config.toml").write_text(cfg)
    old = {k: os.environ.get(k) for k in ("TUNETERM_RUNTIME_DIR", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(TUNETERM_RUNTIME_DIR=str(base / "r"), RAY_USAGE_STATS_ENABLED="0")
    c = None
    try:
        t0 = time.perf_counter()
        c = RunnerClient.connect(ws, timeout=60.0)
        daemon_s = time.perf_counter() - t0
        starts, steps = [], []
        for i in range(args.sessions):
            f = ws / "sessions" / f"s{i}.toml"
            f.write_text(SESSION.format(name=f"s{i}", steps=args.session_steps, device=args.device,
                                        kernels="torch", threads=1))
            t_add = time.time()
            s = c.add(f, check=False)
            deadline = time.monotonic() + 600
            while (st := c.get(s["id"]))["state"] not in ("done", "failed", "cancelled"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{kind}: session s{i} did not finish")
                time.sleep(0.1)
            if st["state"] != "done":
                raise SystemExit(f"{kind}: session s{i} {st['state']}: {st.get('error')}")
            rows = read_jsonl(RunDir(s["run_dir"]).metrics)
            times = [r["time"] for r in rows if r.get("kind") == "train"]
            starts.append(times[0] - t_add)
            steps.append((times[-1] - times[0]) / (len(times) - 1))  # rows carry ms-rounded clocks
        return {"executor": kind, "daemon_s": daemon_s, "startup_s": sorted(starts)[len(starts) // 2],
                "startup_all": starts, "step_ms": 1000 * sorted(steps)[len(steps) // 2]}
    finally:
        if c is not None:
            try:
                c.shutdown()
            except Exception:
                pass
            c.close()
        time.sleep(0.5)
        kill_daemon(ws)
        if kind == "ray":
            from tuneterm.runner.ray_executor import stop_local_head

            stop_local_head(ws)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)


def executors(args) -> None:
    print(f"# executors: {args.sessions} sessions x {args.session_steps} steps, one at a time, device {args.device}")
    res = [run_executor(args, "local"), run_executor(args, "ray")]
    print(f"{'executor':<9} {'daemon up s':>11} {'start-up s (median)':>20} {'per step ms':>21}  start-ups")
    for r in res:
        print(f"{r['executor']:<9} {r['daemon_s']:>11.2f} {r['startup_s']:>20.2f} {r['step_ms']:>21.2f}  "
              + " ".join(f"{x:.2f}" for x in r["startup_all"]))
    a, b = res
    print(f"ray overhead per session: start-up +{b['startup_s'] - a['startup_s']:.2f} s, "
          f"per step {b['step_ms'] - a['step_ms']:+.2f} ms ({b['step_ms'] / a['step_ms']:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--eval", type=int, default=5)
    ap.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--parallel", type=int, default=1, help="[sweep] parallel and the runner's slots (sweep part)")
    ap.add_argument("--part", default="all", choices=("all", "sweep", "executors"))
    ap.add_argument("--sessions", type=int, default=4, help="sessions per executor (--part executors)")
    ap.add_argument("--session-steps", type=int, default=60, help="steps per session (--part executors)")
    args = ap.parse_args()
    if args.part in ("all", "executors"):
        executors(args)
    if args.part == "executors":
        return
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"device {args.device}; {args.trials} trials x {args.steps} steps, eval every {args.eval}, "
          f"sampler {args.sampler}, {args.parallel} trial(s) at once")
    results = [run_one(args, "median"), run_one(args, "none")]
    print(f"{'pruner':<8} {'wall s':>8} {'trials/min':>10} {'steps trained':>13} {'pruned':>6} {'best val_loss':>13}")
    for r in results:
        best = f"{r['best']:.4f}" if r["best"] is not None else "-"
        print(f"{r['pruner']:<8} {r['wall_s']:>8.1f} {r['per_min']:>10.2f} {r['steps']:>13} {r['pruned']:>6} {best:>13}")
    a, b = results
    print(f"pruning: {b['steps'] / max(1, a['steps']):.2f}x fewer steps, {a['per_min'] / b['per_min']:.2f}x the trials/min")


if __name__ == "__main__":
    main()
