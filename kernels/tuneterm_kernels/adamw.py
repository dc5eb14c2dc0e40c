"""Flat-buffer fused AdamW with live freezing: one Triton launch per step and dtype group.

Layout
------
Parameters are grouped by dtype (fp32; bf16; fp16). Each group owns flat buffers:

  master    fp32 weights. For an fp32 group the parameters' ``.data`` are views into it;
            for bf16/fp16 it is the fp32 master copy and
  model     the bf16/fp16 buffer the parameters' ``.data`` view (written by the kernel,
            rounded to nearest even from the new master, in the same pass)
  grad      the parameters' ``.grad`` are views into it (parameter dtype)
  exp_avg, exp_avg_sq   fp32 moments

Within a group the decay-on parameters come first, then the decay-off ones, each in the
order given; every segment starts at a multiple of 16 elements (aligned, vectorisable
accesses; the padding stays zero and its update is zero).

Segment table and runs
----------------------
Per parameter (host side, numpy): offset, numel, active, own step count, decay on/off,
learning-rate factor (``set_lr_scale``: LoRA+'s B matrices). All active segments step
together, so maximal contiguous sequences of active segments with equal (step, decay,
factor) — *runs* — change only with ``set_active``/``set_lr_scale``/``load_state_dict``.
The kernel's work list, a device table of tiles ``(start, end, run)``, is rebuilt only then
(microseconds of host work; freezing never re-flattens anything); frozen segments have no
tiles. Per step the host computes per run, in float64 like torch (lr: the step's x the
run's factor), ``1 - lr*wd``, ``-lr / (1 - beta1**step)`` and ``sqrt(1 - beta2**step)``,
rounds them to fp32 and ships that tiny table with the launch (runtime values).

The update (torch.optim.AdamW, ``_single_tensor_adam`` with decoupled decay)::

    g = grad * grad_scale                      # clipping scale, fp32
    p = p * (1 - lr*wd)                        # decoupled, on the old value
    m = m + (1-b1) * (g - m)                   # lerp(m, g, 1-b1) (torch's small-weight branch)
    v = v * b2 + (1-b2) * g * g
    p = p + (-lr/bc1) * (m / (sqrt(v) / sqrt(bc2) + eps))

Differences from torch.optim.AdamW, by design: an *active* parameter whose ``.grad`` was
not written this step is updated with a zero gradient (torch would skip it; freeze it
with ``set_active`` instead); ``zero_grad`` zeroes the flat gradient buffer (a
``set_to_none`` zero_grad elsewhere is tolerated: the next ``step`` copies the new
``.grad`` in and re-binds the view).

Layers: Triton kernel -> launcher -> ``FlatAdamW.step``; ``impl="torch"`` runs the same
runs with torch.optim's own tensor ops (the CPU path and the oracle).
"""

from __future__ import annotations

import numpy as np
import torch

from .adamw_kernel import _flat_adamw_kernel, _launch_config, launch_step  # noqa: F401
from .runtime import check_impl

ALIGN = 16  # elements; segment starts and run ends are multiples of this
FORMAT = "tuneterm_kernels.FlatAdamW"
VERSION = 1

