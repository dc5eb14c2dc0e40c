"""Layer groups in LoRA mode (adapters vs base, train_base) and tied weights."""

from __future__ import annotations

import pytest
import torch

from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.engine import lora


def _lora(make_session, make_base, source="builtin:tiny-llama", causal=False, **kw):
    s = make_session(model=source, task="causal-lm" if causal else "sequence-classification", **kw)
    dctx = drop.DropoutContext(s.session.seed)
    model = lora.attach(make_base(source, causal=causal), s, dctx, "torch")
    return model, L.layer_groups(model)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_group_holds_adapters_and_base_separately(make_session, make_base):
    model, groups = _lora(make_session, make_base)
    assert L.group_names(groups) == ["embeddings", "layer.0", "layer.1", "head"]
    by = {g.name: g for g in groups}
    assert by["embeddings"].adapter_params() == []
    blk = by["layer.0"]
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in blk.adapter_params()} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(".layers.0." in n for n, _ in blk.params)
    assert all(not p.requires_grad for _, p in blk.base_params())
    rows = {r["name"]: r for r in L.describe(groups)}
    assert rows["layer.0"]["adapter_params"] + rows["layer.0"]["base_params"] == rows["layer.0"]["params"]
    assert rows["layer.0"]["trainable"] == rows["layer.0"]["adapter_params"]
    assert rows["head"]["trainable"] > 0 and rows["embeddings"]["trainable"] == 0
    assert not rows["layer.0"]["frozen"] and not rows["layer.0"]["train_base"]


def test_freeze_acts_on_exactly_the_blocks_adapters(make_session, make_base):
    model, groups = _lora(make_session, make_base)
    before = _trainable(model)
    changed = L.set_frozen(groups, ["layer.0"], True)
    block0 = {n for n in before if ".layers.0." in n}
    assert block0 and {id(p) for p in changed} == {id(p) for n, p in model.named_parameters() if n in block0}
    assert _trainable(model) == before - block0
    assert L.frozen_names(groups) == ["layer.0"]
    back = L.set_frozen(groups, ["layer.0"], False)
    assert len(back) == len(changed) and _trainable(model) == before


def test_train_base_trains_a_block_fully_beside_the_adapters(make_session, make_base):
    model, groups = _lora(make_session, make_base)
    adapters = _trainable(model)
    on, off = L.set_train_base(groups, ["layer.1"])
    block1_base = {n for n, _ in model.named_parameters() if ".layers.1." in n and not L.is_adapter(n)}
    assert off == [] and len(on) == len(block1_base)
    assert _trainable(model) == adapters | block1_base
    assert L.train_base_names(groups) == ["layer.1"]
    # freezing the group freezes its base as well as its adapters; unfreezing brings both back
    L.set_frozen(groups, ["layer.1"], True)
    assert not any(".layers.1." in n for n in _trainable(model))
    L.set_frozen(groups, ["layer.1"], False)
    assert _trainable(model) == adapters | block1_base
    on, off = L.set_train_base(groups, [])
    assert on == [] and len(off) == len(block1_base) and _trainable(model) == adapters
    # the block's base moved while it trained: checkpoints keep it from now on
    assert {g.name for g in groups if g.base_trained} == {"layer.1"}
    with pytest.raises(KeyError, match="unknown layer group 'layer.7'"):
        L.set_train_base(groups, ["layer.7"])


@pytest.mark.parametrize("source", ["builtin:tiny-gpt2", "builtin:tiny-llama"])
def test_tied_embeddings_and_head_are_one_tensor(make_base, source):
    model = make_base(source, causal=True, tie=True)
    groups = L.layer_groups(model)
    by = {g.name: g for g in groups}
    emb_w = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb_w
    assert any(p is emb_w for _, p in by["embeddings"].params)
    assert [p for _, p in by["head"].shared] == [emb_w] and all(p is not emb_w for _, p in by["head"].params)
    named = [p for g in groups for _, p in g.params]
    assert len(named) == len({id(p) for p in named}) == len(list(model.parameters()))  # each tensor once
    rows = {r["name"]: r for r in L.describe(groups)}
    assert rows["head"]["tied"] == ["embeddings"] and rows["embeddings"]["tied"] == ["head"]
    assert "freezing either group freezes it" in L.tied_note(groups)
    # freezing the head freezes the shared matrix (the output projection), not the rest of embeddings
    changed = L.set_frozen(groups, ["head"], True)
    assert any(p is emb_w for p in changed) and not emb_w.requires_grad
    # unfreezing the embeddings alone leaves it frozen: the head still is
    L.set_frozen(groups, ["embeddings"], True)
    assert L.set_frozen(groups, ["embeddings"], False) == [p for _, p in by["embeddings"].params if p is not emb_w]
    assert not emb_w.requires_grad
    back = L.set_frozen(groups, ["head"], False)
    assert any(p is emb_w for p in back) and emb_w.requires_grad
    # and a training step through the tied tensor gets one gradient (both uses summed)
    x = torch.randint(5, 500, (2, 8))
    model(input_ids=x, labels=x).loss.backward()
    assert emb_w.grad is not None


def test_untied_model_has_no_note(make_base):
    groups = L.layer_groups(make_base("builtin:tiny-llama", causal=True, tie=False))
    assert L.tied_note(groups) is None and all("tied" not in r for r in L.describe(groups))


def test_full_fine_tuning_groups_unchanged(make_base):
    model = make_base("builtin:tiny-bert")
    groups = L.layer_groups(model)
    assert L.group_names(groups) == ["embeddings", "layer.0", "layer.1", "head"]
    assert all(p.requires_grad for p in model.parameters())
    assert all(r["trainable"] == r["params"] and "adapter_params" not in r for r in L.describe(groups))
    L.set_frozen(groups, ["embeddings"], True)
    assert L.frozen_names(groups) == ["embeddings"]
    assert {r["name"]: r["trainable"] for r in L.describe(groups)}["embeddings"] == 0
