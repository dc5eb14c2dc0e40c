"""Seeded dropout: the mask is a pure function of (seed, offset), never stored.

The generator
-------------
Philox-4x32-10, exactly as Triton's ``tl.randint4x`` computes it:

* key: the 63-bit ``seed`` split into ``k0 = seed & 0xffffffff``, ``k1 = seed >> 32``
  (what ``tl.randint4x(seed, ...)`` does with a 64-bit seed);
* counter: ``(c0, c1, c2, c3) = (ctr & 0xffffffff, ctr >> 32, 0, 0)`` for the 64-bit
  counter ``ctr``; one call gives four 32-bit words ``w0..w3``.

Element ``i`` (logical row-major order of ``x``) takes 16 bits: call ``ctr = offset + i // 8``,
word ``w = (i % 8) // 2``, half ``h = i % 2`` (``h = 0`` the low half):
``u_i = (w_w >> 16 h) & 0xffff``. It is kept iff ``u_i >= ceil(p * 65536)``, i.e. exactly
iff ``u_i / 65536 >= p`` for a uniform ``u_i / 65536`` on [0, 1).

Why 16 bits and eight elements per call: ten Philox rounds per element would make the
kernel compute-bound (about 100 integer operations per element against 4-8 bytes of
traffic); eight elements per call keeps it at the memory limit. The price is that the
drop probability is ``p`` rounded up to a multiple of 1/65536 (< 1.6e-5 away), which
FlashAttention's 8-bit dropout shows is harmless. ``offset`` counts Philox calls, so a
tensor split into pieces whose sizes are multiples of 8 reproduces the whole tensor's mask
when piece k gets ``offset + (elements before it) // 8``.

Output ``where(keep, x * scale, 0)`` with ``scale = float32(1 / (1 - p))``, computed in
fp32 and rounded once (round-to-nearest-even) to ``x``'s dtype; the gradient is the same
operation on the incoming gradient. Both implementations do exactly this, so the Triton
kernel and the PyTorch generator agree bit for bit.

Layers: Triton kernel -> host launcher -> autograd.Function -> ``dropout`` -> module;
the PyTorch generator (``philox_keep_mask``) is the CPU fallback and the test oracle.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from . import philox_cpu  # optional C extension for the CPU mask (imports nothing from here)
from .runtime import check_impl

try:  # guarded: the torch path needs no triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

# Philox-4x32 constants (triton/language/random.py).
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
N_ROUNDS = 10
ELEMS_PER_CALL = 8  # four 32-bit words, two 16-bit draws each

_MASK32 = 0xFFFFFFFF
_SEED_LIMIT = 1 << 63
_OFFSET_LIMIT = 1 << 62
_CHUNK_CALLS = 1 << 16  # PyTorch generator works in chunks: bounded temporaries

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------------------
# Parameters shared by both implementations
# --------------------------------------------------------------------------------------

def keep_threshold(p: float) -> int:
    """Keep iff the 16-bit draw is >= this: ``ceil(p * 65536)`` (0 keeps all, 65536 none)."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"dropout probability must be in [0, 1] (got {p})")
    return int(math.ceil(p * 65536.0))  # p * 2**16 is exact in binary64


@functools.lru_cache(maxsize=64)
def keep_scale(p: float) -> float:
    """The float32 factor kept elements are multiplied by: fp32(1 / (1 - p)). Cached: a
    tensor round trip costs microseconds, and it runs on every forward and backward."""
    return float(torch.tensor(1.0 / (1.0 - p), dtype=torch.float32))


