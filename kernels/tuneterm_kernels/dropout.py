"""Seeded dropout: the mask is a pure function of (seed, offset), never stored.

The generator and the mask rule are ``philox.py``'s (Philox-4x32-10 as ``tl.randint4x``,
16 bits per element, keep iff ``u >= ceil(p * 65536)``). Output ``where(keep, x * scale,
0)`` with ``scale = float32(1 / (1 - p))``, computed in fp32 and rounded once
(round-to-nearest-even) to ``x``'s dtype; the gradient is the same operation on the
incoming gradient. Both implementations do exactly this, so the Triton kernel and the
PyTorch generator agree bit for bit.

Layers: Triton kernel -> host launcher (on CUDA the cached CompiledKernel, ``launch.py``)
-> the ``tuneterm_kernels::seeded_dropout`` op (``torch.library``: a fake for
torch.compile, its autograd registered with it), used while compiling, and the same two
functions as a lean ``autograd.Function`` in eager mode -> ``dropout`` -> module. The PyTorch generator (``philox_keep_mask``, or the C extension on
the CPU) is the CPU path and the test oracle.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import philox_cpu  # optional C extension for the CPU mask
from .bf16 import DTYPES as _DTYPES
from .bf16 import KIND as _KIND
from .bf16 import KIND_BF16, KIND_F16, KIND_F32, as_kernel_arg, load_as_f32, store_from_f32  # noqa: F401
from .philox import (ELEMS_PER_CALL, MASK32, PHILOX_KEY_A, PHILOX_KEY_B, PHILOX_ROUND_A,  # noqa: F401
                     PHILOX_ROUND_B, _mulhilo, check_seed_offset, keep_scale, keep_threshold, mix_seed,
                     philox4x32, philox_keep_mask, philox_uniform16)
from .runtime import check_impl

try:  # guarded: the torch path needs no triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None


def _apply_torch(x: torch.Tensor, p: float, seed: int, offset: int) -> torch.Tensor:
    # CPU: the optional C extension computes the same mask natively, ~100x faster than
    # the int64 tensor emulation (None where it is not built, or off the CPU).
    keep = philox_cpu.keep_mask(seed, offset, x.numel(), p) if x.device.type == "cpu" else None
    if keep is None:
        keep = philox_keep_mask(seed, offset, x.numel(), p, x.device)
    keep = keep.view(x.shape)
    scale = torch.tensor(keep_scale(p), dtype=torch.float32, device=x.device)
    y = (x.float() * scale).to(x.dtype)  # fp32 product, one rounding: as the kernel
    return torch.where(keep, y, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------------------
# Triton: kernel -> launcher
# --------------------------------------------------------------------------------------

_seeded_dropout_kernel = None  # without triton

if triton is not None:

    # The seed/offset halves and the threshold are never specialised: a new seed or a
    # live edit of p must not compile a new variant.
    @triton.jit(do_not_specialize=["seed_lo", "seed_hi", "off_lo", "off_hi", "threshold"])
    def _seeded_dropout_kernel(
        x_ptr,  # input, contiguous; bf16 as int16 bits
        out_ptr,  # output, contiguous, same dtype as x (may alias x_ptr)
        n_elements,  # number of elements
        seed_lo,  # int32: bits 0..31 of the 63-bit seed (Philox key k0)
        seed_hi,  # int32: bits 32..63 of the seed (Philox key k1)
        off_lo,  # int32: bits 0..31 of the Philox counter offset
        off_hi,  # int32: bits 32..63 of the offset
        threshold,  # int32 in [0, 65536]: keep iff the 16-bit draw >= threshold
        scale,  # fp32: 1 / (1 - p)
        KIND: tl.constexpr,  # 0 fp32, 1 bf16, 2 fp16
        BLOCK_SIZE: tl.constexpr,  # elements per program, a multiple of 8
    ):
        ROWS: tl.constexpr = BLOCK_SIZE // 8
        pid = tl.program_id(0).to(tl.int64)
        row = pid * ROWS + tl.arange(0, ROWS).to(tl.int64)  # Philox call within x
        col = tl.arange(0, 8)  # element within the call: word col // 2, half col % 2
        offs = row[:, None] * 8 + col[None, :]

        seed = (seed_hi.to(tl.uint32, bitcast=True).to(tl.uint64) << 32) | seed_lo.to(
            tl.uint32, bitcast=True).to(tl.uint64)
        base = (off_hi.to(tl.uint32, bitcast=True).to(tl.uint64) << 32) | off_lo.to(
            tl.uint32, bitcast=True).to(tl.uint64)
        r0, r1, r2, r3 = tl.randint4x(seed, base + row.to(tl.uint64))
        c = col[None, :]
        word = tl.where(c < 4, tl.where(c < 2, r0[:, None], r1[:, None]),
                        tl.where(c < 6, r2[:, None], r3[:, None]))
        u16 = (word >> ((c & 1) * 16)) & 0xFFFF
        keep = u16 >= threshold.to(tl.uint32, bitcast=True)

        if (pid + 1) * BLOCK_SIZE <= n_elements:
            # every block but the last runs unmasked: 128-bit accesses whatever numel is
            x = load_as_f32(x_ptr, offs, None, KIND)
            store_from_f32(out_ptr, offs, tl.where(keep, x * scale, 0.0), None, KIND)
        else:
            mask = offs < n_elements
            x = load_as_f32(x_ptr, offs, mask, KIND)
            store_from_f32(out_ptr, offs, tl.where(keep, x * scale, 0.0), mask, KIND)


def _split32(v: int) -> tuple[int, int]:
    """A value < 2**64 as two int32 arguments (bit patterns), so argument types never vary."""
    lo, hi = v & MASK32, (v >> 32) & MASK32
    return (lo - (1 << 32) if lo >= 1 << 31 else lo), (hi - (1 << 32) if hi >= 1 << 31 else hi)


def _launch_config(n: int) -> tuple[int, int]:
    # 4096 elements (8-16 KB) per program with 8 warps keeps enough bytes in flight on
    # Hopper; small tensors take small blocks so the interpreter runs few lanes.
    if n >= 1 << 20:
        return 4096, 8
    if n >= 1 << 14:
        return 2048, 4
    return 1024, 4


def launch_dropout(x: torch.Tensor, p: float, seed: int, offset: int, out: torch.Tensor | None = None,
                   block_size: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """Triton seeded dropout of ``x`` (any layout: a non-contiguous ``x`` is copied to its
    logical row-major order first). Returns a contiguous tensor shaped like ``x``. Always
    through Triton's JIT launcher (the reference for the direct launch below)."""
    if triton is None:
        raise RuntimeError("impl='triton' needs triton installed")
    if x.dtype not in _DTYPES:
        raise TypeError(f"dropout supports float32, bfloat16, float16 (got {x.dtype})")
    check_seed_offset(seed, offset)
    x = x.contiguous()
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    assert out.is_contiguous() and out.shape == x.shape and out.dtype == x.dtype
    n = x.numel()
    if n == 0:
        return out
    bs, warps = _launch_config(n)
    bs, warps = block_size or bs, num_warps or warps  # overrides: tests, benchmark sweeps
    assert bs % ELEMS_PER_CALL == 0
    args = _kernel_args(x, out, p, seed, offset)
    _seeded_dropout_kernel[(triton.cdiv(n, bs),)](*args, KIND=_KIND[x.dtype], BLOCK_SIZE=bs, num_warps=warps)
    return out


