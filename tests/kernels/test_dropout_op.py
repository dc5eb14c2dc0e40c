"""The dropout as the ``tuneterm_kernels::seeded_dropout`` torch.library op: bit-identical to
the raw Triton launcher and the PyTorch generator, its registrations checked by
``torch.library.opcheck``, and usable under torch.compile on the CPU (backend aot_eager:
the graph is captured with the op inside it, fullgraph, and a new seed compiles nothing)."""

import os

import pytest
import torch

from tuneterm_kernels import dropout as D

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
needs_triton = pytest.mark.skipif(not INTERP and not torch.cuda.is_available(),
                                  reason="needs CUDA or TRITON_INTERPRET=1")
SEED = 0x1234_5678_9ABC


def _bits_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def _reference(x, p, seed, offset):
    keep = D.philox_keep_mask(seed, offset, x.numel(), p).view(x.shape)
    y = (x.float() * torch.tensor(D.keep_scale(p), dtype=torch.float32)).to(x.dtype)
    return torch.where(keep, y, torch.zeros((), dtype=x.dtype))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_op_is_bit_identical_to_the_kernel_and_the_generator(dtype):
    x = torch.randn(37, 29, generator=torch.Generator().manual_seed(0)).to(dtype)
    for p in (0.1, 0.5):
        kernel = D.launch_dropout(x, p, SEED, 3)  # the raw launcher: today's kernel output
        ref = _reference(x, p, SEED, 3)
        for impl in ("triton", "torch"):
            out = torch.ops.tuneterm_kernels.seeded_dropout(x, p, SEED, 3, impl)
            assert _bits_equal(out, kernel) and _bits_equal(out, ref), (impl, p)


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_op_backward_applies_the_same_mask(impl):
    x = torch.randn(5, 40, requires_grad=True)
    g = torch.randn(5, 40)
    D.dropout(x, 0.3, SEED, impl=impl).backward(g)
    assert _bits_equal(x.grad, _reference(g, 0.3, SEED, 0))


def test_opcheck_registrations():
    """schema, fake (meta) kernel, autograd registration and dispatch agree."""
    x = torch.randn(4, 24, requires_grad=True)
    torch.library.opcheck(torch.ops.tuneterm_kernels.seeded_dropout.default, (x, 0.25, SEED, 0, "torch"))


def test_p_zero_and_eval_cost_nothing():
    x = torch.randn(8, 8)
    assert D.dropout(x, 0.0, SEED) is x
    assert D.dropout(x, 0.5, SEED, training=False) is x
    m = D.SeededDropout(0.0, seed_fn=lambda: 1 / 0)  # the seed is not even asked for
    assert m(x) is x


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_under_torch_compile(impl):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)

    def fn(x, w, seed):
        return (D.dropout(x @ w, 0.4, seed, 0, impl=impl) * 2.0).sum()

    compiled = torch.compile(fn, backend=backend, fullgraph=True, dynamic=True)
    w0 = torch.randn(16, 24)
    x = torch.randn(6, 16)
    for seed in (SEED, SEED + 1, 99):
        grads = []
        for f in (fn, compiled):
            w = w0.clone().requires_grad_()
            f(x, w, seed).backward()
            grads.append(w.grad)
        assert _bits_equal(grads[1], grads[0]), seed  # the op inside the graph: same masks, same bits
    assert len(graphs) == 1  # the seed is a graph input: one graph for every seed
    assert any("seeded_dropout" in str(n.target) for n in graphs[0].graph.nodes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_direct_launch_equals_the_jit_launch():
    """The op's CUDA path launches the cached CompiledKernel (launch.DirectLauncher): every
    call, first (verified) and later ones, gives the JIT launcher's bits."""
    for shape in ((4096, 1024), (8191,), (3, 17, 5)):
        x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
        for seed in (SEED, SEED + 1, SEED + 2):
            assert _bits_equal(D.dropout(x, 0.1, seed, impl="triton"), D.launch_dropout(x, 0.1, seed, 0))
    assert D._direct is not None and any(D._direct.cache.values()), "the direct path was disabled"
