"""Fused linear + cross-entropy: ``mean CE(hidden @ weight.T, labels)`` over the positions
whose label is not ``ignore_index``, without ever holding the ``[tokens x vocab]`` logits.
Heads that do more than the matmul are covered: the logits may be multiplied by
``logit_scale`` (Cohere's ``logit_scale``, Granite's ``1 / logits_scaling``) and then
soft-capped, ``softcap * tanh(logits / softcap)`` (Gemma-2's ``final_logit_softcapping``);
the chain rule adds ``logit_scale * (1 - tanh^2)`` to the gradient of the logits.

The rows are taken in chunks. For each chunk: ``logits = h_c @ W.T`` (one chunk of
logits, reused in place), the cross-entropy of each row and its gradient
``(softmax - onehot) / n_valid`` (zero on ignored rows) written over the logits, then
``grad_h[c] = grad_logits @ W`` and ``grad_W += grad_logits.T @ h_c`` (fp32). The
gradients are computed in the forward (the logits are never recomputed) and the backward
only scales them by the incoming gradient, as Liger-Kernel's fused linear cross-entropy
does; the loss is a sum of per-row fp32 losses (no atomics: deterministic).

impl "triton" (CUDA, or the interpreter in tests): the chunk's logits are a cuBLAS matmul
in the input dtype (fp32 accumulation inside), the softmax/loss/gradient a Triton kernel
(one program per row, online max and sum in fp32). impl "torch" (the CPU path, and the
oracle): bf16/fp16 inputs are widened to fp32 for the matmuls (the weight once per call),
so the CPU result is the fp32 one; it saves memory there too (a chunk of logits at a time).

Tied weights need nothing special: the gradient of ``weight`` is returned to autograd,
which adds it to the embedding's. Chunk size: ``chunk_rows`` or about ``N * H / V`` rows
(a chunk of logits about the size of ``hidden``), a power of two between 16 and 4096.
"""

from __future__ import annotations

import math

import torch

from .bf16 import KIND as _KIND
from .bf16 import as_kernel_arg, load_as_f32, store_from_f32

try:  # guarded: the torch path needs no triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

_ce_rows_kernel = None  # without triton

if triton is not None:

    @triton.jit
    def _head_logits(x, mult, cap, SOFTCAP: tl.constexpr):
        """The logits the model's head gives for ``x`` (= hidden @ weight.T), in fp32."""
        x = x * mult
        if SOFTCAP:
            # tanh through exp of a non-positive number: no overflow, either sign
            u = x / cap
            e = tl.exp(-2.0 * tl.abs(u))
            t = (1.0 - e) / (1.0 + e)
            x = cap * tl.where(u < 0, -t, t)
        return x

    @triton.jit
    def _ce_rows_kernel(
        logits_ptr,  # [rows, V] contiguous; read, then overwritten by the gradient
        labels_ptr,  # int64 [rows]
        loss_ptr,  # fp32 [rows]: per-row loss (0 for ignored rows)
        V,  # vocabulary size (row length)
        ignore_index,
        scale,  # fp32: logit_scale / n_valid (the gradient of the mean, times d(scaled)/d(logits))
        mult,  # fp32: logit_scale, the logits' multiplier (1.0: none)
        cap,  # fp32: the soft cap; read only when SOFTCAP
        KIND: tl.constexpr,  # logits dtype: 0 fp32, 1 bf16 (int16 bits), 2 fp16
        SOFTCAP: tl.constexpr,  # whether the scaled logits are soft-capped
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * V
        label = tl.load(labels_ptr + row)
        cols = tl.arange(0, BLOCK)
        # pass 1: running max and sum of exp, per lane, merged at the end
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, V, BLOCK):
            offs = start + cols
            x = _head_logits(load_as_f32(base, offs, offs < V, KIND), mult, cap, SOFTCAP)
            x = tl.where(offs < V, x, float("-inf"))
            m_new = tl.maximum(m, x)
            s = s * tl.exp(tl.where(m_new == float("-inf"), 0.0, m - m_new)) + tl.where(
                x == float("-inf"), 0.0, tl.exp(x - m_new))
            m = m_new
        mx = tl.max(m, 0)
        total = tl.sum(s * tl.exp(tl.where(m == float("-inf"), float("-inf"), m - mx)), 0)
        lse = mx + tl.log(total)
        valid = label != ignore_index
        safe = tl.where(valid, label, 0)
        target = _head_logits(load_as_f32(base, safe, None, KIND), mult, cap, SOFTCAP)
        loss = tl.where(valid, lse - target, 0.0)
        tl.store(loss_ptr + row, loss)
        g_scale = tl.where(valid, scale, 0.0)
        # pass 2: the gradient over the logits, in place
        for start in range(0, V, BLOCK):
            offs = start + cols
            x = _head_logits(load_as_f32(base, offs, offs < V, KIND), mult, cap, SOFTCAP)
            g = (tl.exp(x - lse) - tl.where(offs == safe, 1.0, 0.0)) * g_scale
            if SOFTCAP:  # d(cap * tanh(u / cap))/du = 1 - tanh^2
                t = x / cap
                g = g * (1.0 - t * t)
            store_from_f32(base, offs, g, offs < V, KIND)


def _ce_chunk_triton(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, scale: float,
                     mult: float, cap: float | None) -> torch.Tensor:
    rows, v = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    block = min(4096 if logits.is_cuda else 256, triton.next_power_of_2(v))
    _ce_rows_kernel[(rows,)](as_kernel_arg(logits), labels, loss, v, ignore_index, scale * mult, mult,
                             cap or 1.0, KIND=_KIND[logits.dtype], SOFTCAP=cap is not None, BLOCK=block,
                             num_warps=8 if block >= 2048 else 4)
    return loss


