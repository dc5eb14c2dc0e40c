"""A stand-in worker obeying docs/architecture.md's worker contract, without torch.

    python fake_worker.py RUN_DIR [--resume]

Reads RUN_DIR/session.toml ([hyperparameters] max_steps, [checkpoint] interval_steps and an
optional [fake] table: step_s = seconds per step, crash_at = exit -9 style at that step),
writes metrics/events rows (loss is a pure function of the step), checkpoints as
checkpoints/step-NNNNNNNN/state.json, answers control messages on stdin at step
boundaries, pauses on SIGTERM (exit 75), holds an flock on RUN_DIR/.lock (exit 73).
"""

import fcntl
import json
import os
import queue
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path


def main() -> int:
    run_dir = Path(sys.argv[1])
    resume = "--resume" in sys.argv
    lock = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 73
    cfg = tomllib.loads((run_dir / "session.toml").read_text())
    hp, fake = cfg.get("hyperparameters", {}), cfg.get("fake", {})
    total = int(hp.get("max_steps", 20))
    interval = int(cfg.get("checkpoint", {}).get("interval_steps", 5))
    step_s = float(fake.get("step_s", 0.01))
    crash_at = fake.get("crash_at")
    fail_at = fake.get("fail_at")
    lr = float(hp.get("learning_rate", 1e-3))
    mailbox: queue.Queue = queue.Queue()

    def pump():
        for line in sys.stdin:
            try:
                mailbox.put(json.loads(line))
            except ValueError:
                pass

    threading.Thread(target=pump, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *a: mailbox.put({"type": "pause", "id": "signal"}))

    def out(msg):
        try:
            sys.stdout.write(json.dumps({"v": 1, **msg}) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass

    ck = run_dir / "checkpoints"
    step = 0
    if resume and ck.is_dir():
        steps = [int(p.name[5:]) for p in ck.iterdir() if (p / "state.json").exists()]
        if steps:
            step = max(steps)
            for name in ("metrics.jsonl", "events.jsonl"):
                p = run_dir / name
                if p.exists():
                    keep = [ln for ln in p.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
                    tmp = p.with_suffix(".tmp")
                    tmp.write_text("".join(ln + "\n" for ln in keep))
                    os.replace(tmp, p)
    mf = open(run_dir / "metrics.jsonl", "a")
    ef = open(run_dir / "events.jsonl", "a")

    def event(row):
        row = {**row, "time": time.time()}
        ef.write(json.dumps(row) + "\n")
        ef.flush()
        out({"type": "event", "data": row})

    def checkpoint():
        d = ck / f"step-{step:08d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "state.json").write_text(json.dumps({"step": step}))
        event({"kind": "checkpoint", "step": step})

    event({"kind": "start", "step": step, "total_steps": total})
    while step < total:
        while not mailbox.empty():
            msg = mailbox.get()
            t = msg.get("type")
            if t == "pause":
                checkpoint()
                out({"type": "ack", "id": msg.get("id"), "step": step})
                event({"kind": "end", "step": step, "state": "paused"})
                return 75
            if t == "stop":
                out({"type": "ack", "id": msg.get("id"), "step": step})
                event({"kind": "end", "step": step, "state": "stopped"})
                return 0
            if t == "set" and "bad" in msg.get("values", {}):
                out({"type": "reject", "id": msg.get("id"), "reason": "bad: not a knob"})
                continue
            if t == "set":
                lr = float(msg["values"].get("learning_rate", lr))
            if t == "checkpoint":
                checkpoint()
            event({"kind": "edit", "step": step, "edit": {k: v for k, v in msg.items() if k not in ("v", "id")}})
            out({"type": "ack", "id": msg.get("id"), "step": step})
        time.sleep(step_s)
        step += 1
        if crash_at is not None and step == int(crash_at):
            os.kill(os.getpid(), signal.SIGKILL)
        if fail_at is not None and step == int(fail_at):
            event({"kind": "error", "step": step, "message": "loss is nan"})
            event({"kind": "end", "step": step, "state": "failed", "reason": "non-finite loss"})
            return 1
        row = {"kind": "train", "step": step, "epoch": step / total, "loss": round(1.0 / step, 6), "lr": lr,
               "time": time.time()}
        mf.write(json.dumps(row) + "\n")
        mf.flush()
        out({"type": "metric", "data": row})
        if interval and step % interval == 0:
            checkpoint()
    event({"kind": "end", "step": step, "state": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
