"""`strategy = "fsdp"` (FSDP2) on two CPU processes (gloo): the same run as on one process
within 1e-4 at every step with recorded edits, `replay --check` bit-identical at two,
sharded checkpoints (DCP, manifest last) that resume on one process and that eval and
export read whole; a 1-process run resumed on two; a classifier and a LoRA session.
(The 2-process run is paused mid-run and resumed on 1; the 1-process run resumed on 2, and
the LoRA run, start from a copy cut back to a checkpoint: the files a kill leaves. kill -9 of
a rank itself is tested under DDP in test_distributed.py: the same launcher and exit path.)"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import rows

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import SCRIPT, _cli, _close, lm_session, run_on_1_and_2  # noqa: E402

pytestmark = pytest.mark.slow  # real ranks

FSDP = '\n[distributed]\nstrategy = "fsdp"\n'


def _same(a_rows, b_rows, keys=("loss", "grad_norm", "val_loss", "lr")):
    assert [(r["kind"], r["step"]) for r in a_rows] == [(r["kind"], r["step"]) for r in b_rows]
    for a, b in zip(a_rows, b_rows):
        for k in keys:
            if a.get(k) is not None:
                assert _close(a[k], b[k]), (a["kind"], a["step"], k, a[k], b[k])


def _cut_after(run_dir: Path, step: int) -> Path:
    """A copy of a finished run as if it had been killed after its checkpoint at ``step``."""
    other = run_dir.with_name(run_dir.name + f"-cut{step}")
    shutil.copytree(run_dir, other)
    for c in (other / "checkpoints").iterdir():
        if int(c.name.split("-")[1]) > step:
            shutil.rmtree(c)
    return other


def test_fsdp_equals_one_process_replays_resumes_anywhere_and_exports(workspace: Path):
    from safetensors.torch import load_file

    from tuneterm.engine import checkpoint as ckpt

    session = lm_session(workspace, "fsdp", steps=9)
    session.write_text(session.read_text() + FSDP)
    d1, d2 = run_on_1_and_2(workspace, session, SCRIPT)
    m1, m2 = rows(d1), rows(d2)
    assert [r["step"] for r in m2 if r["kind"] == "train"] == list(range(1, 10))  # one row per step
    _same(m1, m2)
    assert [e["kind"] for e in rows(d2, "events.jsonl")].count("edit") == len(SCRIPT)

    # Sharded: each rank's DCP shard, the manifest (written last) vouching for every file.
    step2 = d2 / "checkpoints" / "step-00000002"
    assert ckpt.is_sharded(step2) and not (step2 / "model.safetensors").exists()
    manifest = json.loads((step2 / "manifest.json").read_text())
    assert manifest["layout"] == "sharded"
    assert {"model/__0_0.distcp", "model/__1_0.distcp", "optimizer/.metadata", "state.json"} <= set(manifest["files"])
    assert ckpt.verify(step2) == (None, True)
    (step2 / "model" / "__1_0.distcp").write_bytes(b"damaged")
    assert "model/__1_0.distcp" in ckpt.verify(step2)[0]

    replay = _cli(workspace, "replay", str(d2), "--check")
    assert replay.returncode == 0 and "identical" in replay.stderr, replay.stderr[-2000:]

    # A 2-process run paused at step 5 (every rank writes its shards, then exits) resumed
    # on 1 process (the shards gathered); a 1-process run resumed on 2 (sharded by each rank).
    ctl = workspace / "pause.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in SCRIPT if m["at_step"] < 5) +
                   json.dumps({"v": 1, "type": "pause", "id": "p", "at_step": 5}) + "\n")
    paused = _cli(workspace, "run", str(session), "--processes", "2", "--control", str(ctl))
    assert paused.returncode == 130, paused.stderr[-2000:]  # paused (75): `run` says 130, as for Ctrl-C
    dp = Path(paused.stdout.strip())
    assert ckpt.is_sharded(dp / "checkpoints" / "step-00000005")
    later = [m for m in SCRIPT if m["at_step"] >= 5]
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in later))
    again = _cli(workspace, "run", "--resume", str(dp), "--processes", "1", "--control", str(ctl))
    assert again.returncode == 0, again.stderr[-2000:]
    _same(m2, rows(dp))
    cut = _cut_after(d1, 4)
    again = _cli(workspace, "run", "--resume", str(cut), "--processes", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    _same(m1, rows(cut))

    # export gathers the shards into one model.safetensors: the run's last weights.
    out = workspace / "exported"
    exp = _cli(workspace, "export", str(d2), str(out), "--checkpoint", "last")
    assert exp.returncode == 0, exp.stderr[-2000:]
    whole = ckpt.tensors(d2 / "checkpoints" / "step-00000009")
    got = load_file(str(out / "model.safetensors"))
    assert got and all(torch.equal(got[k], whole[k]) for k in got)
    ev = _cli(workspace, "eval", str(d2), "chat.jsonl", "--json")
    ev1 = _cli(workspace, "eval", str(d1), "chat.jsonl", "--json")
    assert ev.returncode == 0 and ev1.returncode == 0, ev.stderr[-1500:]
    assert _close(json.loads(ev.stdout)["loss"], json.loads(ev1.stdout)["loss"])


@pytest.mark.parametrize("kind", ["classification", "lora"])
def test_fsdp_classifier_and_lora_equal_one_process(workspace: Path, kind: str):
    """A tiny-BERT classifier whose rank 1 has no rows in some micro-batches, and LoRA under
    live LoRA edits (freeze, lora_dropout, train_base, lora_lr_ratio, unfreeze): 2 FSDP
    processes equal 1 within 1e-4; the LoRA run replays identically on 2, resumes on 1 from
    its sharded checkpoint (base tensors of a group trained mid-run included) and exports."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "lora"))
    from test_lora_run import LORA, SCRIPT as LORA_SCRIPT, _session

    session = _session(workspace, kind, steps=9, extra=LORA if kind == "lora" else "")
    text = session.read_text()
    if kind == "classification":
        # Micro-batches of one row until the batch-size edit: rank 1's share is empty, and it
        # runs a row at weight 0 (every rank must take part in FSDP's gathers).
        text = text.replace("batch_size = 8", "batch_size = 2\ngradient_accumulation = 2", 1)
        assert "gradient_accumulation = 2" in text
    session.write_text(text + FSDP)
    script = LORA_SCRIPT if kind == "lora" else [m for m in SCRIPT if m["id"] != "fr"]
    d1, d2 = run_on_1_and_2(workspace, session, script)
    _same(rows(d1), rows(d2), ("loss", "grad_norm", "val_loss", "val_accuracy"))
    ev1 = [e["kind"] for e in rows(d1, "events.jsonl") if e["kind"] in ("edit", "reject")]
    ev2 = [e["kind"] for e in rows(d2, "events.jsonl") if e["kind"] in ("edit", "reject")]
    assert ev1 == ev2 and ev2.count("edit") >= 4
    if kind == "lora":
        replay = _cli(workspace, "replay", str(d2), "--check")
        assert replay.returncode == 0 and "identical" in replay.stderr, replay.stderr[-2000:]
        cut = _cut_after(d2, 8)
        again = _cli(workspace, "run", "--resume", str(cut), "--processes", "1")
        assert again.returncode == 0, again.stderr[-2000:]
        _same(rows(d2), rows(cut))
        exp = _cli(workspace, "export", str(d2), str(workspace / "adapter"), "--checkpoint", "last")
        assert exp.returncode == 0, exp.stderr[-2000:]
        assert (workspace / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("setting", ["gradient_checkpointing", "compile"])
def test_fsdp_with_checkpointing_or_compile_equals_one_process_without(workspace: Path, monkeypatch, setting: str):
    """Under FSDP2, checkpointed blocks (FSDP's hooks run again inside each recomputation, which
    redraws the same dropout masks) and a compiled backbone (dynamo breaks its graph at FSDP's
    hooks, between blocks): 2 processes with the setting equal 1 without it within 1e-4 under
    the recorded edits, a dropout change included."""
    monkeypatch.setenv("TUNETERM_COMPILE_BACKEND", "aot_eager")  # inductor needs minutes on this CPU
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in SCRIPT))
    plain = lm_session(workspace, "plain", steps=9)
    other = lm_session(workspace, "other", steps=9, extra=f"{setting} = true\n" + FSDP)
    one = _cli(workspace, "run", str(plain), "--control", str(ctl))
    two = _cli(workspace, "run", str(other), "--processes", "2", "--control", str(ctl))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-2000:]
    d2 = Path(two.stdout.strip())
    assert f"{setting} = true" in (d2 / "session.toml").read_text()
    _same(rows(Path(one.stdout.strip())), rows(d2))
    assert [e["kind"] for e in rows(d2, "events.jsonl")].count("edit") == len(SCRIPT)
