"""Fused linear + cross-entropy against F.cross_entropy(hidden @ W.T): forward and
gradients, ignore_index, tied weights, bf16; the Triton path through the interpreter at
tiny sizes (the module is imported after TRITON_INTERPRET is set by the test command).

Tolerances, per dtype and path:
  fp32 (both paths): loss rtol 1e-5, gradients atol 1e-5 x max|ref grad| (summation order).
  bf16, torch path: the matmuls run in fp32 on widened inputs, so the loss is the fp32
    reference's to 1e-5; gradients are rounded once to bf16: atol 8e-3 x max|ref grad|.
  bf16, triton path: the logits are a bf16 matmul (rounded to bf16, 2^-9 relative), as in
    the eager bf16 reference: loss atol 2e-2, gradients atol 3e-2 x max|ref grad|.
The references are computed in fp32 from the same (bf16-valued) inputs.
"""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from tuneterm_kernels import linear_cross_entropy
from tuneterm_kernels.linear_ce import default_chunk_rows

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
IMPLS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    not INTERP and not torch.cuda.is_available(), reason="needs CUDA or TRITON_INTERPRET=1"))]
TOL = {("torch", torch.float32): (1e-5, 1e-5), ("triton", torch.float32): (1e-5, 1e-5),
       ("torch", torch.bfloat16): (1e-5, 8e-3), ("triton", torch.bfloat16): (2e-2, 3e-2)}


def _reference(h, w, y, ignore_index=-100, logit_scale=1.0, softcap=None):
    h32 = h.detach().float().requires_grad_()
    w32 = w.detach().float().requires_grad_()
    logits = (h32 @ w32.T) * logit_scale
    if softcap is not None:  # as Gemma-2's forward writes it
        logits = torch.tanh(logits / softcap) * softcap
    loss = F.cross_entropy(logits.reshape(-1, w.shape[0]), y.reshape(-1), ignore_index=ignore_index)
    loss.backward()
    return loss.detach(), h32.grad, w32.grad


def _check(impl, dtype, loss, h, w, ref):
    loss_tol, grad_tol = TOL[(impl, dtype)]
    rl, rh, rw = ref
    if dtype == torch.float32:
        assert math.isclose(float(loss), float(rl), rel_tol=loss_tol), (float(loss), float(rl))
    else:
        assert abs(float(loss) - float(rl)) <= loss_tol * max(1.0, abs(float(rl))), (float(loss), float(rl))
    for got, want in ((h.grad, rh), (w.grad, rw)):
        assert got.dtype == dtype and got.shape == want.shape
        err = (got.float() - want).abs().max().item()
        assert err <= grad_tol * want.abs().max().item(), (err, want.abs().max().item())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 13, 24, 301), (1, 37, 40, 97)])  # (B, T, H, V): odd sizes
def test_forward_and_gradients_match_the_reference(impl, dtype, shape):
    b, t, hd, v = shape
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    h = torch.randn(b, t, hd, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(v, hd, generator=g) * 0.3).to(dtype).requires_grad_()
    y = torch.randint(0, v, (b, t), generator=g)
    y[:, ::4] = -100  # ignored positions: no loss, zero gradient
    ref = _reference(h, w, y)
    loss = linear_cross_entropy(h, w, y, impl=impl, chunk_rows=16)  # several chunks, a ragged last one
    assert loss.dtype == torch.float32 and loss.dim() == 0
    loss.backward()
    _check(impl, dtype, loss, h, w, ref)
    assert h.grad[:, ::4].abs().max() == 0  # ignored rows get no gradient


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("logit_scale, softcap", [(0.25, None), (1.0, 1.5), (3.0, 2.0)],
                         ids=["scaled", "capped", "scaled-and-capped"])
def test_scaled_and_soft_capped_heads(impl, dtype, logit_scale, softcap):
    """Cohere's logit_scale, Granite's 1 / logits_scaling, Gemma-2's final soft cap: logits of
    several units (weights * 1.0), where the cap bends them hard and saturates some."""
    b, t, hd, v = 2, 21, 24, 301
    g = torch.Generator().manual_seed(5)
    h = torch.randn(b, t, hd, generator=g).to(dtype).requires_grad_()
    w = torch.randn(v, hd, generator=g).to(dtype).requires_grad_()
    y = torch.randint(0, v, (b, t), generator=g)
    y[:, ::3] = -100
    ref = _reference(h, w, y, logit_scale=logit_scale, softcap=softcap)
    plain = _reference(h, w, y)[0]
    assert abs(float(plain) - float(ref[0])) > 0.1  # the head's transform matters here
    loss = linear_cross_entropy(h, w, y, impl=impl, chunk_rows=16, logit_scale=logit_scale, softcap=softcap)
    loss.backward()
    _check(impl, dtype, loss, h, w, ref)
    with pytest.raises(ValueError, match="softcap must be"):
        linear_cross_entropy(h, w, y, impl=impl, softcap=0.0)
    with pytest.raises(ValueError, match="logit_scale must be"):
        linear_cross_entropy(h, w, y, impl=impl, logit_scale=float("nan"))


