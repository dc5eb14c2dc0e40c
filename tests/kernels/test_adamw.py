"""FlatAdamW (torch path and Triton kernel through the interpreter) against
torch.optim.AdamW(foreach=False), with live freezing, bf16 masters and exact resume."""

import io
import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tuneterm_kernels.adamw import FlatAdamW

IMPLS = ["torch", "triton"]
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs CUDA")])
DEVICES = ["cpu", CUDA]
RTOL, ATOL = 1.3e-6, 1e-5
BETAS, EPS = (0.9, 0.999), 1e-8

# (name, shape, decay): odd sizes, a zero- and a one-element parameter
SPEC = [
    ("emb", (37, 9), True),
    ("w1", (33, 17), True),
    ("b1", (17,), False),
    ("empty", (0,), True),
    ("one", (1,), False),
    ("w2", (5, 7, 3), True),
    ("ln", (301,), False),
    ("tiny", (1, 1), True),
    ("small", (23,), True),  # gradients ~1e-8: where eps sits shows
]
# step -> (freeze, unfreeze) applied before that step (1-based)
SCHEDULE = {3: (["w1", "b1"], []), 5: (["one"], ["w1"]), 7: ([], ["b1", "one"]), 8: (["emb"], [])}
N_STEPS = 9


def make_params(dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [(n, torch.nn.Parameter(torch.randn(s, generator=g).to(device, dtype)), d) for n, s, d in SPEC]


def grads_for(step, seed=1):
    g = torch.Generator().manual_seed(1000 * seed + step)
    out = {n: torch.randn(s, generator=g) for n, s, _ in SPEC}
    out["small"] *= 1e-8
    return out


def lr_at(step):
    return 1e-2 * (0.5 + 0.1 * step)  # changes every step: a runtime value


def grad_scale_at(step):
    return 0.5 if step == 4 else 1.0


class Reference:
    """torch.optim.AdamW(foreach=False) on fp32 copies, freezing the way torch does it:
    a frozen parameter has no gradient (skipped); unfreezing starts a fresh state."""

    def __init__(self, params, wd):
        self.p = {n: torch.nn.Parameter(p.detach().float().clone()) for n, p, _ in params}
        decay = [self.p[n] for n, _, d in params if d]
        no_decay = [self.p[n] for n, _, d in params if not d]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=1.0, betas=BETAS, eps=EPS, foreach=False)
        self.frozen = set()

    def set_active(self, names, active):
        for n in names:
            if active:
                self.frozen.discard(n)
                self.opt.state.pop(self.p[n], None)
            else:
                self.frozen.add(n)

    def step(self, grads, lr, grad_scale):
        for n, p in self.p.items():
            p.grad = None if n in self.frozen else grads[n].clone()
            if p.grad is not None and grad_scale != 1.0:
                p.grad.mul_(grad_scale)
        for grp in self.opt.param_groups:
            grp["lr"] = lr
        self.opt.step()


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


def run_steps(opt, params, steps, ref=None, wd=0.1):
    pmap = {n: p for n, p, _ in params}
    for step in steps:
        freeze, unfreeze = SCHEDULE.get(step, ([], []))
        if freeze:
            opt.set_active(freeze, False)
        if unfreeze:
            opt.set_active([pmap[n] for n in unfreeze], True)  # by object, too
        if ref is not None:
            ref.set_active(freeze, False)
            ref.set_active(unfreeze, True)
        grads = grads_for(step)
        before = {n: p.detach().clone() for n, p, _ in params}
        opt.zero_grad()
        for n, p, _ in params:
            if opt.is_active(n):
                p.grad.copy_(grads[n].to(p.dtype))
        opt.step(lr=lr_at(step), weight_decay=wd, beta1=BETAS[0], beta2=BETAS[1], eps=EPS,
                 grad_scale=grad_scale_at(step))
        if ref is not None:
            ref_grads = {n: g.to(pmap[n].device, pmap[n].dtype).float() for n, g in grads.items()}
            ref.step(ref_grads, lr_at(step), grad_scale_at(step))
        for n, p, _ in params:
            if not opt.is_active(n):
                assert torch.equal(p.detach(), before[n]), f"step {step}: frozen {n} changed"
        yield step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("wd", [0.1, 0.0])