def _kernel_args(x, out, p, seed, offset) -> tuple:
    return (as_kernel_arg(x), as_kernel_arg(out), x.numel(), *_split32(seed), *_split32(offset),
            keep_threshold(p), keep_scale(p))


_direct = None  # DirectLauncher of the kernel, made on the first CUDA launch


def _launch(x: torch.Tensor, p: float, seed: int, offset: int) -> torch.Tensor:
    """The op's Triton path (arguments already checked): on CUDA through the cached
    CompiledKernel (``launch.DirectLauncher``, verified against the JIT once per key)."""
    global _direct
    if not x.is_cuda:  # the interpreter (tests)
        return launch_dropout(x, p, seed, offset)
    if triton is None:
        raise RuntimeError("impl='triton' needs triton installed")
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    if _direct is None:
        from .launch import DirectLauncher
        _direct = DirectLauncher(_seeded_dropout_kernel, specialised=(0, 1, 2))  # x, out, n_elements
    bs, warps = _launch_config(n)
    _direct(-(-n // bs), _kernel_args(x, out, p, seed, offset), 1, {"KIND": _KIND[x.dtype], "BLOCK_SIZE": bs}, warps)
    return out


# --------------------------------------------------------------------------------------
# the op (torch.library) -> dropout() -> module
# --------------------------------------------------------------------------------------

def _apply(x: torch.Tensor, p: float, seed: int, offset: int, impl: str) -> torch.Tensor:
    if p >= 1.0 or keep_threshold(p) >= 65536:
        return torch.zeros_like(x, memory_format=torch.contiguous_format)
    if impl == "triton":
        return _launch(x, p, seed, offset)
    return _apply_torch(x, p, seed, offset).contiguous()


@torch.library.custom_op("tuneterm_kernels::seeded_dropout", mutates_args=())
def seeded_dropout(x: torch.Tensor, p: float, seed: int, offset: int, impl: str) -> torch.Tensor:
    """The op: seeded dropout of ``x`` (p in (0, 1], checked seed/offset), a new contiguous
    tensor. Opaque to torch.compile (its fake below gives the shape), so the kernel runs
    inside a compiled graph; forward and backward are each one dispatcher call."""
    return _apply(x, p, seed, offset, impl)


@seeded_dropout.register_fake
def _(x, p, seed, offset, impl):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    _, ctx.p, ctx.seed, ctx.offset, ctx.impl = inputs  # only numbers are kept for backward


def _backward(ctx, grad_out):
    return seeded_dropout(grad_out, ctx.p, ctx.seed, ctx.offset, ctx.impl), None, None, None, None


seeded_dropout.register_autograd(_backward, setup_context=_setup_context)


class _EagerDropout(torch.autograd.Function):
    """The same forward and backward as the op, for eager mode: a Python custom op costs
    several times an autograd.Function's host time per call, and under torch.compile
    (where that cost goes away) ``dropout`` uses the op instead."""

    @staticmethod
    def forward(ctx, x, p, seed, offset, impl):
        ctx.args = (p, seed, offset, impl)
        return _apply(x, p, seed, offset, impl)

    @staticmethod
    def backward(ctx, grad_out):
        return _apply(grad_out, *ctx.args), None, None, None, None


def dropout(x: torch.Tensor, p: float, seed: int, offset: int = 0, training: bool = True,
            impl: str = "torch") -> torch.Tensor:
    """Seeded dropout. ``p == 0`` or ``not training``: ``x`` itself. ``p == 1``: zeros.
    Else ``where(keep, x / (1 - p), 0)`` with the (seed, offset) mask of ``philox.py``, in
    ``x``'s dtype (fp32, bf16, fp16), any shape or layout; the result is contiguous.
    ``impl``: "torch" (reference, any device) or "triton"."""
    if not training or p == 0.0:
        return x
    check_impl(impl)
    p = float(p)
    keep_threshold(p)  # validates p
    check_seed_offset(seed, offset)
    if x.dtype not in _DTYPES:
        raise TypeError(f"dropout supports float32, bfloat16, float16 (got {x.dtype})")
    if torch.compiler.is_compiling():
        return seeded_dropout(x, p, seed, offset, impl)
    return _EagerDropout.apply(x, p, seed, offset, impl)


@torch.compiler.disable
def _next_seed(fn: Callable[[], int]) -> int:
    # outside any compiled graph: the seed is an input of the graph, not a constant in it
    return int(fn())


class SeededDropout(torch.nn.Module):
    """Drop-in for ``nn.Dropout`` with a counter-based mask.

    Attributes (all plain, settable between steps):
      p        drop probability, a runtime value (a live edit compiles nothing)
      impl     "torch" | "triton"
      site     an integer the engine assigns (which dropout in the model this is)
      seed_fn  ``Callable[[], int]``, called once per training forward with p > 0, right
               after ``calls`` is incremented; returns the 63-bit seed for this call. The
               engine derives it from (session seed, step, micro-batch, site, calls) —
               e.g. ``mix_seed(...)`` — so two calls of one module in one forward (or a
               module shared by two sites) never reuse a mask.
      offset   Philox counter offset (default 0).
      calls    training calls with p > 0 since construction or ``reset_calls()``.

    Activation recomputation (gradient checkpointing) would call forward again and move
    ``calls`` on: a recomputed forward must see the same seeds, so do not combine the two
    without resetting ``calls`` to its value before the recomputed segment.
    """

    def __init__(self, p: float = 0.1, impl: str = "torch", site: int = 0,
                 seed_fn: Callable[[], int] | None = None, offset: int = 0) -> None:
        super().__init__()
        self.p = float(p)
        self.impl = check_impl(impl)
        self.site = int(site)
        self.seed_fn = seed_fn
        self.offset = int(offset)
        self.calls = 0

    def reset_calls(self) -> None:
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.seed_fn is None:
            raise RuntimeError(f"SeededDropout(site={self.site}): set seed_fn before a training forward")
        self.calls += 1
        return dropout(x, self.p, _next_seed(self.seed_fn), self.offset, True, self.impl)

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site}, impl={self.impl}"
