"""Philox-4x32-10 as Triton's ``tl.randint4x`` computes it, on torch tensors; the dropout
mask parameters shared by every implementation (the PyTorch generator, the C extension
``philox_cpu``, the Triton kernel in ``dropout``).

The generator
-------------
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

This module imports only torch: ``philox_cpu`` and ``dropout`` both build on it.
"""

from __future__ import annotations

import functools
import math

import torch

# Philox-4x32 constants (triton/language/random.py).
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
N_ROUNDS = 10
ELEMS_PER_CALL = 8  # four 32-bit words, two 16-bit draws each

MASK32 = 0xFFFFFFFF
_SEED_LIMIT = 1 << 63
_OFFSET_LIMIT = 1 << 62
_CHUNK_CALLS = 1 << 16  # PyTorch generator works in chunks: bounded temporaries


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


def check_seed_offset(seed: int, offset: int) -> None:
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


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of ``a * b`` for a uint32 constant ``a`` and uint32 values
    held in int64 ``b``. The product can pass 2**63: int64 multiplication wraps modulo
    2**64, so its low 64 bits — all that the two halves need — are exact (masking the
    arithmetic shift undoes the sign)."""
    prod = b * a
    return (prod >> 32) & MASK32, prod & MASK32


def philox4x32(seed: int, counters: torch.Tensor, n_rounds: int = N_ROUNDS) -> list[torch.Tensor]:
    """Philox-4x32 words for int64 ``counters`` (each in [0, 2**63)) under a 63-bit
    ``seed``: the same four words as ``tl.randint4x(seed, counters)``, as int64 tensors
    holding uint32 values."""
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    c0 = counters & MASK32
    c1 = counters >> 32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(n_rounds):
        hi_b, lo_b = _mulhilo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_ROUND_A, c0)
        c0 = hi_b.bitwise_xor_(c1).bitwise_xor_(k0)
        c2 = hi_a.bitwise_xor_(c3).bitwise_xor_(k1)
        c1, c3 = lo_b, lo_a
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return [c0, c1, c2, c3]


def philox_uniform16(seed: int, offset: int, numel: int, device=None) -> torch.Tensor:
    """The 16-bit draws ``u_0 .. u_{numel-1}`` (int32 tensor, values in [0, 65536))."""
    check_seed_offset(seed, offset)
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