def test_fp32_matches_torch_adamw_with_freeze_schedule(impl, wd, device):
    params = make_params(device=device)
    ref = Reference(params, wd)
    opt = FlatAdamW(params, impl=impl, block_size=64)
    for step in run_steps(opt, params, range(1, N_STEPS + 1), ref, wd):
        for n, p, _ in params:
            close(p.detach(), ref.p[n].detach(), f"{impl} wd={wd} step {step} param {n}")
            if opt.is_active(n) and p.numel():
                st = ref.opt.state[ref.p[n]]
                assert opt.step_count(n) == int(st["step"]), f"step {step} {n}: step count"
    # the unfrozen params restarted: their step counts are those of a fresh state
    assert opt.step_count("w1") == N_STEPS - 5 + 1 and opt.step_count("b1") == N_STEPS - 7 + 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_params_keep_fp32_master(impl, dtype, device):
    params = make_params(dtype, device=device)
    ref = Reference(params, 0.1)
    opt = FlatAdamW(params, impl=impl, block_size=64)
    for step in run_steps(opt, params, range(1, 8), ref):
        tensors, _ = opt.state_dict()
        for n, p, _ in params:
            master = tensors[f"master/{n}"]
            # the model copy is the master rounded to nearest even, bit for bit
            assert torch.equal(p.detach().view(torch.int16), master.to(dtype).view(torch.int16)), \
                f"{impl} step {step} {n}: model != cast(master)"
            close(master, ref.p[n].detach(), f"{impl} {dtype} step {step} master {n}")


def test_triton_and_torch_impls_agree():
    outs = {}
    for impl in IMPLS:
        params = make_params()
        opt = FlatAdamW(params, impl=impl, block_size=64)
        for _ in run_steps(opt, params, range(1, N_STEPS + 1)):
            pass
        outs[impl] = [p.detach() for _, p, _ in params]
    for (n, _, _), a, b in zip(SPEC, outs["triton"], outs["torch"]):
        close(a, b, f"triton vs torch {n}", rtol=1e-6, atol=1e-7)


def roundtrip(tensors, meta):
    """Through the real formats: safetensors bytes and JSON text (no pickling)."""
    return st_load(st_save(tensors)), json.loads(json.dumps(meta))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_state_dict_round_trip_resumes_exactly(impl, dtype, device):
    # uninterrupted
    pa = make_params(dtype, device=device)
    oa = FlatAdamW(pa, impl=impl, block_size=64)
    for _ in run_steps(oa, pa, range(1, N_STEPS + 1)):
        pass
    # interrupted after step 5 (a frozen parameter at that moment), resumed in a fresh optimizer
    pb = make_params(dtype, device=device)
    ob = FlatAdamW(pb, impl=impl, block_size=64)
    for _ in run_steps(ob, pb, range(1, 6)):
        pass
    tensors, meta = roundtrip(*ob.state_dict())
    model = st_load(st_save({n: p.detach().clone() for n, p, _ in pb}))
    pc = make_params(dtype, seed=99, device=device)  # different initial values: everything must come from the checkpoint
    with torch.no_grad():
        for n, p, _ in pc:
            p.copy_(model[n])
    oc = FlatAdamW(pc, impl=impl, block_size=64)
    oc.load_state_dict(tensors, meta)
    assert not oc.is_active("one") and oc.step_count("w1") == 1
    for _ in run_steps(oc, pc, range(6, N_STEPS + 1)):
        pass
    for (n, a, _), (_, c, _) in zip(pa, pc):
        assert torch.equal(a.detach(), c.detach()), f"{impl} {dtype} {n}: resumed run differs " \
            f"(max |diff| {(a.detach().float() - c.detach().float()).abs().max().item():.3g})"
    ta, ma = oa.state_dict()
    tc, mc = oc.state_dict()
    assert ma == mc and ta.keys() == tc.keys()
    assert all(torch.equal(ta[k], tc[k]) for k in ta)


def test_load_rejects_mismatched_state():
    params = make_params()
    opt = FlatAdamW(params)
    tensors, meta = opt.state_dict()
    other = FlatAdamW([(n, torch.nn.Parameter(torch.zeros(3)), True) for n in ("a", "b")])
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(tensors, meta)
    with pytest.raises(ValueError, match="format"):
        opt.load_state_dict(tensors, {"params": meta["params"]})