@pytest.mark.parametrize("impl", IMPLS)
def test_tied_weights_accumulate_with_the_embedding(impl):
    torch.manual_seed(1)
    v, hd = 53, 16
    emb = torch.nn.Embedding(v, hd)
    proj = torch.nn.Linear(hd, hd)
    ids = torch.randint(0, v, (2, 9))
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = -100

    def run(loss_fn):
        emb.zero_grad(set_to_none=True)
        proj.zero_grad(set_to_none=True)
        hidden = torch.tanh(proj(emb(ids)))  # the embedding is used at the input ...
        loss = loss_fn(hidden, emb.weight, labels)  # ... and as the output head
        loss.backward()
        return loss.detach(), emb.weight.grad.clone(), proj.weight.grad.clone()

    ours = run(lambda h, w, y: linear_cross_entropy(h, w, y, impl=impl, chunk_rows=8))
    ref = run(lambda h, w, y: F.cross_entropy((h @ w.T).reshape(-1, v), y.reshape(-1)))
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-6)  # both uses' gradients
    torch.testing.assert_close(ours[2], ref[2], rtol=1e-4, atol=1e-6)


def test_upstream_gradient_scales_and_default_chunking():
    torch.manual_seed(2)
    h = torch.randn(50, 8, requires_grad=True)
    w = torch.randn(70, 8, requires_grad=True)
    y = torch.randint(0, 70, (50,))
    (linear_cross_entropy(h, w, y) * 3.0).backward()  # default chunk size, one chunk here
    _, rh, rw = _reference(h, w, y)
    torch.testing.assert_close(h.grad, 3.0 * rh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, 3.0 * rw, rtol=1e-5, atol=1e-6)
    assert default_chunk_rows(2048, 576, 49152) == 32
    assert default_chunk_rows(4096, 2048, 128256) == 128
    assert default_chunk_rows(2048, 576, 49152, "torch") == 256  # the CPU path: wide enough matmuls
    assert default_chunk_rows(65536, 576, 49152, "torch") == 1024


def test_the_cpu_path_matches_with_several_chunks_and_ignored_rows():
    """Chunks of 256 rows (the CPU path's least), the logits becoming their gradient in place,
    the weight gradient accumulated with addmm_: against the eager reference in fp32."""
    torch.manual_seed(3)
    h = torch.randn(700, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    y = torch.randint(0, 300, (700,))
    y[::5] = -100
    loss = linear_cross_entropy(h, w, y, impl="torch")
    loss.backward()
    ref, rh, rw = _reference(h, w, y)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h.grad, rh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, rw, rtol=1e-5, atol=1e-6)


def test_all_ignored_is_nan_and_bad_labels_are_refused():
    h = torch.randn(4, 8)
    w = torch.randn(10, 8)
    assert math.isnan(float(linear_cross_entropy(h, w, torch.full((4,), -100))))
    with pytest.raises(ValueError, match="labels must be in"):
        linear_cross_entropy(h, w, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="does not match"):
        linear_cross_entropy(h, torch.randn(10, 7), torch.zeros(4, dtype=torch.long))
    loss = linear_cross_entropy(h, w, torch.tensor([1, -1, 2, -1]), ignore_index=-1)
    ref = F.cross_entropy(h @ w.T, torch.tensor([1, -1, 2, -1]), ignore_index=-1)
    torch.testing.assert_close(loss, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("v", [49152, 151936])
def test_cuda_real_vocab(v):
    torch.manual_seed(3)
    h = torch.randn(512, 576, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(v, 576, device="cuda") * 0.02).to(torch.bfloat16).requires_grad_()
    y = torch.randint(0, v, (512,), device="cuda")
    y[::7] = -100
    ref = _reference(h, w, y)
    loss = linear_cross_entropy(h, w, y)
    loss.backward()
    _check("triton", torch.bfloat16, loss, h, w, ref)
