"""Seeded dropout: the Triton kernel (interpreter here) against the PyTorch generator.

Element order, generator and thresholds are described in tuneterm_kernels/dropout.py.
"""

import math

import pytest
import torch

from tuneterm_kernels import dropout as D

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SEED = 0x5EED_0000_1234_5678 & ((1 << 63) - 1)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def assert_bit_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    if not torch.equal(bits(a), bits(b)):
        as_int = {2: torch.int16, 4: torch.int32}[a.element_size()]
        bad = (a.contiguous().view(as_int) != b.contiguous().view(as_int)).reshape(-1).nonzero().flatten()
        i = bad[:5].tolist()
        raise AssertionError(f"{what}: {len(bad)} of {a.numel()} elements differ; first at {i}: "
                             f"{a.reshape(-1)[i].tolist()} vs {b.reshape(-1)[i].tolist()}")


def test_philox_words_equal_tl_randint4x():
    """The PyTorch Philox produces the very words of Triton's tl.randint4x."""
    import triton
    import triton.language as tl

    @triton.jit
    def words_kernel(out, seed, ctr_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        m = offs < n
        c = tl.load(ctr_ptr + offs, mask=m, other=0)
        r0, r1, r2, r3 = tl.randint4x(seed, c)
        tl.store(out + offs * 4, r0.to(tl.int64), mask=m)
        tl.store(out + offs * 4 + 1, r1.to(tl.int64), mask=m)
        tl.store(out + offs * 4 + 2, r2.to(tl.int64), mask=m)
        tl.store(out + offs * 4 + 3, r3.to(tl.int64), mask=m)

    ctr = torch.tensor(list(range(40)) + [2**32 - 1, 2**32, 2**32 + 1, 2**40 + 3, 2**62 - 1], dtype=torch.int64)
    for seed in [0, 1, 2**31 + 7, 2**32, SEED, 2**63 - 1]:
        out = torch.zeros(len(ctr) * 4, dtype=torch.int64)
        words_kernel[(1,)](out, seed, ctr, len(ctr), BLOCK=64)
        ref = torch.stack(D.philox4x32(seed, ctr), 1).reshape(-1)
        assert torch.equal(out, ref), f"seed {seed}: first differing word {(out != ref).nonzero()[:3].tolist()}"


def test_mulhilo_is_exact():
    g = torch.Generator().manual_seed(0)
    b = torch.randint(0, 2**32, (4096,), generator=g, dtype=torch.int64)
    b[:3] = torch.tensor([0, 1, 2**32 - 1])
    for a in (D.PHILOX_ROUND_A, D.PHILOX_ROUND_B, 2**32 - 1):
        hi, lo = D._mulhilo(a, b)
        ref = [(a * v) for v in b.tolist()]
        assert hi.tolist() == [r >> 32 for r in ref]
        assert lo.tolist() == [r & 0xFFFFFFFF for r in ref]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (7,), (9,), (3, 5, 7), (1000,), (33, 257)], ids=str)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.97])
def test_forward_and_backward_equal_torch_generator(dtype, shape, p):
    x = torch.randn(shape, dtype=dtype)
    g = torch.randn(shape, dtype=dtype)
    out = {}
    for impl in ("torch", "triton"):
        xi = x.clone().requires_grad_()
        y = D.dropout(xi, p, SEED, 3, impl=impl)
        y.backward(g)
        out[impl] = (y.detach(), xi.grad)
    # the definition, spelled out once more: where(keep, fp32(x) * fp32(1/(1-p)), 0)
    keep = D.philox_keep_mask(SEED, 3, x.numel(), p).view(shape)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    ref_y = torch.where(keep, (x.float() * scale).to(dtype), torch.zeros((), dtype=dtype))
    ref_g = torch.where(keep, (g.float() * scale).to(dtype), torch.zeros((), dtype=dtype))
    for impl, (y, gx) in out.items():
        assert_bit_equal(y, ref_y, f"{impl} forward")
        assert_bit_equal(gx, ref_g, f"{impl} backward")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_5_sigma(p):
    n = 100_000
    keep = D.philox_keep_mask(SEED + 11, 0, n, p)
    rate = keep.double().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep rate {rate:.5f}, expected {1 - p} +- 5*{sigma:.5f}"
    # the Triton kernel keeps the same elements
    y = D.dropout(torch.ones(n), p, SEED + 11, 0, impl="triton")
    assert torch.equal(y != 0, keep)


