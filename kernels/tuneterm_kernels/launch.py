"""Launching a compiled Triton kernel without Triton's per-call JIT work.

``JITFunction.run`` binds the arguments, computes the specialisation key and looks the
kernel up on every call: ~25 us of host time on an H100 host (benchmarks/RESULTS.md),
more than a small dropout's whole device time. ``DirectLauncher`` keeps, per
specialisation that can occur (our key: the constexprs, num_warps, the device and the
16-byte alignment / divisibility / int32 range facts Triton specialises on), the
``CompiledKernel`` the JIT returned, and launches it through its launcher directly.

Safety: the direct calling convention is Triton-internal. The first call of each key runs
the JIT normally (the real result), then the direct launch into a scratch copy of the
output, and compares the bytes; any exception or difference disables the direct path for
that key for good (the JIT is used, as before). Never under the interpreter.
"""

from __future__ import annotations

import torch

try:
    import triton
except ImportError:  # pragma: no cover
    triton = None


def _knobs():
    return getattr(getattr(triton, "knobs", None), "runtime", None)


def _facts(v):
    if isinstance(v, torch.Tensor):
        return v.data_ptr() % 16 == 0
    if isinstance(v, int) and not isinstance(v, bool):
        return (v % 16 == 0, v == 1, -(1 << 31) <= v < (1 << 31))
    return None


class DirectLauncher:
    def __init__(self, jit_fn, specialised: tuple[int, ...]):
        """``specialised``: positions of the runtime arguments Triton specialises on
        (pointers and the integers not listed in ``do_not_specialize``)."""
        self.fn = jit_fn
        self.specialised = specialised
        self.cache: dict = {}
        self.enabled = True

    def __call__(self, grid0: int, args: tuple, out_index: int, constexprs: dict, num_warps: int) -> None:
        """Launch ``fn[(grid0,)](*args, **constexprs, num_warps=...)``; ``args[out_index]``
        is the output tensor (fresh, aliasing no input)."""
        dev = args[out_index].device
        key = (dev.index, num_warps, tuple(constexprs.items()), tuple(_facts(args[i]) for i in self.specialised))
        ck = self.cache.get(key) if self.enabled else False
        if ck:
            self._direct(ck, grid0, args, constexprs, dev)
            return
        compiled = self.fn[(grid0,)](*args, **constexprs, num_warps=num_warps)
        if ck is None:
            self.cache[key] = compiled if self._verify(compiled, grid0, args, out_index, constexprs, dev) else False

    def _direct(self, ck, grid0, args, constexprs, dev) -> None:
        stream = torch.cuda.current_stream(dev).cuda_stream
        knobs = _knobs()
        enter = knobs.launch_enter_hook if knobs is not None else None
        exit_ = knobs.launch_exit_hook if knobs is not None else None
        all_args = (*args, *constexprs.values())
        meta = ck.launch_metadata((grid0, 1, 1), stream, *all_args) if enter is not None else None
        ck.run(grid0, 1, 1, stream, ck.function, ck.packed_metadata, meta, enter, exit_, *all_args)

    def _verify(self, ck, grid0, args, out_index, constexprs, dev) -> bool:
        if ck is None or not hasattr(ck, "run"):
            return False
        out = args[out_index]
        scratch = torch.empty_like(out)
        try:
            self._direct(ck, grid0, args[:out_index] + (scratch,) + args[out_index + 1:], constexprs, dev)
            return bool(torch.equal(scratch.view(torch.uint8), out.view(torch.uint8)))
        except Exception:  # the convention of this Triton version differs: keep the JIT
            return False