def _ce_chunk_torch(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, scale: float,
                    mult: float, cap: float | None) -> torch.Tensor:
    # fp32 logits (the CPU path) become their gradient in place: no second chunk-sized buffer
    # (but for a soft cap, whose derivative needs one)
    x = logits if logits.dtype == torch.float32 else logits.float()
    if mult != 1.0:
        x.mul_(mult)
    slope = None
    if cap is not None:
        x.div_(cap).tanh_()
        slope = torch.mul(x, x).neg_().add_(1.0)  # 1 - tanh^2
        x.mul_(cap)
    lse = torch.logsumexp(x, dim=-1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0)
    loss = torch.where(valid, lse - x.gather(1, safe[:, None]).squeeze(1), 0.0)
    x.sub_(lse[:, None]).exp_()  # softmax
    x.scatter_add_(1, safe[:, None], torch.full_like(lse[:, None], -1.0))
    x.mul_(torch.where(valid, scale * mult, 0.0)[:, None])
    if slope is not None:
        x.mul_(slope)
    if x is not logits:
        logits.copy_(x)
    return loss


def default_chunk_rows(n: int, hidden: int, vocab: int, impl: str = "triton") -> int:
    """About ``n * hidden / vocab`` rows (a chunk of logits the size of ``hidden``, Liger's
    rule), a power of two in [16, 4096]. The CPU path takes at least 256 rows: its matmuls
    need the width, and each chunk also passes once over the whole [V, H] weight gradient."""
    rows = max(1, math.ceil(n * hidden / max(vocab, 1)))
    lo = 256 if impl == "torch" else 16
    return min(4096, max(lo, 1 << (rows - 1).bit_length()))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, impl, chunk_rows, mult, cap):
        h = hidden.reshape(-1, hidden.shape[-1])
        y = labels.reshape(-1).to(device=h.device, dtype=torch.int64)
        n, v = h.shape[0], weight.shape[0]
        if y.shape[0] != n:
            raise ValueError(f"labels have {y.shape[0]} positions, hidden has {n}")
        bad = ((y < 0) | (y >= v)) & (y != ignore_index)
        if bool(bad.any()):
            raise ValueError(f"labels must be in [0, {v}) or ignore_index={ignore_index}")
        n_valid = int((y != ignore_index).sum())
        scale = 1.0 / n_valid if n_valid else 0.0
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        widen = impl == "torch" and h.dtype != torch.float32
        w = weight.float() if widen else weight  # CPU: fp32 matmuls
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        ce = _ce_chunk_triton if impl == "triton" else _ce_chunk_torch
        losses = []
        rows = chunk_rows or default_chunk_rows(n, h.shape[1], v, impl)
        for s in range(0, n, rows):
            hc = h[s:s + rows]
            hc = hc.float() if widen else hc
            logits = hc @ w.T  # [rows, V], contiguous; becomes the gradient in place
            losses.append(ce(logits, y[s:s + rows], ignore_index, scale, mult, cap))
            if need_h:
                grad_h[s:s + rows] = logits @ w
            if need_w and logits.dtype == torch.float32:
                grad_w.addmm_(logits.T, hc)  # accumulated in place: no [V, H] temporary
            elif need_w:
                grad_w += (logits.T @ hc).float()
        loss = torch.cat(losses).sum() / n_valid if n_valid else torch.full((), math.nan, device=h.device)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.shape, ctx.w_dtype = hidden.shape, weight.dtype
        return loss.to(torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = gw = None
        if grad_h is not None:
            gh = (grad_h * grad_out.to(grad_h.dtype)).view(ctx.shape)
        if grad_w is not None:
            gw = (grad_w * grad_out).to(ctx.w_dtype)
        return gh, gw, None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int = -100, impl: str | None = None,
                         chunk_rows: int | None = None, *, logit_scale: float = 1.0,
                         softcap: float | None = None) -> torch.Tensor:
    """Mean cross-entropy of the logits ``hidden @ weight.T`` against ``labels`` over the
    positions whose label is not ``ignore_index`` (NaN when there are none, as
    F.cross_entropy), an fp32 scalar. ``hidden``: ``[..., H]``; ``weight``: ``[V, H]`` (an
    lm_head's, tied or not); ``labels``: ``hidden.shape[:-1]`` integers. ``impl``: "triton" |
    "torch"; default triton on CUDA when it imports, torch otherwise. The logits are first
    multiplied by ``logit_scale``, then, with a ``softcap``, mapped to
    ``softcap * tanh(logits / softcap)`` (in fp32)."""
    if hidden.shape[-1] != weight.shape[-1] or weight.dim() != 2:
        raise ValueError(f"hidden [..., {hidden.shape[-1]}] does not match weight {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype:
        raise TypeError(f"hidden is {hidden.dtype}, weight {weight.dtype}: cast one")
    if impl is None:
        impl = "triton" if hidden.is_cuda and triton is not None else "torch"
    if impl not in ("triton", "torch"):
        raise ValueError(f"impl must be 'triton' or 'torch' (got {impl!r})")
    if impl == "triton" and triton is None:
        raise RuntimeError("impl='triton' needs triton installed")
    if not (math.isfinite(logit_scale) and logit_scale != 0):
        raise ValueError(f"logit_scale must be finite and non-zero (got {logit_scale!r})")
    if softcap is not None and not (math.isfinite(softcap) and softcap > 0):
        raise ValueError(f"softcap must be a positive number or None (got {softcap!r})")
    return _LinearCrossEntropy.apply(hidden, weight, labels, int(ignore_index), impl, chunk_rows,
                                     float(logit_scale), None if softcap is None else float(softcap))
