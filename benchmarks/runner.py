"""Runner benchmarks (issue 4, "Performance"): prints figures, asserts nothing.

    python benchmarks/runner.py [--steps 300] [--edits 20] [--sessions 1000] [--device cpu|cuda]

1. Training throughput of the same tiny session under the daemon *with a client
   subscribed* against `tuneterm run` alone (target >= 0.98x). Steps/s are taken from the
   train rows' wall-clock times (first to last row), so process start-up is not counted.
2. Edit latency: `set learning_rate` through the socket to a running session, time until
   the worker's ack, in ms and in optimizer steps (ack step - the newest step in the run's
   metrics.jsonl when it was sent; 1 = applied at the next step boundary).
3. `queue ls` with N queued sessions (target < 100 ms): the client's `list_sessions()`
   and the whole `tuneterm queue ls` process.

Everything runs in a temporary workspace with its own daemon, killed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tuneterm.rundir import RunDir, read_jsonl, read_tail_rows

SESSION = """\
[session]
name = "{name}"
seed = 1

[model]
source = "builtin:tiny-bert"

[data]
source = "builtin:bbc-news"
max_length = 32
max_samples = 512
max_eval_samples = 32

[hyperparameters]
learning_rate = 1e-3
batch_size = 16
max_steps = {steps}
schedule = "linear"
warmup_steps = 2

[evaluation]
interval_steps = 0

[checkpoint]
interval_steps = 0

