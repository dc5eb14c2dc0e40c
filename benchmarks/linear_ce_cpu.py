"""The fused linear cross-entropy's CPU path against eager ``logits -> cross_entropy``:
peak memory and time of the loss's forward + backward at LM-head shapes.

    python benchmarks/linear_ce_cpu.py                    # SmolLM2 and Qwen2.5-0.5B heads, 2048 tokens
    python benchmarks/linear_ce_cpu.py --tokens 512 --repeats 1

Per shape, each side in its own subprocess (its peak RSS is its own): the inputs are made
first (hidden [tokens, H] and the head's weight [V, H], fp32, requires_grad; labels with
every 8th position ignored), the resident set is read, then the loss's forward and backward
run --repeats times. Printed: the peak RSS above that baseline (the loss's own memory:
logits, their gradient, the chunk buffers; the gradients of hidden and weight are the same
on both sides) and the best time. The sides' losses and gradients are compared too.

  eager   F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100)
  fused   tuneterm_kernels.linear_cross_entropy(hidden, weight, labels, impl="torch")
          (chunks of rows; the [tokens x vocab] logits are never held)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {"smollm2-135m": (576, 49152), "qwen2.5-0.5b": (896, 151936)}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(side: str, hidden: int, vocab: int, tokens: int, repeats: int, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from tuneterm_kernels import linear_cross_entropy

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(tokens, hidden, generator=g) * 0.5).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * 0.02).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    labels[::8] = -100
    base = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    best = float("inf")
    for _ in range(repeats):
        h.grad = w.grad = None
        t0 = time.perf_counter()
        if side == "eager":
            loss = F.cross_entropy(h @ w.T, labels, ignore_index=-100)
        else:
            loss = linear_cross_entropy(h, w, labels, impl="torch")
        loss.backward()
        best = min(best, time.perf_counter() - t0)
    peak = _rss_mb("VmHWM")
    print("RESULT " + json.dumps({"side": side, "peak_mb": peak - base, "best_s": best, "loss": float(loss),
                                  "grad_h": h.grad[:4, :4].flatten().tolist(), "grad_w_norm": float(w.grad.norm())}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", choices=("eager", "fused"), help=argparse.SUPPRESS)
    ap.add_argument("--shape", choices=tuple(SHAPES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        child(args.side, *SHAPES[args.shape], args.tokens, args.repeats, args.threads)
        return 0
    import os

    print(f"# fused linear cross-entropy on the CPU: {args.tokens} tokens, fp32, {args.threads} threads, "
          f"best of {args.repeats}, load average {os.getloadavg()[0]:.1f}")
    print("| head (H x V) | side | loss memory MB | fwd+bwd s | loss |")
    print("| --- | --- | --- | --- | --- |")
    for name, (hidden, vocab) in SHAPES.items():
        res = {}
        for side in ("eager", "fused"):
            p = subprocess.run([sys.executable, __file__, "--side", side, "--shape", name, "--tokens", str(args.tokens),
                                "--repeats", str(args.repeats), "--threads", str(args.threads)],
                               capture_output=True, text=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not line:
                sys.exit(f"{name} {side} failed:\n{p.stderr[-2000:]}")
            res[side] = json.loads(line[0][7:])
            r = res[side]
            print(f"| {name} ({hidden} x {vocab:,}) | {side} | {r['peak_mb']:.0f} | {r['best_s']:.2f} | {r['loss']:.6f} |")
        e, f = res["eager"], res["fused"]
        dh = max(abs(a - b) for a, b in zip(e["grad_h"], f["grad_h"]))
        print(f"|  | fused / eager | {f['peak_mb'] / max(e['peak_mb'], 1e-9):.2f}x | "
              f"{e['best_s'] / f['best_s']:.2f}x speed | |d loss| {abs(e['loss'] - f['loss']):.1e}, "
              f"max |d grad_h| {dh:.1e}, grad_w norm {e['grad_w_norm']:.4f} / {f['grad_w_norm']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
