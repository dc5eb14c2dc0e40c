"""Packing: whole examples per row, no attention across them, positions restarting per
example — so a packed batch's loss equals the sum of the examples' losses computed one by
one (fp32 on the CPU; tolerance: 1e-5 relative, float rounding of a different summation
order, the attention being the same numbers)."""

from __future__ import annotations

import pytest
import torch

from tuneterm.engine import dropout as drop
from tuneterm.engine import lm_data as LM
from tuneterm.engine.models import build_causal_lm
from tuneterm.engine.tasks.causal_lm import CausalLMTask, headline_records

TEXTS = ["the cat sat on the mat", "a quick brown fox", "hello world again and again and again",
         "one", "two words", "tuneterm packs examples into rows without attention across them"]


def _examples(tok, n=len(TEXTS)):
    recs = [LM.Record(f"x:{i}", "prompt-completion", prompt=t, completion=" and then " + t[::-1])
            for i, t in enumerate(TEXTS[:n])]
    return LM.encode_all(recs, tok, 64, "completion", strict=True)[0]


def test_pack_is_first_fit_decreasing_and_deterministic():
    lengths = [5, 9, 3, 7, 2, 8, 1]
    packs = LM.pack(lengths, 10)
    assert packs == LM.pack(lengths, 10)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in p) <= 10 for p in packs)
    assert packs == [[1, 6], [4, 5], [2, 3], [0]]  # 9+1, 8+2, 7+3, 5 (each row in index order)


def test_packed_mask_and_positions(tok):
    exs = _examples(tok, 3)
    b = LM.collate([exs], tok.pad_token_id, "cpu", packed=True)
    n0, n1 = len(exs[0].ids), len(exs[1].ids)
    pos = b["position_ids"][0].tolist()
    assert pos[:n0] == list(range(n0)) and pos[n0:n0 + n1] == list(range(n1))
    allowed = b["attention_mask"][0, 0] == 0
    assert allowed[n0 + 1, n0] and allowed[n0 + 1, n0 + 1] and not allowed[n0 + 1, n0 - 1]
    assert not allowed[n0, n0 + 1]  # causal inside an example
    assert (b["labels"] != LM.IGNORE).sum() == sum(e.trained for e in exs[:3])


@pytest.mark.parametrize("source", ["builtin:tiny-llama", "builtin:tiny-gpt2"])
@pytest.mark.parametrize("attention", ["tuneterm", "sdpa"])
def test_packed_loss_equals_the_sum_of_per_example_losses(tok, source, attention):
    model = build_causal_lm(source, tokenizer=tok, seed=7)
    if attention == "tuneterm":
        drop.install(model, drop.DropoutContext(0), 0.1, "torch")  # tuneterm's attention path
    model.eval()
    task = CausalLMTask()
    task.pad_id = tok.pad_token_id
    exs = _examples(tok)
    packs = LM.pack([len(e.ids) for e in exs], 40)
    assert len(packs) < len(exs)  # several examples share a row
    rows = [[exs[i] for i in p] for p in packs]
    with torch.no_grad():
        packed = LM.collate(rows, tok.pad_token_id, "cpu", packed=True)
        total = task.loss(model, packed) * task.batch_weight(packed)
        single = sum(task.loss(model, b) * task.batch_weight(b)
                     for b in (LM.collate([[e]], tok.pad_token_id, "cpu", packed=False) for e in exs))
        # padding (unpacked, several per batch) gives the same numbers too
        padded = LM.collate([[e] for e in exs], tok.pad_token_id, "cpu", packed=False)
        total_padded = task.loss(model, padded) * task.batch_weight(padded)
    assert float(total) == pytest.approx(float(single), rel=1e-5)
    assert float(total_padded) == pytest.approx(float(single), rel=1e-5)
    # and the mask matters: without it the same packed row gives a different loss
    with torch.no_grad():
        leaky = dict(packed, attention_mask=torch.ones(packed["input_ids"].shape, dtype=torch.long))
        del leaky["position_ids"]
        assert abs(float(task.loss(model, leaky) * task.batch_weight(leaky)) - float(single)) > 1e-3


def test_padding_saved_on_the_demo_data(tok, capsys):
    """The share of padding packing saves on the headline data (printed; the figure is a
    fact about the data, asserted only to be a saving)."""
    recs = headline_records()[:400]
    exs, _ = LM.encode_all(recs, tok, 128, "completion", strict=False)
    lengths = [len(e.ids) for e in exs]
    packs = LM.pack(lengths, 128)
    before, after = LM.padding_share(lengths, 128), LM.padding_share(lengths, 128, packs)
    with capsys.disabled():
        print(f"\nheadline data, max_length 128: {len(exs)} examples -> {len(packs)} packed rows; "
              f"padding {before:.1%} -> {after:.1%}")
    assert after < before