def _check_seed_offset(seed: int, offset: int) -> None:
    if not (isinstance(seed, int) and 0 <= seed < _SEED_LIMIT):
        raise ValueError(f"seed must be an int in [0, 2**63) (got {seed!r})")
    if not (isinstance(offset, int) and 0 <= offset < _OFFSET_LIMIT):
        raise ValueError(f"offset must be an int in [0, 2**62) (got {offset!r})")


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (order matters), via splitmix64 chaining.

    Convenience for callers deriving one seed per (session seed, step, micro-batch, site,
    call); any other injective-enough derivation works too.
    """
    m64 = (1 << 64) - 1
    h = 0x243F6A8885A308D3
    for part in parts:
        x = ((h ^ (int(part) & m64)) + 0x9E3779B97F4A7C15) & m64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m64
        h = x ^ (x >> 31)
    return h >> 1


# --------------------------------------------------------------------------------------
# The PyTorch generator (CPU fallback and test oracle)
# --------------------------------------------------------------------------------------

def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of ``a * b`` for a uint32 constant ``a`` and uint32 values
    held in int64 ``b``. The product can pass 2**63: int64 multiplication wraps modulo
    2**64, so its low 64 bits — all that the two halves need — are exact (masking the
    arithmetic shift undoes the sign)."""
    prod = b * a
    return (prod >> 32) & _MASK32, prod & _MASK32


