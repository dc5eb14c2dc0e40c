"""Host cost per dropout call on CUDA: where the time goes when the tensor is small.

    python benchmarks/dropout_overhead.py      # on a CUDA machine (a few seconds)

benchmarks/kernels.py finds our dropout slower than F.dropout below ~64k x 4096 even
though the kernel runs at copy bandwidth: at small sizes the call is bound by the host.
This times, on a 4096-element tensor (device work negligible), the wall-clock cost of each
layer of a call, synchronising once per 2,000 calls, so the next change is aimed where
the microseconds are. "D._launch" is the op's CUDA path: the CompiledKernel that Triton's
JIT returned, launched through launch.DirectLauncher (verified against the JIT once per
key, disabled if it differs); "the op" is the torch.library op compiled graphs call.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    print("benchmarks/dropout_overhead.py needs a CUDA GPU", file=sys.stderr)
    sys.exit(2)

import triton  # noqa: E402

from tuneterm_kernels import dropout as D  # noqa: E402

N_CALLS = 2000


def per_call_us(fn) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(N_CALLS):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / N_CALLS * 1e6)
    return best


def main() -> None:
    x = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    xg = x.clone().requires_grad_(True)
    g = torch.randn_like(x)
    out = torch.empty_like(x)
    p, seed = 0.1, 42
    xa, oa = x.view(torch.int16), out.view(torch.int16)
    bs, warps = D._launch_config(x.numel())
    grid = (triton.cdiv(x.numel(), bs),)
    args = (xa, oa, x.numel(), *D._split32(seed), *D._split32(0), D.keep_threshold(p), D.keep_scale(p))
    rows = [
        ("empty kernel-free loop", lambda: None),
        ("torch.empty_like", lambda: torch.empty_like(x)),
        ("keep_scale(p)", lambda: D.keep_scale(p)),
        ("JIT launch (JITFunction.run)",
         lambda: D._seeded_dropout_kernel[grid](*args, KIND=D.KIND_BF16, BLOCK_SIZE=bs, num_warps=warps)),
    ]
    D._launch(x, p, seed, 0)  # the first call per key verifies the direct launch against the JIT
    direct_on = bool(D._direct is not None and any(D._direct.cache.values()))
    rows.append((f"D._launch (direct CompiledKernel launch, enabled={direct_on})", lambda: D._launch(x, p, seed, 0)))
    rows.append(("the op, fwd (what a compiled graph calls)",
                 lambda: torch.ops.tuneterm_kernels.seeded_dropout(xg, p, seed, 0, "triton")))
    rows += [
        ("launch_dropout (our launcher)", lambda: D.launch_dropout(x, p, seed, 0)),
        ("D.dropout fwd, no grad", lambda: D.dropout(x, p, seed, 0, True, "triton")),
        ("D.dropout fwd, requires_grad", lambda: D.dropout(xg, p, seed, 0, True, "triton")),
        ("F.dropout fwd, requires_grad", lambda: F.dropout(xg, p, training=True)),
        ("D.dropout fwd+bwd", lambda: D.dropout(xg, p, seed, 0, True, "triton").backward(g)),
        ("F.dropout fwd+bwd", lambda: F.dropout(xg, p, training=True).backward(g)),
    ]
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}: "
          f"host microseconds per call, 4096 bf16 elements, best of 3 x {N_CALLS}")
    for name, fn in rows:
        print(f"  {name:58s} {per_call_us(fn):8.1f}")


if __name__ == "__main__":
    main()
