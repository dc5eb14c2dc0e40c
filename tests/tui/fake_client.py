"""An in-memory runner client with the API of tuneterm.runner.client.RunnerClient, over a
workspace of fixed, deterministic run directories (no clocks, no randomness). Snapshot
tests, Pilot tests without a daemon, and benchmarks/tui.py use it."""

from __future__ import annotations

import copy
import json
import math
import queue
import threading
from pathlib import Path
from typing import Any, Iterator

from tuneterm.errors import UserError

LAYERS = [("embeddings", 11_720_448), *[(f"layer.{i}", 1_774_464) for i in range(6)], ("head", 1_925)]

SESSION_TOML = """\
[session]
name = "{name}"
seed = 0

[model]
source = "{model}"

[data]
source = "{data}"
max_samples = 800

[hyperparameters]
learning_rate = 5e-5
batch_size = 16
epochs = 3.0
dropout = 0.1
weight_decay = 0.01
schedule = "linear"
warmup_ratio = 0.1

[early_stopping]
enabled = true
patience = 3

[freeze]
layers = ["embeddings"]
{edits}"""


def curves(steps: int, overfit: bool, eval_every: int = 10) -> tuple[list[dict], list[dict]]:
    """Deterministic metrics and events: a falling training loss; a validation loss that
    turns up at the end when ``overfit``."""
    metrics, events = [], [{"kind": "start", "step": 0}]
    for s in range(1, steps + 1):
        loss = 1.6 * math.exp(-s / 40) + 0.08 + 0.04 * math.sin(s * 0.7)
        lr = 5e-5 * min(1.0, s / 15) * max(0.0, 1 - s / 150)
        metrics.append({"kind": "train", "step": s, "epoch": round(s / 50, 3), "loss": round(loss, 6),
                        "lr": lr, "grad_norm": 1.0, "samples_per_s": 100.0, "time": 0.0})
        if s % eval_every == 0:
            k = s // eval_every
            val = 1.5 * math.exp(-s / 35) + 0.25
            if overfit and k >= steps // eval_every - 2:
                val += 0.05 * (k - (steps // eval_every - 3))
            acc = min(0.97, 0.2 + 0.8 * (1 - math.exp(-s / 30)))
            metrics.append({"kind": "eval", "step": s, "epoch": round(s / 50, 3), "val_loss": round(val, 6),
                            "val_accuracy": round(acc, 4), "val_f1": round(acc - 0.02, 4), "time": 0.0})
            if s % (eval_every * 2) == 0:
                events.append({"kind": "checkpoint", "step": s, "path": f"checkpoints/step-{s:08d}"})
        if s == 40:
            events.append({"kind": "edit", "step": 40, "edit": {"set": {"learning_rate": 2e-5}}})
        if s == 60:
            events.append({"kind": "edit", "step": 60, "edit": {"unfreeze": ["embeddings"]}})
    return metrics, events


def write_run(run_dir: Path, name: str, model: str, data: str, steps: int, overfit: bool, done: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics, events = curves(steps, overfit)
    edits = ""
    if steps >= 60:
        edits = ("\n[[edits]]\nstep = 40\nset = { learning_rate = 2e-5 }\n"
                 "\n[[edits]]\nstep = 60\nunfreeze = [\"embeddings\"]\n")
    if done:
        events.append({"kind": "end", "state": "done", "step": steps, "reason": ""})
    (run_dir / "session.toml").write_text(SESSION_TOML.format(name=name, model=model, data=data, edits=edits))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in events))
    (run_dir / "layers.json").write_text(json.dumps(
        [{"name": n, "params": p, "frozen": n == "embeddings"} for n, p in LAYERS]))
    (run_dir / "log.txt").write_text("".join(f"step {m['step']}: loss {m['loss']:.4f}\n"
                                             for m in metrics if m["kind"] == "train" and m["step"] % 20 == 0))


def build_workspace(ws: Path, n_extra: int = 0) -> list[dict]:
    """Run directories and the session list of a small, fixed queue."""
    (ws / "sessions").mkdir(parents=True, exist_ok=True)
    (ws / "runs").mkdir(exist_ok=True)
    spec = [
        ("tweets-minilm", "builtin:minilm-l6", "builtin:tweet-sentiment", "done", 150, 150, False),
        ("bbc-minilm", "builtin:minilm-l6", "builtin:bbc-news", "running", 120, 150, True),
        ("smoke-tiny", "builtin:tiny-bert", "builtin:bbc-news", "queued", 0, 40, False),
        ("bbc-minilm-wd", "builtin:minilm-l6", "builtin:bbc-news", "paused", 50, 150, False),
        ("broken", "builtin:tiny-gpt2", "data/missing.csv", "failed", 3, 40, False),
    ]
    for i in range(n_extra):
        spec.append((f"sweep-{i:04d}", "builtin:tiny-bert", "builtin:bbc-news", "queued", 0, 40, False))
    sessions = []
    for i, (name, model, data, state, step, total, overfit) in enumerate(spec, start=1):
        run_id = f"{name}-20260101-000000-{i:04x}"
        rd = ws / "runs" / run_id
        if i <= 5:
            write_run(rd, name, model, data, step, overfit, state == "done")
        s = {"id": i, "run_id": run_id, "name": name, "model": model, "data": data, "state": state,
             "position": i, "step": step, "total_steps": total, "epoch": round(step / 50, 2),
             "loss": None, "best_metric": None, "eta_s": 95 if state == "running" else None,
             "run_dir": str(rd), "created": "2026-01-01T00:00:00Z", "attempts": 1 if step else 0,
             "error": "data/missing.csv: no such file" if state == "failed" else None}
        if step:
            m, _ = curves(step, overfit)
            s["loss"] = [r for r in m if r["kind"] == "train"][-1]["loss"]
            evals = [r for r in m if r["kind"] == "eval"]
            if evals:
                s["best_metric"] = {"name": "val_loss", "value": min(r["val_loss"] for r in evals)}
        sessions.append(s)
    for name in ("bbc-minilm", "tweets-minilm", "smoke-tiny"):
        (ws / "sessions" / f"{name}.toml").write_text(
            SESSION_TOML.format(name=name, model="builtin:minilm-l6", data="builtin:bbc-news", edits=""))
    return sessions


class FakeClient:
    """RunnerClient's API in memory. ``calls`` records every request; ``reject`` maps a
    knob to the reason the fake worker refuses it with."""

    def __init__(self, workspace: Path, sessions: list[dict] | None = None, *, live: bool = False) -> None:
        self.workspace = Path(workspace)
        self.sessions = sessions if sessions is not None else build_workspace(self.workspace)
        self.calls: list[tuple] = []
        self.reject: dict[str, str] = {}
        self.live = live  # subscriptions stay open after the history (until close())
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.pushed: queue.Queue = queue.Queue()  # live messages a test sends down open subscriptions

    def _find(self, ref: Any) -> dict:
        for s in self.sessions:
            if s["id"] == ref or s["run_id"] == ref or (isinstance(ref, str) and s["run_id"].startswith(ref)):
                return s
        raise UserError(f"no session {ref!r}")

    def list_sessions(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self.sessions)

    def get(self, ref: Any) -> dict:
        return copy.deepcopy(self._find(ref))

    def add(self, session_path, *, smoke: bool = False, check: bool = True) -> dict:
        self.calls.append(("add", str(session_path)))
        p = Path(session_path)
        if not p.exists():
            raise UserError(f"{p}: no such file")
        sid = max((s["id"] for s in self.sessions), default=0) + 1
        name = p.stem if p.name != "session.toml" else p.parent.name.split("-2026")[0]
        s = {"id": sid, "run_id": f"{name}-x-{sid:04x}", "name": name, "model": "builtin:tiny-bert",
             "data": "builtin:bbc-news", "state": "queued", "position": len(self.sessions) + 1, "step": 0,
             "total_steps": None, "epoch": 0, "loss": None, "best_metric": None, "eta_s": None,
             "run_dir": None, "created": "2026-01-01T00:00:00Z", "attempts": 0, "error": None}
        with self._lock:
            self.sessions.append(s)
        return copy.deepcopy(s)

    def _set_state(self, verb: str, ref: Any, state: str) -> dict:
        self.calls.append((verb, ref))
        s = self._find(ref)
        s["state"] = state
        return copy.deepcopy(s)

    def pause(self, ref):
        return self._set_state("pause", ref, "paused")

    def resume(self, ref):
        return self._set_state("resume", ref, "queued")

    def cancel(self, ref):
        return self._set_state("cancel", ref, "cancelled")

    def retry(self, ref):
        return self._set_state("retry", ref, "queued")

    def move(self, ref, *, to: int | None = None, by: int | None = None) -> dict:
        self.calls.append(("move", ref, to, by))
        s = self._find(ref)
        with self._lock:
            i = self.sessions.index(s)
            j = (to - 1) if to is not None else i + (by or 0)
            j = max(0, min(len(self.sessions) - 1, j))
            self.sessions.insert(j, self.sessions.pop(i))
            for k, x in enumerate(self.sessions, start=1):
                x["position"] = k
        return copy.deepcopy(s)

    def control(self, ref, msg: dict, timeout: float = 30.0) -> dict:
        self.calls.append(("control", ref, msg))
        s = self._find(ref)
        if s["state"] != "running":
            return {"type": "reject", "id": msg.get("id"), "reason": f"session {s['name']} is not running"}
        for k in (msg.get("values") or {}):
            if k in self.reject:
                return {"type": "reject", "id": msg.get("id"), "reason": self.reject[k]}
        if msg.get("type") == "set" and s.get("run_dir"):
            # as the engine does: the applied edit joins the run's history, so a screen that
            # follows the stream again (history first) ends on the edited value
            row = {"kind": "edit", "step": s["step"], "edit": {"step": s["step"], "set": dict(msg["values"])},
                   "source": "live", "time": 0.0}
            with (Path(s["run_dir"]) / "events.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        return {"type": "ack", "id": msg.get("id"), "step": s["step"]}

    def subscribe(self, ref, *, history: bool = True) -> Iterator[dict]:
        s = self._find(ref)
        self.calls.append(("subscribe", ref))
        rd = Path(s["run_dir"]) if s.get("run_dir") else None
        rows = []
        if history and rd is not None:
            for kind, fname in (("metric", "metrics.jsonl"), ("event", "events.jsonl")):
                p = rd / fname
                if p.exists():
                    rows += [{"type": kind, "data": json.loads(x), "history": True}
                             for x in p.read_text().splitlines() if x]
            rows.sort(key=lambda m: (m["data"].get("step", 0), m["type"] == "event"))
        return self._iter(rows)

    def _iter(self, rows: list[dict]) -> Iterator[dict]:
        yield from rows
        while self.live and not self._closed.is_set():
            try:
                yield self.pushed.get(timeout=0.05)
            except queue.Empty:
                pass

    def close(self) -> None:
        self._closed.set()
