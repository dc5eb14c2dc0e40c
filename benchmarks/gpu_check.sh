#!/usr/bin/env bash
# One device call, under 8 minutes on an H100/H200: the GPU tests (kernels, the engine end
# to end on CUDA, deterministic replay), then whole fine-tuning steps (benchmarks/gpu_e2e.py:
# tuneterm vs the HF Trainer, Liger, PEFT/TRL). Results land in $OUT (or benchmarks/results/):
# pytest_gpu.txt, gpu_e2e.csv, gpu_e2e.md, and on a machine with 2+ GPUs distributed_gpu.md
# (benchmarks/distributed_gpu.py: DDP and FSDP2 scaling, ~3 more minutes; skipped on one GPU). `--kernels` runs the kernel benchmark
# (benchmarks/kernels.py, ~5 min) instead of the whole-step one.
#
#   bash benchmarks/gpu_bundle.sh                  # here first: what the device image lacks, into .gpu/
#   bash benchmarks/gpu_check.sh [--kernels]       # from the repository root, on the GPU machine (carry .gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
PY="$(command -v python || command -v python3)"   # the device image's python3 holds torch
# Without the editable install (the device machine), import kernels/ as tuneterm_kernels.
if ! "$PY" -c "import tuneterm_kernels" 2>/dev/null; then
    shim="$(mktemp -d)"
    ln -s "$PWD/kernels" "$shim/tuneterm_kernels"
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
fi
# What the image lacks (tomli-w, the tiny sessions' data and tokenizer), from gpu_bundle.sh.
[ -d .gpu/site ] && export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export OUT
export TRITON_INTERPRET=0  # real kernels: tests/conftest.py defaults it to 1 only when unset

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv 2>&1 | tee "$OUT/gpu.txt"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    2>&1 | tee -a "$OUT/gpu.txt"

echo "== GPU tests (kernels, and the engine end to end on CUDA)"
timeout 140 "$PY" -m pytest tests/kernels tests/engine/test_kernels_e2e.py -m gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -15
tests_rc=${PIPESTATUS[0]}

if [ "${1:-}" = "--kernels" ]; then
    echo "== kernel benchmark"
    timeout 330 "$PY" benchmarks/kernels.py --out "$OUT" > "$OUT/bench_log.txt" 2>&1
    bench_rc=$?
    grep '^\[' "$OUT/bench_log.txt"   # section timestamps
    tail -n 95 "$OUT/bench_log.txt"    # compact tables and targets (the reply keeps the end)
else
    echo "== dropout host overhead"
    timeout 25 "$PY" benchmarks/dropout_overhead.py 2>&1 | tee "$OUT/dropout_overhead.txt"
    echo "== whole-step benchmark"
    timeout 290 "$PY" benchmarks/gpu_e2e.py --budget-s 250 --out "$OUT" > "$OUT/e2e_log.txt" 2>&1
    bench_rc=$?
    grep '^\[' "$OUT/e2e_log.txt" | tail -n 40   # one line per side, timestamped
    [ -f "$OUT/gpu_e2e.md" ] && cat "$OUT/gpu_e2e.md" || tail -n 30 "$OUT/e2e_log.txt"
fi

echo "== multi-GPU: DDP and FSDP2 scaling (one line and skipped on a 1-GPU machine)"
timeout 240 "$PY" benchmarks/distributed_gpu.py 2>&1 | grep -v 'shards' | tee "$OUT/distributed_gpu.md" | tail -n 12
dist_rc=${PIPESTATUS[0]}

echo "== exit codes: gpu tests $tests_rc, benchmark $bench_rc, multi-GPU $dist_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$dist_rc" -eq 0 ]
