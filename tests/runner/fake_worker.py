"""A stand-in worker obeying docs/architecture.md's worker contract, without torch.

    python fake_worker.py RUN_DIR [--resume]

Reads RUN_DIR/session.toml ([hyperparameters] max_steps, learning_rate, [checkpoint]
interval_steps, [evaluation] interval_steps and an optional [fake] table: step_s = seconds
per step, crash_at = exit -9 style at that step, fail_at = a non-finite loss there), writes
metrics/events rows in the real engine's shapes (loss is a pure function of the step),
records applied edits in session.toml's [[edits]] as the engine does ({"step", "set"} /
{"step", "freeze"} / ...), checkpoints as checkpoints/step-NNNNNNNN/state.json, answers
control messages on stdin (decoded with tuneterm.protocol, ``at_step`` honoured) at step
boundaries, pauses on SIGTERM (exit 75), holds an flock on RUN_DIR/.lock (exit 73).
tests/runner/test_contract.py runs it beside the real worker on one control script.
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

from tuneterm import protocol, rundir
from tuneterm.rundir import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_PAUSED

LAYERS = ("embeddings", "layer.0", "layer.1", "head")  # builtin:tiny-bert's layer groups


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def record_edit(rd: rundir.RunDir, edit: dict) -> None:
    """Append one [[edits]] entry to session.toml, atomically (the engine rewrites the file)."""
    lines = ["", "[[edits]]", f"step = {edit['step']}"]
    if "set" in edit:
        lines.append("set = { " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in edit["set"].items()) + " }")
    for k in ("freeze", "unfreeze"):
        if k in edit:
            lines.append(f"{k} = {_toml_value(edit[k])}")
    if edit.get("stop"):
        lines.append("stop = true")
    rundir.write_atomic(rd.session, rd.session.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def problem(cmd: protocol.Command):
    if cmd.type == "set":
        for k, v in cmd.values.items():
            if k not in ("learning_rate", "dropout", "weight_decay", "batch_size", "max_steps"):
                return f"{k}: not a knob"
            if k == "learning_rate" and not (isinstance(v, (int, float)) and v > 0):
                return f"learning_rate: must be > 0 (got {v})"
    if cmd.type in ("freeze", "unfreeze"):
        unknown = [x for x in cmd.layers if x not in LAYERS]
        if unknown:
            return f"unknown layer {unknown[0]!r}; the layer groups are {', '.join(LAYERS)}"
    return None


def main() -> int:
    rd = rundir.RunDir(sys.argv[1])
    resume = "--resume" in sys.argv
    lock = os.open(rd.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return EXIT_LOCKED
    cfg = tomllib.loads(rd.session.read_text())
    hp, fake = cfg.get("hyperparameters", {}), cfg.get("fake", {})
    total = int(hp.get("max_steps", 20))
    interval = int(cfg.get("checkpoint", {}).get("interval_steps", 5))
    eval_every = int(cfg.get("evaluation", {}).get("interval_steps", 0) or 0)
    step_s = float(fake.get("step_s", 0.01))
    crash_at = fake.get("crash_at")
    fail_at = fake.get("fail_at")
    lr = float(hp.get("learning_rate", 1e-3))
    batch_size = int(hp.get("batch_size", 8))
    keep_best = bool(cfg.get("checkpoint", {}).get("keep_best", True))
    best: list = [None, None]  # the best val_loss and its step
    mailbox: queue.Queue = queue.Queue()
    held: list = []

    def pump():
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                mailbox.put(protocol.decode(line))
            except protocol.ProtocolError as e:
                mailbox.put({"type": "_invalid", "reason": str(e)})

    threading.Thread(target=pump, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *a: mailbox.put({"v": 1, "type": "pause", "id": "signal"}))

    def out(msg):
        try:
            sys.stdout.write(protocol.encode(msg).decode())
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass

    step = 0
    if resume:
        steps = rundir.checkpoint_steps(rd.checkpoints)
        if steps:
            step = steps[-1]
            for path in (rd.metrics, rd.events):
                if path.exists():
                    keep = [ln for ln, row in rundir.parse_rows(path.read_bytes()) if row.get("step", 0) <= step]
                    rundir.write_atomic(path, b"".join(ln + b"\n" for ln in keep), durable=False)
    mf = open(rd.metrics, "a")
    ef = open(rd.events, "a")

    def event(kind, **fields):
        row = {"kind": kind, "step": step, **fields, "time": round(time.time(), 3)}
        ef.write(json.dumps(row) + "\n")
        ef.flush()
        out(protocol.event(row))

    def metric(row):
        mf.write(json.dumps(row) + "\n")
        mf.flush()
        out(protocol.metric(row))

    def checkpoint(reason):
        d = rd.checkpoint_dir(step)
        d.mkdir(parents=True, exist_ok=True)
        (d / "state.json").write_text(json.dumps({"step": step}))
        event("checkpoint", path=f"checkpoints/{d.name}", reason=reason)
        return d.name

    def end(state, reason):
        event("end", state=state, reason=reason, best=best[0], best_step=best[1], total_steps=total)

    def edit_for(cmd):
        e = {"step": step}
        if cmd.type == "set":
            e["set"] = dict(cmd.values)
        elif cmd.type in ("freeze", "unfreeze"):
            e[cmd.type] = list(cmd.layers)
        elif cmd.type == "stop":
            e["stop"] = True
        return e

    # "start" on a resume too (the engine writes "resume"; the runner reads both alike and the
    # queue tests count these rows)
    event("start", total_steps=total)
    while step < total:
        while not mailbox.empty():
            held.append(mailbox.get())
        due = [m for m in held if (m.get("at_step") or 0) <= step]
        held = [m for m in held if m not in due]
        for msg in due:
            if msg.get("type") == "_invalid":
                out(protocol.reject(None, msg["reason"]))
                continue
            try:
                cmd = protocol.Command.parse(msg)
                why = problem(cmd)
            except protocol.ProtocolError as e:
                cmd, why = None, str(e)
            mid = cmd.id if cmd else msg.get("id")
            if why:
                out(protocol.reject(mid, why))
                event("reject", id=mid, reason=why, request={k: v for k, v in msg.items() if k != "v"})
                continue
            if cmd.type == "pause":
                out(protocol.ack(mid, step))
                checkpoint("pause")
                end("paused", "paused on request")
                return EXIT_PAUSED
            if cmd.type == "checkpoint":
                out(protocol.ack(mid, step, checkpoint=checkpoint("request")))
                continue
            e = edit_for(cmd)
            record_edit(rd, e)
            event("edit", edit=e, source="live")
            if cmd.type == "stop":
                out(protocol.ack(mid, step))
                checkpoint("end")
                end("stopped", "stopped on request")
                return EXIT_OK
            lr = float(cmd.values.get("learning_rate", lr))
            batch_size = int(cmd.values.get("batch_size", batch_size))
            total = int(cmd.values.get("max_steps", total))
            out(protocol.ack(mid, step, total_steps=total, trainable_params=1000))
        time.sleep(step_s)
        step += 1
        if crash_at is not None and step == int(crash_at):
            os.kill(os.getpid(), signal.SIGKILL)
        if fail_at is not None and step == int(fail_at):
            event("error", message="loss is nan")
            end("failed", "non-finite loss")
            return EXIT_FAILED
        metric({"kind": "train", "step": step, "epoch": round(step / total, 6), "loss": round(1.0 / step, 6),
                "lr": lr, "grad_norm": 1.0, "batch_size": batch_size, "total_steps": total,
                "samples_per_s": 100.0, "time": round(time.time(), 3)})
        if eval_every and step % eval_every == 0:
            val = round(1.5 + abs(step - 3) / 10, 6)  # best at step 3, then worse (a pure function)
            metric({"kind": "eval", "step": step, "epoch": round(step / total, 6), "val_loss": val,
                    "val_accuracy": 0.5, "val_f1": 0.4, "time": round(time.time(), 3)})
            if best[0] is None or val < best[0]:
                best[:] = [val, step]
                event("eval_best", metric="val_loss", value=val)
                if keep_best:
                    checkpoint("best")
        if interval and step % interval == 0:
            checkpoint("interval")
    checkpoint("end")
    end("done", "trained to the end")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