_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_DTYPE_NAME = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _round_up(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


# --------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------

class _Group:
    """One dtype's flat buffers and its slice of the segment table."""

    def __init__(self, dtype, device, seg_ids: list[int], numels: list[int], decays: list[bool]):
        self.dtype = dtype
        self.seg_ids = seg_ids
        offsets, n = [], 0
        for k in seg_ids:
            offsets.append(n)
            n += _round_up(int(numels[k]))
        self.offsets = offsets  # parallel to seg_ids
        self.numel = n
        self.master = torch.zeros(n, dtype=torch.float32, device=device)
        self.model = torch.zeros(n, dtype=dtype, device=device) if dtype != torch.float32 else None
        self.grad = torch.zeros(n, dtype=dtype, device=device)
        self.exp_avg = torch.zeros(n, dtype=torch.float32, device=device)
        self.exp_avg_sq = torch.zeros(n, dtype=torch.float32, device=device)
        self.runs: list[tuple[int, int, int, bool, float]] = []  # (start, end, step, decay, lr factor)
        self.tiles: torch.Tensor | None = None
        self.block = 0


class FlatAdamW:
    """AdamW over flat buffers; parameters' ``.data``/``.grad`` become views into them.

    ``params``: ``[(name, parameter, weight_decay_on), ...]`` — all on one device,
    dtypes float32 / bfloat16 / float16 (bf16/fp16 get an fp32 master copy).
    ``impl``: "triton" | "torch" (see ``resolve_impl``). ``block_size``/``num_warps``
    override the kernel's launch configuration (tests, benchmark sweeps).
    """

    def __init__(self, params, impl: str = "torch", block_size: int | None = None,
                 num_warps: int | None = None):
        self.impl = check_impl(impl)
        self._block_size = block_size  # tile size / warps override (tests, benchmark sweeps)
        self._num_warps = num_warps
        params = list(params)
        if not params:
            raise ValueError("FlatAdamW needs at least one parameter")
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        decays = []
        for name, p, decay in params:
            if name in self.names:
                raise ValueError(f"duplicate parameter name {name!r}")
            if any(q is p for q in self.params):
                raise ValueError(f"{name}: the same parameter object is listed twice (tied weights: list it once)")
            if p.dtype not in _KIND:
                raise TypeError(f"{name}: dtype {p.dtype} is not supported (float32, bfloat16, float16)")
            self.names.append(name)
            self.params.append(p)
            decays.append(bool(decay))
        devices = {p.device for p in self.params}
        if len(devices) != 1:
            raise ValueError(f"all parameters must be on one device (got {sorted(map(str, devices))})")
        self.device = devices.pop()
        self._index = {name: k for k, name in enumerate(self.names)}
        self._by_id = {id(p): k for k, p in enumerate(self.params)}
        n = len(self.params)
        self.numels = np.array([p.numel() for p in self.params], dtype=np.int64)
        self.decay = np.array(decays, dtype=bool)
        self.active = np.ones(n, dtype=bool)
        self.steps = np.zeros(n, dtype=np.int64)
        self.lr_scale = np.ones(n, dtype=np.float64)  # lr x this per segment (x 1.0 changes no bit)

        # group by dtype; decay-on first, then decay-off, each in the given order
        self.groups: list[_Group] = []
        self._where: list[tuple[int, int]] = [(-1, -1)] * n  # segment -> (group, offset)
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            ids = [k for k in range(n) if self.params[k].dtype == dtype]
            if not ids:
                continue
            ids = [k for k in ids if decays[k]] + [k for k in ids if not decays[k]]
            grp = _Group(dtype, self.device, ids, list(self.numels), decays)
            gi = len(self.groups)
            self.groups.append(grp)
            for k, off in zip(ids, grp.offsets):
                self._where[k] = (gi, off)
        self._views: list[torch.Tensor] = [None] * n  # the .grad views
        with torch.no_grad():
            for k, p in enumerate(self.params):
                grp, off = self._seg(k)
                ne = int(self.numels[k])
                sl = slice(off, off + ne)
                src = p.detach().reshape(-1)
                grp.master[sl].copy_(src)  # exact: fp32, or bf16/fp16 widened
                if grp.model is not None:
                    grp.model[sl].copy_(src)
                    p.data = grp.model[sl].view(p.shape)
                else:
                    p.data = grp.master[sl].view(p.shape)
                if p.grad is not None:
                    grp.grad[sl].copy_(p.grad.reshape(-1))
                view = grp.grad[sl].view(p.shape)
                p.grad = view
                self._views[k] = view
        self._rebuild()

    # ---- table plumbing ------------------------------------------------------------

    def _seg(self, k: int) -> tuple[_Group, int]:
        gi, off = self._where[k]
        return self.groups[gi], off

    def _rebuild(self) -> None:
        """Runs and the Triton tile table from the segment table (after set_active/load)."""
        for grp in self.groups:
            runs: list[list] = []
            for k, off in zip(grp.seg_ids, grp.offsets):
                ne = int(self.numels[k])
                if not self.active[k] or ne == 0:
                    continue
                key = [int(self.steps[k]), bool(self.decay[k]), float(self.lr_scale[k])]
                if runs and runs[-1][1] == off and runs[-1][2:] == key:
                    runs[-1][1] = off + _round_up(ne)
                else:
                    runs.append([off, off + _round_up(ne), *key])
            grp.runs = [tuple(r) for r in runs]
            grp.block, _ = _launch_config(grp.numel, self._block_size)
            parts = [np.zeros((0, 3), dtype=np.int64)]
            for r, (s, e, *_) in enumerate(grp.runs):
                starts = np.arange(s, e, grp.block, dtype=np.int64)
                ends = np.minimum(starts + grp.block, e)
                parts.append(np.stack([starts, ends, np.full_like(starts, r)], axis=1))
            grp.tiles = torch.from_numpy(np.concatenate(parts)).to(self.device)

    def _resolve(self, items) -> list[int]:
        if isinstance(items, (str, torch.Tensor)):
            items = [items]
        out = []
        for it in items:
            if isinstance(it, str):
                if it not in self._index:
                    raise KeyError(f"unknown parameter name {it!r}")
                out.append(self._index[it])
            else:
                if id(it) not in self._by_id:
                    raise KeyError("parameter is not managed by this optimizer")
                out.append(self._by_id[id(it)])
        return out

    def _sync_grads(self) -> None:
        """Re-bind ``.grad`` views that someone replaced (e.g. zero_grad(set_to_none=True))."""
        for k, p in enumerate(self.params):
            view = self._views[k]
            g = p.grad
            if g is view or (g is None and not self.active[k]):  # a frozen view stays zero
                continue
            with torch.no_grad():
                if g is None:
                    view.zero_()
                else:
                    view.copy_(g)
            p.grad = view

    # ---- public API ----------------------------------------------------------------

    @property
    def grads_flat(self) -> list[torch.Tensor]:
        """The flat gradient buffers, one per dtype group (padding and frozen segments
        are zero after ``zero_grad``)."""
        return [grp.grad for grp in self.groups]

    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm of the active parameters' gradients (fp32, on the device),
        computed like torch's clip_grad_norm_: per-tensor norms, then their norm."""
        self._sync_grads()
        grads = [self._views[k] for k in range(len(self.params)) if self.active[k] and self.numels[k] > 0]
        if not grads:
            return torch.zeros((), dtype=torch.float32, device=self.device)
        # fp32 grads: bit-identical to stacking torch.linalg.vector_norm per tensor (the
        # engine's torch path); bf16/fp16 grads are reduced in fp32, not rounded first.
        fp32 = [g for g in grads if g.dtype == torch.float32]
        low = [g for g in grads if g.dtype != torch.float32]
        norms = list(torch._foreach_norm(fp32, 2.0)) if fp32 else []
        if low:
            norms += list(torch._foreach_norm(low, 2.0, dtype=torch.float32))
        return torch.linalg.vector_norm(torch.stack(norms), 2.0)

    def zero_grad(self) -> None:
        for k, p in enumerate(self.params):
            if p.grad is not self._views[k]:
                p.grad = self._views[k]
        for grp in self.groups:
            grp.grad.zero_()

    def set_active(self, items, active: bool, reset: bool = True) -> None:
        """Freeze (``False``) or unfreeze (``True``) parameters by name or object.

        Frozen: skipped entirely (no decay, no moment change, no step). Unfreezing a
        frozen parameter starts it afresh (``reset``: zero moments, step 0, a fresh torch
        AdamW state) or, with ``reset=False``, where it stopped (what torch.optim does for
        a parameter whose grad was None). The caller owns ``requires_grad``. No buffer is
        re-flattened."""
        changed = False
        with torch.no_grad():
            for k in self._resolve(items):
                if bool(self.active[k]) == bool(active):
                    continue
                changed = True
                grp, off = self._seg(k)
                sl = slice(off, off + int(self.numels[k]))
                self.active[k] = bool(active)
                grp.grad[sl].zero_()
                if active and reset:
                    grp.exp_avg[sl].zero_()
                    grp.exp_avg_sq[sl].zero_()
                    self.steps[k] = 0
        if changed:
            self._rebuild()

    def is_active(self, item) -> bool:
        return bool(self.active[self._resolve([item])[0]])

    def set_lr_scale(self, items, scale: float) -> None:
        """From the next step on these parameters (names or objects) learn at lr x ``scale``."""
        scale = float(scale)
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"lr scale must be a finite number > 0 (got {scale})")
        self.lr_scale[self._resolve(items)] = scale
        self._rebuild()

    def step_count(self, item) -> int:
        return int(self.steps[self._resolve([item])[0]])

    @torch.no_grad()
    def step(self, lr: float, weight_decay: float, beta1: float = 0.9, beta2: float = 0.999,
             eps: float = 1e-8, grad_scale: float = 1.0) -> None:
        """One AdamW step over the active parameters. All arguments are runtime values."""
        lr, weight_decay = float(lr), float(weight_decay)
        beta1, beta2, eps, grad_scale = float(beta1), float(beta2), float(eps), float(grad_scale)
        self._sync_grads()
        self.steps[self.active] += 1
        for grp in self.groups:
            grp.runs = [(s, e, step + 1, *rest) for (s, e, step, *rest) in grp.runs]
            if not grp.runs:
                continue
            scalars = []
            for (_, _, step, decay, scale) in grp.runs:
                # float64 exactly as torch.optim computes them (its group lr: lr x scale); fp32 when used
                run_lr = lr * scale
                f = 1.0 - run_lr * weight_decay if (decay and weight_decay != 0) else 1.0
                step_size = run_lr / (1.0 - beta1 ** step)
                bc2_sqrt = (1.0 - beta2 ** step) ** 0.5
                scalars.append((f, step_size, bc2_sqrt))
            if self.impl == "triton":
                self._step_triton(grp, scalars, beta1, beta2, eps, grad_scale)
            else:
                self._step_torch(grp, scalars, beta1, beta2, eps, grad_scale)

    def _step_torch(self, grp: _Group, scalars, beta1, beta2, eps, grad_scale) -> None:
        # torch.optim's _single_tensor_adam, op for op, on each run's slices.
        for (s, e, *_), (f, step_size, bc2_sqrt) in zip(grp.runs, scalars):
            param = grp.master[s:e]
            grad = grp.grad[s:e]
            if grp.dtype != torch.float32 or grad_scale != 1.0:
                grad = grad.float()
                if grad_scale != 1.0:
                    grad = grad * torch.tensor(grad_scale, dtype=torch.float32, device=grad.device)
            if f != 1.0:
                param.mul_(f)
            grp.exp_avg[s:e].lerp_(grad, 1 - beta1)
            grp.exp_avg_sq[s:e].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (grp.exp_avg_sq[s:e].sqrt() / bc2_sqrt).add_(eps)
            param.addcdiv_(grp.exp_avg[s:e], denom, value=-step_size)
            if grp.model is not None:
                grp.model[s:e].copy_(param)

    def _step_triton(self, grp: _Group, scalars, beta1, beta2, eps, grad_scale) -> None:
        launch_step(grp, scalars, beta1, beta2, eps, grad_scale, self._num_warps, self._block_size)

    # ---- checkpoints ---------------------------------------------------------------

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta): tensors for safetensors (fresh, unshared, on the device);
        meta plain JSON. Moments for active parameters; fp32 masters for bf16/fp16 ones."""
        tensors: dict[str, torch.Tensor] = {}
        params = {}
        for k, name in enumerate(self.names):
            grp, off = self._seg(k)
            ne = int(self.numels[k])
            sl = slice(off, off + ne)
            shape = tuple(self.params[k].shape)
            if self.active[k]:
                tensors[f"exp_avg/{name}"] = grp.exp_avg[sl].view(shape).clone()
                tensors[f"exp_avg_sq/{name}"] = grp.exp_avg_sq[sl].view(shape).clone()
            if grp.model is not None:
                tensors[f"master/{name}"] = grp.master[sl].view(shape).clone()
            params[name] = {"step": int(self.steps[k]), "active": bool(self.active[k]),
                            "weight_decay": bool(self.decay[k]), "numel": ne,
                            "dtype": _DTYPE_NAME[grp.dtype]}
        return tensors, {"format": FORMAT, "version": VERSION, "params": params}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore a ``state_dict()``: the next step is bit-identical to the original's.
        The model weights themselves (fp32 masters included) come from the model
        checkpoint, except bf16/fp16 masters, which come from ``tensors``."""
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} state (format={meta.get('format')!r}, "
                             f"version={meta.get('version')!r})")
        saved = meta["params"]
        if set(saved) != set(self.names):
            missing, extra = sorted(set(self.names) - set(saved)), sorted(set(saved) - set(self.names))
            raise ValueError(f"optimizer state does not match the parameters: missing {missing[:5]}, "
                             f"unexpected {extra[:5]}")
        for k, name in enumerate(self.names):
            s = saved[name]
            grp, off = self._seg(k)
            ne = int(self.numels[k])
            if s["numel"] != ne or s["dtype"] != _DTYPE_NAME[grp.dtype] or s["weight_decay"] != bool(self.decay[k]):
                raise ValueError(f"{name}: saved numel/dtype/decay {s['numel']}/{s['dtype']}/{s['weight_decay']} "
                                 f"!= {ne}/{_DTYPE_NAME[grp.dtype]}/{bool(self.decay[k])}")
            sl = slice(off, off + ne)
            self.steps[k] = int(s["step"])
            self.active[k] = bool(s["active"])
            if self.active[k]:
                grp.exp_avg[sl].copy_(tensors[f"exp_avg/{name}"].reshape(-1))
                grp.exp_avg_sq[sl].copy_(tensors[f"exp_avg_sq/{name}"].reshape(-1))
            else:
                grp.exp_avg[sl].zero_()
                grp.exp_avg_sq[sl].zero_()
            if grp.model is not None:
                grp.master[sl].copy_(tensors[f"master/{name}"].reshape(-1))
        self._rebuild()

    def __repr__(self) -> str:
        return (f"FlatAdamW(impl={self.impl}, params={len(self.params)}, active={int(self.active.sum())}, "
                f"groups={[(_DTYPE_NAME[g.dtype], g.numel, len(g.runs)) for g in self.groups]})")
