"""The flat AdamW's Triton kernel and its launcher (``adamw.py`` owns the buffers and the
segment table; the update rule is written out there and in docs/kernels.md)."""

from __future__ import annotations

import torch

from .bf16 import KIND as _KIND
from .bf16 import as_kernel_arg, store_from_f32

try:  # guarded: the torch path needs no triton
    import triton
    import triton.language as tl

    from .bf16 import load_as_f32
except ImportError:  # pragma: no cover
    triton = None
    tl = None

_flat_adamw_kernel = None  # without triton

if triton is not None:

    @triton.jit
    def _flat_adamw_kernel(
        master_ptr,  # fp32 [N]: master weights, updated in place
        model_ptr,  # [N] bf16 (as int16 bits) / fp16 model copy written from master; unused if MODEL_KIND == 0
        grad_ptr,  # [N] gradients in the parameter dtype (bf16 as int16 bits)
        m_ptr,  # fp32 [N]: exp_avg, in place
        v_ptr,  # fp32 [N]: exp_avg_sq, in place
        tiles_ptr,  # int64 [n_tiles, 3]: (start, end, run); starts and ends multiples of 16
        runs_ptr,  # fp32 [n_runs, 4]: (1 - lr*wd or 1, -lr/bc1, sqrt(bc2), unused)
        beta2,  # fp32: v = v * beta2 + ...
        w1,  # fp32: 1 - beta1 (lerp weight)
        w2,  # fp32: 1 - beta2
        eps,  # fp32
        grad_scale,  # fp32: gradient-clipping factor (1.0: none)
        GRAD_KIND: tl.constexpr,  # 0 fp32, 1 bf16, 2 fp16
        MODEL_KIND: tl.constexpr,  # 0: the master is the model; 1 bf16; 2 fp16
        SMALL_W1: tl.constexpr,  # w1 < 0.5: torch's lerp branch m + w1*(g - m)
        BLOCK_SIZE: tl.constexpr,  # elements per tile
    ):
        t = tl.program_id(0)
        start = tl.multiple_of(tl.load(tiles_ptr + t * 3), 16)
        end = tl.multiple_of(tl.load(tiles_ptr + t * 3 + 1), 16)
        run = tl.load(tiles_ptr + t * 3 + 2)
        decay = tl.load(runs_ptr + run * 4)
        neg_step_size = tl.load(runs_ptr + run * 4 + 1)
        bc2_sqrt = tl.load(runs_ptr + run * 4 + 2)

        offs = start + tl.arange(0, BLOCK_SIZE)
        mask = offs < end
        p = tl.load(master_ptr + offs, mask=mask, other=0.0)
        g = load_as_f32(grad_ptr, offs, mask, GRAD_KIND) * grad_scale
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0)

        p = p * decay
        if SMALL_W1:
            m = m + w1 * (g - m)
        else:
            m = g - (g - m) * (1.0 - w1)
        v = v * beta2 + (w2 * g) * g
        denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
        p = p + neg_step_size * tl.div_rn(m, denom)

        tl.store(master_ptr + offs, p, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        if MODEL_KIND != 0:
            store_from_f32(model_ptr, offs, p, mask, MODEL_KIND)


def _launch_config(total: int, block_size: int | None) -> tuple[int, int]:
    if block_size is not None:
        return block_size, 4
    # 2048 fp32 elements x 7 streams = 56 KB of traffic per tile: enough in flight per SM
    # on Hopper, and small parameters (biases) waste few lanes.
    return (2048, 8) if total >= 1 << 20 else (1024, 4)


def launch_step(grp, scalars, beta1: float, beta2: float, eps: float, grad_scale: float,
                num_warps: int | None, block_size: int | None) -> None:
    """One launch over ``grp``'s tiles (an ``adamw._Group``); ``scalars`` per run:
    (1 - lr*wd or 1, lr/bc1, sqrt(bc2)) in float64, rounded to fp32 here."""
    if triton is None:
        raise RuntimeError("impl='triton' needs triton installed")
    table = torch.tensor([(f, -ss, b2s, 0.0) for f, ss, b2s in scalars], dtype=torch.float32)
    table = table.to(grp.master.device, non_blocking=True)
    kind = _KIND[grp.dtype]
    model = grp.master if grp.model is None else as_kernel_arg(grp.model)
    w1 = 1.0 - beta1
    n_tiles = grp.tiles.shape[0]
    warps = num_warps or _launch_config(grp.numel, block_size)[1]
    _flat_adamw_kernel[(n_tiles,)](
        grp.master, model, as_kernel_arg(grp.grad), grp.exp_avg, grp.exp_avg_sq, grp.tiles, table,
        beta2, w1, 1.0 - beta2, eps, grad_scale,
        GRAD_KIND=kind, MODEL_KIND=0 if grp.model is None else kind, SMALL_W1=w1 < 0.5,
        BLOCK_SIZE=grp.block, num_warps=warps)