def test_p0_eval_are_identity_and_p1_is_zero():
    x = torch.randn(4, 9, requires_grad=True)
    for impl in ("torch", "triton"):
        assert D.dropout(x, 0.0, SEED, impl=impl) is x
        assert D.dropout(x, 0.5, SEED, training=False, impl=impl) is x
        y = D.dropout(x, 1.0, SEED, impl=impl)
        assert torch.equal(y, torch.zeros_like(x))
        (gx,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(gx, torch.zeros_like(x))
    with pytest.raises(ValueError):
        D.dropout(x, 1.5, SEED)
    with pytest.raises(ValueError):
        D.dropout(x, 0.1, -1)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_non_contiguous_inputs_use_logical_order(impl):
    base = torch.randn(24, 37)
    views = [base.t(), base[:, 3:30:2], base[::3], base.t()[5:, ::2], base.expand(1, 24, 37)[0]]
    for v in views:
        assert not v.is_contiguous() or v is views[-1]
        a = D.dropout(v, 0.3, SEED, 5, impl=impl)
        b = D.dropout(v.contiguous(), 0.3, SEED, 5, impl=impl)
        assert_bit_equal(a, b, f"{impl} view {tuple(v.shape)}/{v.stride()}")
    # gradient of a non-contiguous grad_output
    x = base.t().clone().requires_grad_()
    y = D.dropout(x, 0.3, SEED, 5, impl=impl)
    g = torch.randn(24, 37).t()  # a non-contiguous grad_output
    (gx,) = torch.autograd.grad(y, x, g)
    assert_bit_equal(gx, D.dropout(g.contiguous(), 0.3, SEED, 5, impl="torch"), f"{impl} non-contiguous grad")


def test_offset_counts_philox_calls_and_seeds_differ():
    whole = D.philox_uniform16(SEED, 10, 64)
    assert torch.equal(whole[16:], D.philox_uniform16(SEED, 12, 48))
    a = D.philox_keep_mask(SEED, 0, 4096, 0.5)
    b = D.philox_keep_mask(SEED + 1, 0, 4096, 0.5)
    assert (a != b).float().mean() > 0.4
    assert torch.equal(a, D.philox_keep_mask(SEED, 0, 4096, 0.5))


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_empty_tensors_and_offsets_across_2_32(impl):
    for shape in [(0,), (2, 0, 3)]:
        x = torch.randn(shape, requires_grad=True)
        y = D.dropout(x, 0.5, SEED, impl=impl)
        assert y.shape == x.shape
        y.sum().backward()
    # counters crossing 2**32 carry into Philox's second counter word in both paths
    x = torch.randn(3000)
    off = 2**32 - 100
    ref = D.dropout(x, 0.5, SEED, off, impl="torch")
    assert_bit_equal(D.dropout(x, 0.5, SEED, off, impl=impl), ref, f"{impl} offset 2**32-100")
    assert torch.equal(D.philox_uniform16(SEED, off, 3000)[800:], D.philox_uniform16(SEED, 2**32, 2200))


def test_threshold_is_ceil_p_times_65536():
    assert D.keep_threshold(0.0) == 0
    assert D.keep_threshold(0.5) == 32768
    assert D.keep_threshold(0.1) == 6554
    assert D.keep_threshold(1.0) == 65536
    u = D.philox_uniform16(SEED, 0, 50_000)
    assert int(u.min()) >= 0 and int(u.max()) < 65536
    assert torch.equal(D.philox_keep_mask(SEED, 0, 50_000, 0.1), u.double() / 65536 >= 0.1)


def test_module_seed_fn_calls_and_live_p():
    seen = []

    def seed_fn():
        seen.append(m.calls)
        return D.mix_seed(7, m.site, m.calls)

    m = D.SeededDropout(p=0.5, impl="torch", site=3, seed_fn=seed_fn)
    x = torch.randn(64, 64)
    a, b = m(x), m(x)
    assert seen == [1, 2] and not torch.equal(a, b), "two calls in one forward must draw different masks"
    m.p = 0.2  # a live edit
    c = m(x)
    assert abs((c != 0).float().mean().item() - 0.8) < 0.05
    m.eval()
    assert m(x) is x and m.calls == 3
    m.train()
    m.reset_calls()
    m.seed_fn = None
    with pytest.raises(RuntimeError, match="seed_fn"):
        m(x)
    assert 0 <= D.mix_seed(1, 2, 3) < 2**63 and D.mix_seed(1, 2, 3) != D.mix_seed(1, 3, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_real_sizes_bit_identical(dtype):
    for shape, p in [((4096, 1024), 0.1), ((8192, 4099), 0.5), ((3, 1000, 777), 0.1)]:
        x = torch.randn(shape, dtype=dtype, device="cuda")
        g = torch.randn(shape, dtype=dtype, device="cuda")
        outs = {}
        for impl in ("torch", "triton"):
            xi = x.clone().requires_grad_()
            y = D.dropout(xi, p, SEED, 0, impl=impl)
            y.backward(g)
            outs[impl] = (y.detach(), xi.grad)
        assert_bit_equal(outs["triton"][0], outs["torch"][0], f"cuda forward {shape}")
        assert_bit_equal(outs["triton"][1], outs["torch"][1], f"cuda backward {shape}")
        keep = outs["triton"][0] != 0
        n = keep.numel()
        rate = keep.double().mean().item()
        assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n) + 2e-4  # +2e-4: zeros in x itself
        # a CPU mask equals the GPU mask (the determinism contract across devices)
        cpu = D.philox_keep_mask(SEED, 0, 1 << 16, p)
        assert torch.equal(cpu, D.philox_keep_mask(SEED, 0, 1 << 16, p, "cuda").cpu())
    nc = torch.randn(4096, 1030, dtype=dtype, device="cuda")[:, 3:1027].t()
    assert_bit_equal(D.dropout(nc, 0.1, SEED, impl="triton"), D.dropout(nc, 0.1, SEED, impl="torch"), "cuda view")
