"""`tuneterm run`: determinism, resume after kill -9, layers, architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import kill9_after_checkpoint, rows, run_cli, strip_clock
from safetensors.torch import load_file


def test_two_runs_write_identical_metrics(workspace, tiny_session, capsys):
    s = tiny_session()
    code1, out1, _ = run_cli(["run", str(s)], capsys)
    code2, out2, _ = run_cli(["run", str(s)], capsys)
    assert code1 == code2 == 0
    a, b = Path(out1.strip()), Path(out2.strip())
    assert a != b
    ra, rb = rows(a), rows(b)
    assert len([r for r in ra if r["kind"] == "train"]) == 24  # 2 epochs x 96/8
    assert any(r["kind"] == "eval" for r in ra)
    assert strip_clock(ra) == strip_clock(rb)
    # the loss moved: the run trained
    losses = [r["loss"] for r in ra if r["kind"] == "train"]
    assert len(set(losses)) > 10


def _final_weights(run_dir: Path) -> dict:
    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return load_file(str(last / "model.safetensors"))


def test_kill9_then_resume_equals_uninterrupted(workspace, tiny_session, capsys):
    # 72 steps: time to kill it mid-run. One thread: the killed subprocess and this process
    # (whose torch thread count an earlier in-process run may have set) sum alike.
    s = tiny_session(epochs=6, extra='device = "cpu"\nthreads = 1\n')
    code, out, _ = run_cli(["run", str(s)], capsys)
    assert code == 0
    reference = Path(out.strip())

    # The same session in a child process, killed with SIGKILL after its second checkpoint.
    run_dir = kill9_after_checkpoint(workspace, s, 8, timeout=120)
    killed_at = max(r["step"] for r in rows(run_dir) if r["kind"] == "train")
    assert killed_at < 72

    code, out, _ = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0
    assert strip_clock(rows(run_dir)) == strip_clock(rows(reference))
    wa, wb = _final_weights(reference), _final_weights(run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("model", ["builtin:tiny-bert", "builtin:tiny-gpt2"])
def test_gradient_checkpointing_of_a_classifier_is_bit_identical(workspace, tiny_session, capsys, model,
                                                                   monkeypatch):
    """Recomputing the blocks in the backward pass redraws the same dropout masks: the same
    losses, evaluations and weights as without (BERT and GPT-2 blocks; causal LM: tests/lm)."""
    from tuneterm.engine import grad_ckpt

    checkpointed = []  # one entry per checkpointed block forward: proof it is on
    real = grad_ckpt._counters
    monkeypatch.setattr(grad_ckpt, "_counters", lambda dctx: checkpointed.append(1) or real(dctx))
    runs = []
    for on in (False, True):
        s = tiny_session(f"gc-{on}", model=model, epochs=1, extra=f"gradient_checkpointing = {str(on).lower()}\n")
        code, out, err = run_cli(["run", str(s)], capsys)
        assert code == 0, err
        runs.append(Path(out.strip()))
        assert bool(checkpointed) == on
    a, b = runs
    assert len({r["loss"] for r in rows(a) if r["kind"] == "train"}) > 3  # it trained, dropout on
    assert strip_clock(rows(a)) == strip_clock(rows(b))
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_layers_lists_groups_with_counts(workspace, tiny_session, capsys):
    s = tiny_session(extra='\n[freeze]\nlayers = ["embeddings"]\n')
    code, out, _ = run_cli(["layers", str(s), "--json"], capsys)
    assert code == 0
    import json

    info = json.loads(out)
    names = [r["name"] for r in info["layers"]]
    assert names == ["embeddings", "layer.0", "layer.1", "head"]
    assert info["layers"][0]["frozen"] and not info["layers"][1]["frozen"]
    assert info["trainable_params"] == info["total_params"] - info["layers"][0]["params"]


def test_unknown_freeze_layer_is_refused(workspace, tiny_session, capsys):
    s = tiny_session(extra='\n[freeze]\nlayers = ["layer.7"]\n')
    code, _, err = run_cli(["run", str(s)], capsys)
    assert code == 2
    assert "layer.7" in err and "Traceback" not in err


@pytest.mark.parametrize("model", ["builtin:tiny-bert", "builtin:tiny-gpt2", "builtin:tiny-llama"])
def test_groups_and_a_training_step_on_each_architecture(workspace, tiny_session, capsys, model):
    s = tiny_session(name=model.split(":")[1], model=model,
                     extra='\n[freeze]\nlayers = ["embeddings", "layer.0"]\n')
    code, out, _ = run_cli(["layers", str(s), "--json"], capsys)
    import json

    names = [r["name"] for r in json.loads(out)["layers"]]
    assert names == ["embeddings", "layer.0", "layer.1", "head"]
    code, out, err = run_cli(["run", str(s), "--max-steps", "3"], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    train = [r for r in rows(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(r["loss"] is not None and r["loss"] > 0 for r in train)


def test_early_stopping_and_checkpoint_retention(workspace, tiny_session, capsys):
    # min_delta 10: no evaluation after the first can count as an improvement.
    s = tiny_session(epochs=6, extra="\n[early_stopping]\nenabled = true\nmetric = \"val_loss\"\n"
                                     "patience = 2\nmin_delta = 10.0\n")
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    evals = [r["step"] for r in rows(run_dir) if r["kind"] == "eval"]
    assert evals == [4, 8, 12]  # best at 4, then two evaluations without improvement
    events = rows(run_dir, "events.jsonl")
    stop = [e for e in events if e["kind"] == "early_stop"]
    assert stop and stop[0]["step"] == 12 and stop[0]["best_step"] == 4
    assert events[-1]["kind"] == "end" and events[-1]["state"] == "early_stopped"
    # keep_last = 2 plus the best
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-00000004", "step-00000008", "step-00000012"]


def test_an_override_that_breaks_the_session_is_refused_before_any_run_exists(workspace, tiny_session, capsys):
    code, out, err = run_cli(["run", str(tiny_session()), "--max-steps", "1"], capsys)  # warmup_steps = 2
    assert code == 2 and out == ""
    assert err.startswith("tuneterm: error: --max-steps 1: hyperparameters.warmup_steps:"), err
    assert list((workspace / "runs").iterdir()) == []
