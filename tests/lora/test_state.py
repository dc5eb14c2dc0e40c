"""What a LoRA checkpoint holds, the base fingerprint, and LoRA+ (B's learning rate)."""

from __future__ import annotations

import pytest
import torch

from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.engine import lora, optim
from tuneterm.errors import UserError


def _lora(make_session, make_base, source="builtin:tiny-llama", causal=True, base_seed=3, **kw):
    s = make_session(model=source, task="causal-lm" if causal else "sequence-classification", **kw)
    dctx = drop.DropoutContext(s.session.seed)
    model = lora.attach(make_base(source, causal=causal, seed=base_seed), s, dctx, "torch")
    return s, model, L.layer_groups(model)


def test_checkpoint_holds_adapters_and_trained_base_only(make_session, make_base):
    s, model, groups = _lora(make_session, make_base, source="builtin:tiny-bert", causal=False)
    t = lora.checkpoint_tensors(model, groups)
    assert set(t) == {n for g in groups for n in g.adapter}
    assert any(".modules_to_save." in n for n in t)  # the classifier head, fully trained
    full = sum(v.numel() for v in model.state_dict().values())
    assert sum(v.numel() for v in t.values()) < 0.02 * full
    L.set_train_base(groups, ["layer.1"])
    L.set_train_base(groups, [])  # switched off again: its weights moved, so they are kept
    t2 = lora.checkpoint_tensors(model, groups)
    assert set(t2) - set(t) == {n for n, _ in next(g for g in groups if g.name == "layer.1").base_params()}