[runtime]
device = "{device}"
kernels = "{kernels}"
threads = {threads}
"""


def _rate(run_dir: Path, skip: int = 5) -> float:
    rows = read_jsonl(RunDir(run_dir).metrics)
    train = [r for r in rows if r["kind"] == "train"][skip:]
    return (train[-1]["step"] - train[0]["step"]) / (train[-1]["time"] - train[0]["time"])


def _newest_step(run_dir: Path) -> int:
    for row in reversed(read_tail_rows(RunDir(run_dir).metrics, 4096)):
        if row.get("kind") == "train":
            return row["step"]
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--kernels", default="torch", choices=("auto", "torch", "triton"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (0: torch's default)")
    ap.add_argument("--parts", default="throughput,edits,ls", help="comma-separated subset to run")
    ap.add_argument("--repeats", type=int, default=3, help="throughput runs of each kind, alternated")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    base = Path(tempfile.mkdtemp(prefix="ttb-", dir="/tmp"))
    os.environ["TUNETERM_RUNTIME_DIR"] = str(base / "r")
    ws = base / "ws"
    (ws / "sessions").mkdir(parents=True)
    env = {**os.environ, "TUNETERM_HOME": str(ws)}

    from tuneterm.runner.client import RunnerClient

    def session(name: str, steps: int) -> Path:
        p = ws / "sessions" / f"{name}.toml"
        p.write_text(SESSION.format(name=name, steps=steps, device=args.device, kernels=args.kernels,
                                   threads=args.threads))
        return p

    client = None
    med = statistics.median
    print(f"## Runner ({platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"device {args.device}, kernels {args.kernels}, threads {args.threads}, {args.steps} steps)\n")
    print("| measure | value | target |")
    print("| --- | --- | --- |", flush=True)

    def row(measure: str, value: str, target: str = "") -> None:
        print(f"| {measure} | {value} | {target} |", flush=True)

    try:
        # 1. throughput: alternate the two kinds so that a change in the machine's load
        # hits both alike.
        alone, daemon, daemon_cpu = [], [], []
        client = RunnerClient.connect(ws)
        dpid = client.daemon["pid"]
        for i in range(args.repeats if "throughput" in parts else 0):
            out = subprocess.run([sys.executable, "-m", "tuneterm", "run", str(session(f"alone{i}", args.steps)),
                                  "--workspace", str(ws)], env=env, capture_output=True, text=True, check=True)
            alone.append(_rate(Path(out.stdout.strip().splitlines()[-1])))
            cpu0 = _cpu_s(dpid)
            s = client.add(session(f"daemon{i}", args.steps), check=False)
            msgs: list = []
            sub = RunnerClient.connect(ws)
            t = threading.Thread(target=lambda: msgs.extend(sub.subscribe(s["id"])), daemon=True)
            t.start()
            t.join(600)  # the stream ends with the session (no polling: it would cost the daemon CPU)
            if client.get(s["id"])["state"] != "done":
                raise SystemExit(f"the daemon's run ended {client.get(s['id'])['state']}")
            sub.close()
            daemon.append(_rate(Path(s["run_dir"])))
            daemon_cpu.append(_cpu_s(dpid) - cpu0)
        if "throughput" in parts:
            ratio = med(daemon) / med(alone)
            row(f"steps/s, `tuneterm run` alone (median of {args.repeats}; all: "
                f"{', '.join(f'{x:.1f}' for x in alone)})", f"{med(alone):.1f}")
            row(f"steps/s, under the daemon with a subscriber (median of {args.repeats}; all: "
                f"{', '.join(f'{x:.1f}' for x in daemon)})", f"{med(daemon):.1f}")
            row("ratio daemon / alone (medians)", f"{ratio:.3f}", ">= 0.98")
            per_step_ms = 1000 * med(daemon_cpu) / args.steps
            row("daemon CPU per streamed step (subscriber attached)", f"{per_step_ms:.2f} ms")
            row("upper bound of the slowdown on a saturated CPU (daemon CPU / step time alone)",
                f"{per_step_ms / (1000 / med(alone)):.1%}")

        # 2. edit latency ----------------------------------------------------------------
        if "edits" in parts:
            s = client.add(session("edits", 10_000_000), check=False)
            seen = {"step": 0}
            sub = RunnerClient.connect(ws)

            def follow():
                for m in sub.subscribe(s["id"], history=False):
                    if m["type"] == "metric" and m["data"].get("kind") == "train":
                        seen["step"] = m["data"]["step"]

            threading.Thread(target=follow, daemon=True).start()
            _wait(lambda: seen["step"] >= 10, 300, "the edit session to train")
            lat_ms, lat_steps = [], []
            for i in range(args.edits):
                before = _newest_step(Path(s["run_dir"]))  # the worker's own record, not the stream's
                t0 = time.perf_counter()
                ans = client.control(s["id"], {"type": "set", "values": {"learning_rate": 1e-3 * (1 + i % 2) / 2}})
                lat_ms.append((time.perf_counter() - t0) * 1000)
                if ans["type"] == "ack":
                    lat_steps.append(ans["step"] - before)
                time.sleep(0.05)
            sub.close()
            row(f"edit -> ack latency, median (n={len(lat_ms)})", f"{med(lat_ms):.1f} ms")
            row("edit -> ack latency, max", f"{max(lat_ms):.1f} ms")
            row("edit -> ack, steps after send, median / max",
                f"{med(lat_steps)} / {max(lat_steps)}" if lat_steps else "-")
            client.cancel(s["id"])
            _wait(lambda: client.get(s["id"])["state"] == "cancelled", 120, "the edit session to stop")

        # 3. queue ls with N sessions ----------------------------------------------------
        if "ls" in parts:
            client.shutdown()
            client.close()
            (ws / ".tuneterm" / "config.toml").write_text("[runner]\nslots = 0\n")
            client = RunnerClient.connect(ws)
            small = session("queued", 10)
            t0 = time.perf_counter()
            for _ in range(args.sessions):
                client.add(small, check=False)
            add_ms = (time.perf_counter() - t0) * 1000 / args.sessions
            row("`queue add` (no check), per session", f"{add_ms:.1f} ms")
            ls_client = []
            for _ in range(10):
                t0 = time.perf_counter()
                rows = client.list_sessions()
                ls_client.append((time.perf_counter() - t0) * 1000)
            ls_cli = []
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "tuneterm", "queue", "ls", "--workspace", str(ws)], env=env,
                               capture_output=True, check=True)
                ls_cli.append((time.perf_counter() - t0) * 1000)
            row(f"`list_sessions()` with {len(rows)} sessions, median of 10", f"{med(ls_client):.1f} ms", "< 100 ms")
            row(f"`tuneterm queue ls` process with {len(rows)} sessions, median of 5", f"{med(ls_cli):.0f} ms")

    finally:
        if client is not None:
            client.close()
        pid_file = ws / ".tuneterm" / "daemon.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for d in Path("/proc").iterdir():  # workers of this workspace, by pid
            if d.name.isdigit():
                try:
                    if str(ws) in (d / "cmdline").read_bytes().decode(errors="replace"):
                        os.kill(int(d.name), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
