"""The log-probabilities a preference step is made of: the shared-prompt batch equals each
completion scored on its own; reference = "auto" under LoRA (the adapters off) equals a
frozen copy of the base; precomputed reference log-probs equal those computed each step,
are kept in the run directory and reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import rows, run_cli, strip_clock
from pref_helpers import pair_records, pref_session, write_pairs

from tuneterm.engine.runs import create_run
from tuneterm.engine.trainer import Trainer
from tuneterm.session.io import load_session

LORA = "[lora]\nenabled = true\nr = 4\nalpha = 8\ndropout = 0.0\n"


def trainer(workspace: Path, path: Path) -> Trainer:
    s = load_session(path, workspace)
    t = Trainer(s, create_run(workspace, s), workspace, sinks=[])
    t.setup()
    return t


def _alone(model, ids: list, n_completion: int) -> float:
    """log p(completion | prompt) from the model's own forward on prompt + completion alone."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(ids) - n_completion
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


@pytest.mark.parametrize("model", ["builtin:tiny-llama", "builtin:tiny-gpt2"])  # rotary / learned positions
def test_a_shared_prompt_batch_scores_each_completion_as_if_alone(workspace, model):
    t = trainer(workspace, pref_session(workspace, "layout", dropout=0.0, model=model))
    t.model.eval()
    batch = t.task.collate(t.data.train, list(range(6)), t.device)
    with torch.no_grad():
        lp = t.task.logps(t.model, batch)
    for j in range(6):
        p = t.data.train.pairs[j]
        assert lp.chosen[j].item() == pytest.approx(_alone(t.model, p.prompt_ids + p.chosen_ids, len(p.chosen_ids)),
                                                    rel=1e-5)
        assert lp.rejected[j].item() == pytest.approx(
            _alone(t.model, p.prompt_ids + p.rejected_ids, len(p.rejected_ids)), rel=1e-5)
    assert lp.n_chosen.tolist() == [len(p.chosen_ids) for p in t.data.train.pairs[:6]]


def test_auto_under_lora_is_the_base_with_the_adapters_off(workspace, capsys):
    lora = trainer(workspace, pref_session(workspace, "lora-ref", lora=LORA, dropout=0.0, steps=3))
    plain = trainer(workspace, pref_session(workspace, "plain-ref", dropout=0.0, steps=3))
    assert (lora.task.reference, plain.task.reference) == ("adapters-off", "frozen-copy")
    assert lora.task.frozen is None  # no second copy of the model under LoRA
    lora.train()  # the adapters move away from zero
    batch = lora.task.collate(lora.data.val, list(range(4)), lora.device)
    ref_c, ref_r = lora.task.ref_logps(lora.model, batch)
    with torch.no_grad():
        frozen = plain.task.logps(plain.task.frozen, batch)
        policy = lora.task.logps(lora.model.eval(), batch)
    torch.testing.assert_close(ref_c, frozen.chosen, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ref_r, frozen.rejected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(policy.chosen, frozen.chosen, rtol=1e-4)  # the trained adapters do change them


def test_train_base_under_lora_needs_a_precomputed_reference(workspace, capsys):
    s = pref_session(workspace, "tb", lora=LORA + 'train_base = ["layer.1"]\n')
    code, _, err = run_cli(["validate", "--no-model", str(s)], capsys)
    assert code == 2 and 'lora.train_base: reference = "auto" under LoRA' in err
    s.write_text(s.read_text().replace("beta = 0.5", 'beta = 0.5\nreference = "precompute"'))
    code, _, err = run_cli(["validate", "--no-model", str(s)], capsys)
    assert code == 0, err


def test_precomputed_reference_equals_computing_it_each_step(workspace, capsys):
    recs = pair_records()
    for i, r in enumerate(recs):  # prompts of many lengths: batches padded differently
        r["prompt"][0]["content"] += " and" * (i % 9)
    write_pairs(workspace / "varied.jsonl", recs)
    runs = {}
    for mode in ("auto", "precompute"):
        s = pref_session(workspace, f"ref-{mode}", dropout=0.0, steps=6, preference=f'reference = "{mode}"',
                         data="varied.jsonl")
        code, out, err = run_cli(["run", str(s)], capsys)
        assert code == 0, err
        runs[mode] = Path(out.strip())
    a, b = (strip_clock(rows(runs[m])) for m in ("auto", "precompute"))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    # at step 1 the policy is its reference: the same numbers, to the bit, either way (the
    # training pairs are precomputed in the first epoch's batches), so no pair is won by rounding
    assert (a[0]["reward_margin"], a[0]["reward_accuracy"]) == (b[0]["reward_margin"], b[0]["reward_accuracy"]) \
        == (0.0, 0.0)
    for ra, rb in zip(a, b):
        for k, v in ra.items():
            if isinstance(v, float) and k not in ("lr",):
                assert rb[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (ra["step"], k)
    start = next(e for e in rows(runs["precompute"], "events.jsonl") if e["kind"] == "start")
    assert start["reference"] == "precompute" and start["reference_cache"] == "computed"
    assert (runs["precompute"] / start["reference_file"]).is_file()

    # a later run of the same model and data reuses the file (copied into its own run directory)
    code, out, err = run_cli(["run", str(workspace / "sessions" / "ref-precompute.toml")], capsys)
    assert code == 0, err
    again = next(e for e in rows(Path(out.strip()), "events.jsonl") if e["kind"] == "start")
    assert again["reference_cache"] == "cached" and again["reference_file"] == start["reference_file"]
    assert (Path(out.strip()) / start["reference_file"]).read_bytes() == \
        (runs["precompute"] / start["reference_file"]).read_bytes()
    assert strip_clock(rows(Path(out.strip()))) == strip_clock(rows(runs["precompute"]))


def test_a_damaged_cache_is_computed_again(workspace, capsys):
    s = pref_session(workspace, "damaged", steps=2, preference='reference = "precompute"')
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    first = Path(out.strip())
    name = next(e for e in rows(first, "events.jsonl") if e["kind"] == "start")["reference_file"]
    (first / name).write_bytes(b"not safetensors")
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    start = next(e for e in rows(Path(out.strip()), "events.jsonl") if e["kind"] == "start")
    assert start["reference_cache"] == "computed"
    assert strip_clock(rows(Path(out.strip()))) == strip_clock(rows(first))