def test_load_tensors_round_trip_and_refusals(make_session, make_base):
    s, model, groups = _lora(make_session, make_base)
    L.set_train_base(groups, ["layer.0"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.25)
    saved = lora.checkpoint_tensors(model, groups)
    _, fresh, fresh_groups = _lora(make_session, make_base)
    lora.load_tensors(fresh, fresh_groups, saved)
    assert [g.name for g in fresh_groups if g.base_trained] == ["layer.0"]
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(UserError, match="adapter tensor .* is missing"):
        lora.load_tensors(fresh, fresh_groups, {k: v for k, v in saved.items() if ".lora_A." not in k})
    with pytest.raises(UserError, match="'nope.weight' is not a parameter"):
        lora.load_tensors(fresh, fresh_groups, {**saved, "nope.weight": torch.zeros(1)})


def test_fingerprint_is_of_the_base_only(make_session, make_base):
    s, model, groups = _lora(make_session, make_base)
    fp = lora.fingerprint(model)
    assert fp == lora.fingerprint(_lora(make_session, make_base)[1])  # rebuilt: the same base
    with torch.no_grad():
        for n, p in model.named_parameters():
            if L.is_adapter(n):
                p.add_(1.0)
    assert lora.fingerprint(model) == fp  # adapters are not the base
    other = _lora(make_session, make_base, base_seed=4)[1]  # another random base, same shapes
    assert lora.fingerprint(other) != fp
    base = model.get_base_model()
    with torch.no_grad():  # one sampled value of one tensor (index 0 is always sampled)
        base.model.layers[1].mlp.down_proj.weight.view(-1)[0] += 1e-3
    assert lora.fingerprint(model) != fp


def test_lora_plus_scales_b_learning_rate(make_session, make_base):
    s, model, groups = _lora(make_session, make_base, lr_ratio=4.0)
    scale = lora.lr_scale(groups, 4.0)
    assert scale and all(".lora_B." in n for n in scale)
    named = [(n, p) for g in groups for n, p in g.params]
    opt = optim.build(named, s.hyperparameters, impl="torch", dtype=torch.float32, lr_scale=scale)
    lrs = {}
    opt.step(1e-3, 0.0)
    for g in opt.opt.param_groups:
        for p in g["params"]:
            lrs[opt.names[p]] = g["lr"]
    assert {lrs[n] for n in scale} == {4e-3}
    assert {v for n, v in lrs.items() if n not in scale} == {1e-3}
    opt.set_lr_scale(2.0)
    opt.step(1e-3, 0.0)
    assert {g["lr"] for g in opt.opt.param_groups[2:]} == {2e-3}


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_flat_adamw_scales_the_learning_rate_per_segment(impl, monkeypatch):
    """LoRA+ on the flat optimizer (the default on CUDA): a segment's lr x its factor equals
    torch.optim.AdamW with that segment in a group of lr x factor, live changes included."""
    if impl == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    from tuneterm_kernels.adamw import FlatAdamW

    g = torch.Generator().manual_seed(0)
    shapes = {"a": (9, 5), "b": (7, 3), "bias": (11,), "c": (4, 4)}
    mine = {n: torch.nn.Parameter(torch.randn(s, generator=g)) for n, s in shapes.items()}
    ref = {n: torch.nn.Parameter(p.detach().clone()) for n, p in mine.items()}
    flat = FlatAdamW([(n, p, p.dim() >= 2) for n, p in mine.items()], impl=impl)
    groups = [{"params": [ref["a"], ref["c"]], "weight_decay": 0.1, "scale": 1.0},
              {"params": [ref["bias"]], "weight_decay": 0.0, "scale": 1.0},
              {"params": [ref["b"]], "weight_decay": 0.1, "scale": 4.0}]
    torch_opt = torch.optim.AdamW(groups, lr=0.0, foreach=False)
    flat.set_lr_scale(["b"], 4.0)
    for step in range(1, 7):
        if step == 4:  # a live lora_lr_ratio edit
            flat.set_lr_scale(["b"], 0.5)
            groups[2]["scale"] = 0.5
        grads = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
        for params in (mine, ref):
            for n, p in params.items():
                p.grad = grads[n].clone()
        lr = 1e-2 * step
        flat.step(lr=lr, weight_decay=0.1)
        for grp in torch_opt.param_groups:
            grp["lr"] = lr * grp["scale"]
        torch_opt.step()
        for n in shapes:
            torch.testing.assert_close(mine[n].detach(), ref[n].detach(), rtol=1.3e-6, atol=1e-6, msg=n)
    with pytest.raises(ValueError, match="scale"):
        flat.set_lr_scale(["b"], 0.0)


def test_lora_plus_ratio_one_is_the_plain_optimizer(make_session, make_base):
    """Splitting B into its own parameter groups at ratio 1 changes no number."""
    out = []
    for scaled in (False, True):
        s, model, groups = _lora(make_session, make_base)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".lora_B." in n:
                    p.fill_(0.02)
        named = [(n, p) for g in groups for n, p in g.params]
        scale = lora.lr_scale(groups, 1.0) if scaled else None
        opt = optim.build(named, s.hyperparameters, impl="torch", dtype=torch.float32, lr_scale=scale)
        x = torch.randint(5, 500, (2, 8), generator=torch.Generator().manual_seed(0))
        for _ in range(3):
            model(input_ids=x, labels=x).loss.backward()
            opt.step(1e-2, 0.1)
            opt.zero_grad()
        out.append(lora.checkpoint_tensors(model, groups))
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_live_edits_through_apply_edit(make_session, make_base):
    s, model, groups = _lora(make_session, make_base, dropout=0.1)

    class T:  # the trainer attributes apply_edit uses
        pass

    t = T()
    t.model, t.groups = model, groups
    t.opt = optim.build([(n, p) for g in groups for n, p in g.params], s.hyperparameters, impl="torch",
                        dtype=torch.float32, lr_scale=lora.lr_scale(groups, 1.0))
    lora.apply_edit(t, "dropout", 0.2)
    assert {m.p for m in model.modules() if getattr(m, "_tt_lora", False)} == {0.2}
    lora.apply_edit(t, "train_base", ["layer.1"])
    assert L.train_base_names(groups) == ["layer.1"]
    lora.apply_edit(t, "lr_ratio", 8.0)
    assert {g["lr_scale"] for g in t.opt.opt.param_groups[2:]} == {8.0}
    assert lora.check_edit(groups, "train_base", ["layer.9"]).startswith("train_base: unknown layer group 'layer.9'")
    with pytest.raises(UserError):
        lora.apply_edit(t, "train_base", ["layer.9"])


@pytest.mark.parametrize("n", [1, 7, 1024, 1025, 28_311_552, 2**31 + 5])
def test_fingerprint_samples_stay_inside_the_tensor(n):
    """SmolLM2's embedding matrix has 28,311,552 values: a float32 linspace ran past it."""
    idx = lora.sample_index(n)
    assert len(idx) == min(n, lora.FINGERPRINT_SAMPLES) and int(idx[0]) == 0 and int(idx[-1]) == n - 1
    assert bool((idx[1:] > idx[:-1]).all())
