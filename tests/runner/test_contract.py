"""The fake worker the runner tests use and the real worker write the same shapes: the same
control script on stdin, then what each wrote (events' kinds and keys, metrics' keys, the
edit log in session.toml, the answers on stdout) compared."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from runner_helpers import FAKE_WORKER
from tiny_sessions import tiny_session_toml

from tuneterm.rundir import RunDir, read_jsonl

SCRIPT = [
    {"v": 1, "type": "set", "id": "lr", "values": {"learning_rate": 5e-4}, "at_step": 2},
    {"v": 1, "type": "freeze", "id": "fr", "layers": ["embeddings"], "at_step": 3},
    {"v": 1, "type": "set", "id": "neg", "values": {"learning_rate": -1.0}, "at_step": 3},
    {"v": 1, "type": "freeze", "id": "unk", "layers": ["layer.9"], "at_step": 3},
    {"v": 1, "type": "checkpoint", "id": "ck", "at_step": 4},
    {"v": 1, "type": "unfreeze", "id": "uf", "layers": ["embeddings"], "at_step": 5},
    {"v": 1, "type": "stop", "id": "st", "at_step": 6},
]
SHARED_KINDS = ("edit", "reject", "checkpoint", "end")  # rows whose every key must agree


def _train(cmd: list[str], rd: Path) -> tuple[int, list[dict]]:
    script = "".join(json.dumps(m) + "\n" for m in SCRIPT)
    p = subprocess.run(cmd + [str(rd)], input=script, capture_output=True, text=True, timeout=300)
    return p.returncode, [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


def test_fake_and_real_workers_write_the_same_shapes(workspace):
    runs = {}
    for who, cmd in (("real", [sys.executable, "-m", "tuneterm.engine.worker"]),
                     ("fake", [sys.executable, str(FAKE_WORKER)])):
        rd = workspace / "runs" / f"contract-{who}"
        rd.mkdir(parents=True)
        (rd / "session.toml").write_text(tiny_session_toml("contract", steps=40, eval_interval=3,
                                                           checkpoint_interval=5))
        code, stdout = _train(cmd, rd)
        r = RunDir(rd)
        runs[who] = {"code": code, "stdout": stdout, "events": read_jsonl(r.events), "metrics": read_jsonl(r.metrics),
                     "edits": tomllib.loads(r.session.read_text()).get("edits", [])}
    real, fake = runs["real"], runs["fake"]
    assert real["code"] == fake["code"] == 0, (real["code"], fake["code"])

    # the edit log: the same entries at the same steps, in the engine's shape
    assert fake["edits"] == real["edits"]
    assert real["edits"][0] == {"step": 2, "set": {"learning_rate": 5e-4}}

    # events: the fake writes no kind the engine does not; the shared kinds agree key for key
    kinds = {who: [e["kind"] for e in r["events"]] for who, r in runs.items()}
    assert set(kinds["fake"]) <= set(kinds["real"]), kinds
    for kind in SHARED_KINDS:
        ra = [e for e in real["events"] if e["kind"] == kind]
        fa = [e for e in fake["events"] if e["kind"] == kind]
        assert [e["step"] for e in fa] == [e["step"] for e in ra], kind
        assert [sorted(e) for e in fa] == [sorted(e) for e in ra], kind
    assert [e["edit"] for e in fake["events"] if e["kind"] == "edit"] == \
        [e["edit"] for e in real["events"] if e["kind"] == "edit"]
    assert [e["state"] for e in fake["events"] if e["kind"] == "end"] == ["stopped"]
    for e in fake["events"]:  # every row names its kind, step and time
        assert {"kind", "step", "time"} <= set(e)

    # metrics: the same keys per kind, the same steps
    for kind in ("train", "eval"):
        rm = [m for m in real["metrics"] if m["kind"] == kind]
        fm = [m for m in fake["metrics"] if m["kind"] == kind]
        assert [m["step"] for m in fm] == [m["step"] for m in rm], kind
        assert {tuple(sorted(m)) for m in fm} == {tuple(sorted(m)) for m in rm}, kind

    # stdout: one answer per control message, the same type and keys; rows as metric/event
    def answers(r):
        return {m["id"]: (m["type"], sorted(m)) for m in r["stdout"] if m["type"] in ("ack", "reject")}

    assert answers(fake) == answers(real)
    assert {m["type"] for m in fake["stdout"]} == {m["type"] for m in real["stdout"]}
    assert all(m.get("v") == 1 for r in runs.values() for m in r["stdout"])
