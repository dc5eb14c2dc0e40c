"""A checkpoint's optimizer state loads into the other AdamW (a run resumed with other
kernels: trained with Triton on a GPU, resumed on the CPU, or the reverse): the moments and
steps carry over, so the next steps equal the original optimizer's, where fresh moments
would not; a frozen parameter's state is dropped by both, as they drop it themselves."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tuneterm.engine import optim

HP = SimpleNamespace(adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))


def _opt(kind: str, model: nn.Module):
    named = list(model.named_parameters())
    if kind == "flat":  # FlatAdamW through its PyTorch path: the optimizer Triton runs on CUDA
        return optim.FlatAdamWAdapter(named, betas=(HP.adam_beta1, HP.adam_beta2), eps=HP.adam_eps, impl="torch")
    return optim.build(named, HP, impl="torch", dtype=torch.float32)


def _step(model: nn.Module, opt, k: int) -> None:
    gen = torch.Generator().manual_seed(100 + k)
    opt.zero_grad()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=gen)
    opt.step(lr=1e-2, weight_decay=0.1)


def _freeze(model: nn.Module, opt, frozen: bool) -> None:
    params = list(model[1].parameters())  # the norm
    for p in params:
        p.requires_grad_(not frozen)
    opt.set_frozen(params, frozen)


@pytest.mark.parametrize("src,dst", [("flat", "torch"), ("torch", "flat")])
def test_a_state_resumes_in_the_other_optimizer(src: str, dst: str):
    a = _model()
    opt_a = _opt(src, a)
    for k in range(3):
        _step(a, opt_a, k)
    _freeze(a, opt_a, True)
    _step(a, opt_a, 3)
    tensors, meta = opt_a.state_tensors()
    assert meta["impl"] == ("flat" if src == "flat" else "torch")

    def resumed(load: bool):
        b = _model()
        b.load_state_dict(a.state_dict())
        opt_b = _opt(dst, b)
        _freeze(b, opt_b, True)  # as resume restores the frozen groups before the optimizer
        if load:
            opt_b.load_state({k: v.clone() for k, v in tensors.items()}, meta)
        return b, opt_b

    b, opt_b = resumed(True)
    fresh, opt_f = resumed(False)
    for k in (4, 5):
        _step(a, opt_a, k)
        _step(b, opt_b, k)
        _step(fresh, opt_f, k)
    _freeze(a, opt_a, False)
    _freeze(b, opt_b, False)  # unfrozen: both start the norm afresh
    _step(a, opt_a, 6)
    _step(b, opt_b, 6)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, rtol=0, atol=1e-6), (n, (pa - pb).abs().max())
    # what the test tells apart: without the moments, the weights go elsewhere
    assert (a[0].weight - fresh[0].weight).abs().max() > 1e-3


def test_bf16_masters_do_not_go_into_the_torch_optimizer():
    model = _model()
    with pytest.raises(ValueError, match="master weights"):
        _opt("torch", model).load_state({"master/0.weight": torch.zeros(3, 4)},
                                        {"impl": "flat", "params": {}})


def test_a_run_trained_with_triton_resumes_on_the_torch_kernels(workspace):
    """End to end (Triton's interpreter standing in for a GPU): a tiny-BERT run trained with
    the Triton kernels, cut back to its step-3 checkpoint and resumed with the torch kernels,
    trains steps 4-6 as the uninterrupted Triton run does (within float noise), and its later
    checkpoints say which kernels wrote them."""
    import json
    import shutil

    from engine_helpers import rows
    from tiny_sessions import tiny_session_toml

    from tuneterm.engine.runs import create_run, train_run
    from tuneterm.session.io import loads_session

    pytest.importorskip("triton")
    text = tiny_session_toml("kx", steps=6, checkpoint_interval=3, keep_last=5).replace("dropout = 0.1", "dropout = 0.0")
    session = loads_session(text.replace('kernels = "torch"', 'kernels = "triton"'))
    whole = create_run(workspace, session)
    assert train_run(whole, workspace, sinks=[])[0] == 0
    cut = whole.with_name(whole.name + "-cut")
    shutil.copytree(whole, cut)
    for c in (cut / "checkpoints").iterdir():
        if c.name > "step-00000003":
            shutil.rmtree(c)
    assert train_run(cut, workspace, sinks=[], resume=True, kernels="torch")[0] == 0
    a = [r for r in rows(whole) if r["kind"] == "train"]
    b = [r for r in rows(cut) if r["kind"] == "train"]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a[3:], b[3:]):
        assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x["step"], x["loss"], y["loss"])
    assert json.loads((whole / "checkpoints" / "step-00000006" / "state.json").read_text())["kernels"] == "triton"
    assert json.loads((cut / "checkpoints" / "step-00000006" / "state.json").read_text())["kernels"] == "torch"
