"""Shared Triton helpers of the kernels: fp32 / bf16 / fp16 loads widened to fp32 and
fp32 stores rounded once to nearest even, bf16 handled as its int16 bits.

Why bits: the interpreter (the CPU tests) truncates on ``.to(tl.bfloat16)``; widening by a
shift and rounding by hand makes the interpreter and the GPU run the same instructions.
Guarded: without triton, ``load_as_f32``/``store_from_f32`` are None and only the dtype
table is usable.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

KIND_F32, KIND_BF16, KIND_F16 = 0, 1, 2
KIND = {torch.float32: KIND_F32, torch.bfloat16: KIND_BF16, torch.float16: KIND_F16}
DTYPES = tuple(KIND)


def as_kernel_arg(t: torch.Tensor) -> torch.Tensor:
    """What a kernel pointer argument gets: bf16 tensors as their int16 bits."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t


load_as_f32 = store_from_f32 = None

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
