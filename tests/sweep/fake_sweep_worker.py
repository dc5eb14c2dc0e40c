"""A torch-free worker for sweep driver tests (the worker contract of docs/architecture.md,
reduced): trains `max_steps` fake steps, evaluates every `evaluation.interval_steps` with
val_loss = a pure function of (learning_rate, step), obeys `stop` on stdin, and fails like
a diverging run (non-finite loss) when learning_rate > 0.05. A step takes
$SWEEP_FAKE_STEP_S seconds (0.02 unless set in the daemon's environment)."""

import json
import math
import os
import queue
import sys
import threading
import time
import tomllib
from pathlib import Path


def main() -> int:
    run_dir = Path(sys.argv[1])
    cfg = tomllib.loads((run_dir / "session.toml").read_text())
    hp = cfg.get("hyperparameters", {})
    total = int(hp.get("max_steps", 10))
    every = int(cfg.get("evaluation", {}).get("interval_steps", 0)) or total
    lr = float(hp.get("learning_rate", 1e-3))
    box: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [box.put(json.loads(x)) for x in sys.stdin if x.strip()], daemon=True).start()
    mf = open(run_dir / "metrics.jsonl", "a")
    ef = open(run_dir / "events.jsonl", "a")

    def out(msg):
        try:
            sys.stdout.write(json.dumps({"v": 1, **msg}) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass

    def row(f, r):
        r = {**r, "time": time.time()}
        f.write(json.dumps(r) + "\n")
        f.flush()
        out({"type": "metric" if f is mf else "event", "data": r})

    row(ef, {"kind": "start", "step": 0, "total_steps": total})
    step = 0
    while step < total:
        while not box.empty():
            msg = box.get()
            out({"type": "ack", "id": msg.get("id"), "step": step})
            if msg.get("type") in ("stop", "pause"):
                state = "stopped" if msg["type"] == "stop" else "paused"
                row(ef, {"kind": "end", "step": step, "state": state})
                return 0 if state == "stopped" else 75
        time.sleep(float(os.environ.get("SWEEP_FAKE_STEP_S", "0.02")))
        step += 1
        if lr > 0.05 and step == 2:
            row(ef, {"kind": "error", "step": step, "message": "loss is nan"})
            row(ef, {"kind": "end", "step": step, "state": "failed", "reason": "non-finite loss"})
            return 1
        row(mf, {"kind": "train", "step": step, "epoch": step / total, "loss": 1.0 / step, "lr": lr})
        if step % every == 0 or step == total:
            val = 1.0 + abs(math.log10(lr) + 3.0) / 3.0 + 1.0 / (step + 1)
            row(mf, {"kind": "eval", "step": step, "epoch": step / total, "val_loss": val,
                     "val_accuracy": 0.5, "val_f1": 0.5})
    row(ef, {"kind": "end", "step": step, "state": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
