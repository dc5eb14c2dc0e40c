"""What the side-by-side CPU benchmarks share (dpo_cpu.py, train_lm_cpu.py, lora_cpu.py).

Each side runs in its own process, a fresh interpreter, so each has its own peak RSS and
nothing warm from the other side. Its result is one ``RESULT {json}`` line on stdout. The
sides run one after another in each repeat, and the first side rotates per repeat, so the
machine's outside load falls on each side in turn; repeat i of every side is one pair.

A driver imports this module before it takes benchmarks/ off ``sys.path`` (the folder holds
a script named kernels.py, which transformers would import as the ``kernels`` package).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

PREFIX = "RESULT "
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
NOT_PASSED = ("repeats", "sides", "side")  # the driver's own options, not a side's


def emit(res: dict) -> None:
    """A side's result on stdout, with its process's peak RSS in MB."""
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(PREFIX + json.dumps(res), flush=True)


def options(args) -> list[str]:
    """The parsed options as a side's command line: all of them but the driver's own."""
    out = []
    for k, v in vars(args).items():
        if k not in NOT_PASSED:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def run_side(script: str, side: str, argv: list[str], *, required: bool = False) -> dict | None:
    """``script --side SIDE argv`` in its own process: its result. A side that fails prints
    the tail of its stderr and gives None, or ends the driver when ``required``."""
    proc = subprocess.run([sys.executable, script, "--side", side, *argv], capture_output=True, text=True,
                          env={**os.environ, **OFFLINE})
    line = [x for x in proc.stdout.splitlines() if x.startswith(PREFIX)]
    if proc.returncode == 0 and line:
        return json.loads(line[-1][len(PREFIX):])
    message = f"{side}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}"
    if required:
        raise SystemExit(message)
    print(message, file=sys.stderr)
    return None


def run_sides(script: str, sides: list[str], repeats: int, argv: list[str], *,
              required: bool = False) -> dict[str, list[dict]]:
    """Every side ``repeats`` times, the first side rotating per repeat: {side: [results]}."""
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for rep in range(repeats):
        k = rep % len(sides)
        for side in sides[k:] + sides[:k]:
            res = run_side(script, side, argv, required=required)
            if res is not None:
                results[side].append(res)
    return results
