"""lora.attach: PEFT's adapters, counts, target checking, seeded adapter dropout."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.engine import lora
from tuneterm.errors import UserError


def _attach(model, session, p_hidden=0.0):
    dctx = drop.DropoutContext(session.session.seed)
    drop.install(model, dctx, p_hidden, "torch")
    return lora.attach(model, session, dctx, "torch"), dctx


@pytest.mark.parametrize("source,causal", [("builtin:tiny-bert", False), ("builtin:tiny-llama", False),
                                           ("builtin:tiny-llama", True), ("builtin:tiny-gpt2", True)])
@pytest.mark.parametrize("targets", ["all-linear", "few"])
def test_trainable_count_equals_peft(make_session, make_base, source, causal, targets):
    from peft import get_peft_model

    few = {"builtin:tiny-bert": ["query", "value"], "builtin:tiny-llama": ["q_proj", "down_proj"],
           "builtin:tiny-gpt2": ["c_attn"]}[source]
    s = make_session(model=source, task="causal-lm" if causal else "sequence-classification", r=3, alpha=6.0,
                     targets="all-linear" if targets == "all-linear" else few)
    ref = get_peft_model(make_base(source, causal=causal), lora.peft_config(s))
    expected, _ = ref.get_nb_trainable_parameters()
    model, _ = _attach(make_base(source, causal=causal), s)
    groups = L.layer_groups(model)
    assert lora.trainable_count(model) == expected
    assert sum(g.trainable_numel() for g in groups) == expected
    # the head of a classifier trains fully (PEFT's modules_to_save copy), and nothing of the base else
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(L.is_adapter(n) for n in trainable)
    assert any(".modules_to_save." in n for n in trainable) == (not causal)


def test_unknown_target_module_did_you_mean(make_session, make_base):
    s = make_session(model="builtin:tiny-llama", targets=["q_proj", "v_prj"])
    with pytest.raises(UserError) as e:
        _attach(make_base("builtin:tiny-llama"), s)
    msg = str(e.value)
    assert "\n" not in msg and "lora.target_modules" in msg and "'v_prj'" in msg and "did you mean 'v_proj'" in msg


def test_adapter_dropout_is_seeded_and_live(make_session, make_base):
    s = make_session(model="builtin:tiny-bert", dropout=0.3)
    model, dctx = _attach(make_base("builtin:tiny-bert"), s)
    sites = [m for m in model.modules() if getattr(m, "_tt_lora", False)]
    assert len(sites) == 13 and all(m.p == 0.3 for m in sites)  # 6 linears x 2 blocks + the pooler
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    # make B non-zero so the adapters (and their dropout) change the output
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model)
    dctx_twin = drop.DropoutContext(s.session.seed)  # the copy draws from its own context, same seed
    for m in twin.modules():
        if getattr(m, "_tt_lora", False):
            m.seed_fn = functools.partial(dctx_twin.seed_for, m.site)
    x = torch.randint(5, 500, (2, 12))

    def logits(mdl, ctx, step):
        mdl.train()
        ctx.at(step, 0)
        return mdl(input_ids=x).logits

    a, b = logits(model, dctx, 4), logits(twin, dctx_twin, 4)
    assert torch.equal(a, b)  # the same (seed, step, micro) draws the same masks
    assert not torch.equal(a, logits(model, dctx, 5))  # another step, other masks
    lora.set_lora_dropout(model, 0.0)
    model.eval()
    ref = model(input_ids=x).logits
    assert torch.equal(logits(model, dctx, 5), ref)  # p = 0: no mask at all


def test_dropout_zero_output_equals_peft(make_session, make_base):
    """With p = 0 the wrapped model computes exactly PEFT's LoRA forward."""
    from peft import get_peft_model

    s = make_session(model="builtin:tiny-llama", task="causal-lm", dropout=0.0)
    model, dctx = _attach(make_base("builtin:tiny-llama", causal=True), s)
    ref = get_peft_model(make_base("builtin:tiny-llama", causal=True), lora.peft_config(s))
    ref.load_state_dict(model.state_dict())
    for net in (ref, model):
        with torch.no_grad():
            for n, p in net.named_parameters():
                if ".lora_B." in n:
                    p.fill_(0.01)
    x = torch.randint(5, 500, (2, 10))
    dctx.at(0, 0)
    model.train(), ref.eval()  # ref: no dropout at all; ours: training mode, every p = 0
    torch.testing.assert_close(model(input_ids=x).logits, ref(input_ids=x).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_smollm2_trainable_count_equals_peft(make_session):
    """SmolLM2-135M, r 16 on every linear layer: the count PEFT reports, and the tied head."""
    from peft import get_peft_model

    from tuneterm.engine.models import build_causal_lm, load_tokenizer

    tok = load_tokenizer("builtin:smollm2-135m")
    s = make_session(model="builtin:smollm2-135m", task="causal-lm", r=16, alpha=32.0)
    ref = get_peft_model(build_causal_lm("builtin:smollm2-135m", tokenizer=tok, meta=True), lora.peft_config(s))
    expected, _ = ref.get_nb_trainable_parameters()
    model, _ = _attach(build_causal_lm("builtin:smollm2-135m", tokenizer=tok), s)
    groups = L.layer_groups(model)
    h, kv, i = 576, 192, 1536  # hidden, key/value width (3 of 9 heads), MLP width
    per_block = (h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h)  # q k v o gate up down
    assert lora.trainable_count(model) == expected == 30 * 16 * per_block  # 4,884,480
    assert len(groups) == 32 and L.tied_note(groups) is not None


def test_a_string_target_is_one_module_name(make_session, make_base):
    """`target_modules = "q_proj"` adapts the q_proj layers (it was split into 'q', '_', ...)."""
    s = make_session(model="builtin:tiny-llama", targets="q_proj")
    model, _ = _attach(make_base("builtin:tiny-llama"), s)
    adapted = {n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted == {"q_proj"}
    with pytest.raises(UserError, match=r"no linear layer named 'q_prj' in this model; did you mean 'q_proj'"):
        _attach(make_base("builtin:tiny-llama"), make_session(model="builtin:tiny-llama", targets="q_prj"))


def test_an_adapter_on_a_tied_output_layer_is_refused(make_session, make_base):
    """GPT-2's lm_head is its token-embedding matrix: an adapter merged into it would change
    the input embeddings too (`export --merge` gave other logits), so it is refused."""
    s = make_session(model="builtin:tiny-gpt2", task="causal-lm", targets=["c_attn", "lm_head"])
    with pytest.raises(UserError) as e:
        _attach(make_base("builtin:tiny-gpt2", causal=True), s)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("lora.target_modules: 'lm_head'") and "transformer.wte.weight" in msg
    model, _ = _attach(make_base("builtin:tiny-gpt2", causal=True, tie=False), s)  # untied: fine
    assert any(".lm_head.lora_A." in n for n, _ in model.named_parameters())
