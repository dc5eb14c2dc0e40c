"""CPU dropout-mask benchmark: the C extension vs the PyTorch generator vs F.dropout.

    python benchmarks/philox_cpu.py                      # 29M elements (a MiniLM step's worth)
    python benchmarks/philox_cpu.py --numel 1000000 --reps 9

Rows (median wall ms over --reps, and the process CPU ms of that median run):
  C keep_mask            tuneterm_kernels.philox_cpu.keep_mask for each SIMD implementation
                         the CPU runs: automatic threads (one), and split over two threads
  torch generator        philox_uniform16(...) >= keep_threshold(p): the PyTorch generator of
                         dropout.py (int64 tensor ops; --torch-reps), what philox_keep_mask does
  F.dropout fp32         torch.nn.functional.dropout on an fp32 tensor (a different mask)
  C mask + where         the whole seeded dropout with the C mask: where(keep, x * scale, 0),
                         as dropout._apply_torch computes it (compare with F.dropout)
The C mask is checked bit for bit against the PyTorch generator first (on a prefix).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from tuneterm_kernels import dropout as D
from tuneterm_kernels import philox_cpu


def torch_mask(seed: int, offset: int, numel: int, p: float) -> torch.Tensor:
    return D.philox_uniform16(seed, offset, numel) >= D.keep_threshold(p)


def bench(fn, reps: int) -> tuple[float, float]:
    fn()  # warm-up: first-touch page faults, lazy init
    runs = []
    for _ in range(reps):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        runs.append(((time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3))
    runs.sort()
    return runs[len(runs) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=29_000_000)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--torch-reps", type=int, default=3, help="reps of the (slow) PyTorch generator")
    ap.add_argument("--skip-torch", action="store_true", help="skip the PyTorch generator")
    args = ap.parse_args(argv)
    n, p = args.numel, args.p
    seed, offset = D.mix_seed(1, 2, 3), 12345

    print(f"numel {n:,}  p {p}  torch {torch.__version__}  torch threads {torch.get_num_threads()}")
    if not philox_cpu.available():
        print("C extension not built (pip install -e . with a C compiler): only the PyTorch rows")
    else:
        from tuneterm_kernels import _philox as P

        check = min(n, 1 << 20)
        assert torch.equal(philox_cpu.keep_mask(seed, offset, check, p), torch_mask(seed, offset, check, p))
        print(f"C extension: {P.simd()} (bit-identical to the PyTorch generator on {check:,} elements)")
    print(f"{'':40s} {'wall ms':>9s} {'cpu ms':>9s}")

    def row(name, fn, reps):
        wall, cpu = bench(fn, reps)
        print(f"{name:40s} {wall:9.1f} {cpu:9.1f}", flush=True)
        return wall

    x = torch.randn(n)
    if philox_cpu.available():
        from tuneterm_kernels import _philox as P

        default = P.simd()
        modes = []
        for m in ("avx2", "sse2", "scalar"):
            got = P._set_simd(m)
            if got not in modes:
                modes.append(got)
        try:
            for m in modes:
                P._set_simd(m)
                row(f"C keep_mask [{m}] threads auto", lambda: philox_cpu.keep_mask(seed, offset, n, p), args.reps)
                row(f"C keep_mask [{m}] threads=2",
                    lambda: philox_cpu.keep_mask(seed, offset, n, p, threads=2), args.reps)
        finally:
            P._set_simd(default)
        scale = torch.tensor(D.keep_scale(p), dtype=torch.float32)

        def c_dropout():
            keep = philox_cpu.keep_mask(seed, offset, n, p)
            return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype))

        row(f"C mask + where [{default}] (fp32)", c_dropout, args.reps)
    row("F.dropout (fp32)", lambda: torch.nn.functional.dropout(x, p, training=True), args.reps)
    if not args.skip_torch:
        row("torch generator (philox_keep_mask)", lambda: torch_mask(seed, offset, n, p), args.torch_reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