def test_views_autograd_and_no_reflatten():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(13, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))
    named = [(n, p, p.dim() >= 2) for n, p in model.named_parameters()]
    opt = FlatAdamW(named, impl="torch")
    ptrs = [(g.master.data_ptr(), g.grad.data_ptr()) for g in opt.groups]
    storage = opt.groups[0].master.untyped_storage().data_ptr()
    for _, p, _ in named:
        assert p.untyped_storage().data_ptr() == storage and p.grad.untyped_storage().data_ptr() == ptrs[0][1]
    x = torch.randn(5, 13)
    model(x).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p, _ in named}
    assert opt.grads_flat[0].abs().sum() > 0, "autograd must accumulate into the flat buffer"
    ref = torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads.values()])
    # bit-identical to the engine's torch path (stacked per-tensor norms)
    assert torch.equal(opt.grad_norm(), torch.linalg.vector_norm(ref, 2.0)), (opt.grad_norm(), ref)
    opt.set_active(["0.weight", "0.bias"], False)
    opt.set_active(["0.weight"], True)
    assert [(g.master.data_ptr(), g.grad.data_ptr()) for g in opt.groups] == ptrs, "set_active re-flattened"
    # a set_to_none zero_grad elsewhere is tolerated: the next step re-binds the views
    model.zero_grad(set_to_none=True)
    model(x).pow(2).sum().backward()
    opt.step(lr=1e-3, weight_decay=0.01)
    for _, p, _ in named:
        assert p.grad.untyped_storage().data_ptr() == ptrs[0][1]
    assert opt.step_count("0.bias") == 0 and opt.step_count("2.weight") == 1


def test_grad_norm_bf16_reduced_in_fp32_and_only_active():
    params = make_params(torch.bfloat16)
    opt = FlatAdamW(params)
    grads = grads_for(1)
    for n, p, _ in params:
        p.grad.copy_(grads[n].to(torch.bfloat16))
    opt.set_active(["w1"], False)
    ref = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grads[n].to(torch.bfloat16).float(), 2.0)
                                                for n, _, _ in params if n != "w1"]), 2.0)
    torch.testing.assert_close(opt.grad_norm(), ref, rtol=1e-6, atol=0)
    assert opt.grad_norm().dtype == torch.float32


def test_rejects_mixed_devices_and_bad_dtypes():
    with pytest.raises(TypeError):
        FlatAdamW([("x", torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)), True)])
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="duplicate"):
        FlatAdamW([("x", p, True), ("x", torch.nn.Parameter(torch.zeros(2)), True)])
    with pytest.raises(ValueError, match="twice"):
        FlatAdamW([("x", p, True), ("y", p, True)])


# --------------------------------------------------------------------------------------
# GPU: the same properties at real sizes (skipped without CUDA)
# --------------------------------------------------------------------------------------

def bert_like_shapes(layers=12, hidden=768):
    shapes = [((30522, hidden), True), ((512, hidden), True), ((hidden,), False), ((hidden,), False)]
    for _ in range(layers):
        shapes += [((hidden, hidden), True), ((hidden,), False)] * 4
        shapes += [((hidden,), False)] * 2
        shapes += [((4 * hidden, hidden), True), ((4 * hidden,), False), ((hidden, 4 * hidden), True),
                   ((hidden,), False), ((hidden,), False), ((hidden,), False)]
    return shapes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_bert_sized_matches_torch_adamw(dtype):
    torch.manual_seed(0)
    shapes = bert_like_shapes()
    params = [(f"p{i}", torch.nn.Parameter(torch.randn(s, device="cuda").to(dtype) * 0.02), d)
              for i, (s, d) in enumerate(shapes)]
    ref_p = [torch.nn.Parameter(p.detach().float().clone()) for _, p, _ in params]
    ref = torch.optim.AdamW([{"params": [q for q, (_, _, d) in zip(ref_p, params) if d], "weight_decay": 0.01},
                             {"params": [q for q, (_, _, d) in zip(ref_p, params) if not d],
                              "weight_decay": 0.0}], lr=1.0, betas=BETAS, eps=EPS, foreach=False)
    opt = FlatAdamW(params, impl="triton")
    half = [n for n, _, _ in params[: len(params) // 2]]
    for step in range(1, 8):
        if step == 3:  # freeze the first half of the layers
            opt.set_active(half, False)
        if step == 6:  # and bring them back: fresh state
            opt.set_active(half, True)
            for q in ref_p[: len(params) // 2]:
                ref.state.pop(q, None)
        lr = 1e-3 * step
        for (n, p, _), q in zip(params, ref_p):
            g = torch.randn_like(q)
            p.grad.copy_(g.to(dtype))
            q.grad = None if not opt.is_active(n) else g.to(dtype).float()
        for grp in ref.param_groups:
            grp["lr"] = lr
        opt.step(lr=lr, weight_decay=0.01, beta1=BETAS[0], beta2=BETAS[1], eps=EPS)
        ref.step()
        tensors, _ = opt.state_dict()
        for (n, p, _), q in zip(params, ref_p):
            master = p.detach() if dtype == torch.float32 else tensors[f"master/{n}"]
            close(master, q.detach(), f"cuda {dtype} step {step} {n}")
            if dtype != torch.float32:
                assert torch.equal(p.detach().view(torch.int16), master.to(dtype).view(torch.int16)), n
    assert torch.isfinite(opt.grad_norm())