def philox4x32(seed: int, counters: torch.Tensor, n_rounds: int = N_ROUNDS) -> list[torch.Tensor]:
    """Philox-4x32 words for int64 ``counters`` (each in [0, 2**63)) under a 63-bit
    ``seed``: the same four words as ``tl.randint4x(seed, counters)``, as int64 tensors
    holding uint32 values."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0 = counters & _MASK32
    c1 = counters >> 32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(n_rounds):
        hi_b, lo_b = _mulhilo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_ROUND_A, c0)
        c0 = hi_b.bitwise_xor_(c1).bitwise_xor_(k0)
        c2 = hi_a.bitwise_xor_(c3).bitwise_xor_(k1)
        c1, c3 = lo_b, lo_a
        k0 = (k0 + PHILOX_KEY_A) & _MASK32
        k1 = (k1 + PHILOX_KEY_B) & _MASK32
    return [c0, c1, c2, c3]


def philox_uniform16(seed: int, offset: int, numel: int, device=None) -> torch.Tensor:
    """The 16-bit draws ``u_0 .. u_{numel-1}`` (int32 tensor, values in [0, 65536))."""
    _check_seed_offset(seed, offset)
    device = torch.device(device if device is not None else "cpu")
    out = torch.empty(numel, dtype=torch.int32, device=device)
    n_calls = -(-numel // ELEMS_PER_CALL)
    for start in range(0, n_calls, _CHUNK_CALLS):
        stop = min(n_calls, start + _CHUNK_CALLS)
        ctr = torch.arange(offset + start, offset + stop, dtype=torch.int64, device=device)
        words = torch.stack(philox4x32(seed, ctr), dim=1)  # [calls, 4]
        halves = torch.stack((words & 0xFFFF, words >> 16), dim=2).reshape(-1)  # element order
        lo = start * ELEMS_PER_CALL
        hi = min(numel, stop * ELEMS_PER_CALL)
        out[lo:hi] = halves[: hi - lo]
    return out


def philox_keep_mask(seed: int, offset: int, numel: int, p: float, device=None) -> torch.Tensor:
    """Bool keep-mask of ``numel`` elements for (seed, offset) at drop probability ``p``:
    element i is kept iff ``u_i >= ceil(p * 65536)`` (module docstring). Bit-identical to
    the mask the Triton kernel applies."""
    t = keep_threshold(p)
    return philox_uniform16(seed, offset, numel, device) >= t


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

KIND_F32, KIND_BF16, KIND_F16 = 0, 1, 2
_KIND = {torch.float32: KIND_F32, torch.bfloat16: KIND_BF16, torch.float16: KIND_F16}

if triton is not None:

    @triton.jit
    def load_as_f32(ptr, offs, mask, KIND: tl.constexpr):
        """Load (``mask`` may be None) and widen to fp32. bf16 travels as its int16 bits
        (exact widening by a shift; the interpreter's bf16 arithmetic is not to be trusted)."""
        if mask is None:  # a full block: no mask, nothing stands in the way of wide accesses
            raw = tl.load(ptr + offs)
        else:
            raw = tl.load(ptr + offs, mask=mask, other=0)
        if KIND == 1:
            return (raw.to(tl.int32) << 16).to(tl.float32, bitcast=True)
        else:
            return raw.to(tl.float32)

    @triton.jit
    def store_from_f32(ptr, offs, x, mask, KIND: tl.constexpr):
        """Round fp32 ``x`` once, to nearest even, into ``ptr``'s dtype and store. bf16 is
        rounded by hand (torch's rule; NaN -> 0x7FC0) and stored as int16 bits."""
        if KIND == 1:
            bits = x.to(tl.uint32, bitcast=True)
            r = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            r = tl.where(x != x, 0x7FC0, r)
            tl.store(ptr + offs, r.to(tl.uint16).to(tl.int16, bitcast=True), mask=mask)
        elif KIND == 2:
            tl.store(ptr + offs, x.to(tl.float16), mask=mask)
        else:
            tl.store(ptr + offs, x, mask=mask)

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
    lo, hi = v & _MASK32, (v >> 32) & _MASK32
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
    logical row-major order first). Returns a contiguous tensor shaped like ``x``."""
    if triton is None:
        raise RuntimeError("impl='triton' needs triton installed")
    if x.dtype not in _DTYPES:
        raise TypeError(f"dropout supports float32, bfloat16, float16 (got {x.dtype})")
    _check_seed_offset(seed, offset)
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
    kind = _KIND[x.dtype]
    xa, oa = (x.view(torch.int16), out.view(torch.int16)) if kind == KIND_BF16 else (x, out)
    s_lo, s_hi = _split32(seed)
    o_lo, o_hi = _split32(offset)
    grid = (triton.cdiv(n, bs),)
    _seeded_dropout_kernel[grid](xa, oa, n, s_lo, s_hi, o_lo, o_hi, keep_threshold(p), keep_scale(p),
                                 KIND=kind, BLOCK_SIZE=bs, num_warps=warps)
    return out


# --------------------------------------------------------------------------------------
# autograd.Function -> dropout() -> module
# --------------------------------------------------------------------------------------

def _apply(x: torch.Tensor, p: float, seed: int, offset: int, impl: str) -> torch.Tensor:
    if p >= 1.0 or keep_threshold(p) >= 65536:
        return torch.zeros_like(x)
    if impl == "triton":
        return launch_dropout(x, p, seed, offset)
    return _apply_torch(x, p, seed, offset)


class SeededDropoutFunction(torch.autograd.Function):
    """Forward and backward apply the same (seed, offset) mask; only integers are saved."""

    @staticmethod
    def forward(ctx, x, p, seed, offset, impl):
        ctx.p, ctx.seed, ctx.offset, ctx.impl = p, seed, offset, impl
        return _apply(x, p, seed, offset, impl)

    @staticmethod
    def backward(ctx, grad_out):
        grad_in = _apply(grad_out, ctx.p, ctx.seed, ctx.offset, ctx.impl)
        return grad_in, None, None, None, None


def dropout(x: torch.Tensor, p: float, seed: int, offset: int = 0, training: bool = True,
            impl: str = "torch") -> torch.Tensor:
    """Seeded dropout. ``p == 0`` or ``not training``: ``x`` itself. ``p == 1``: zeros.
    Else ``where(keep, x / (1 - p), 0)`` with the (seed, offset) mask of the module
    docstring, in ``x``'s dtype (fp32, bf16, fp16), any shape or layout; the result is
    contiguous. ``impl``: "torch" (reference, any device) or "triton"."""
    check_impl(impl)
    p = float(p)
    keep_threshold(p)  # validates p
    if not training or p == 0.0:
        return x
    _check_seed_offset(seed, offset)
    if x.dtype not in _DTYPES:
        raise TypeError(f"dropout supports float32, bfloat16, float16 (got {x.dtype})")
    return SeededDropoutFunction.apply(x, p, seed, offset, impl)


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
        return dropout(x, self.p, int(self.seed_fn()), self.offset, True, self.impl)

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site}, impl={self.impl}"
