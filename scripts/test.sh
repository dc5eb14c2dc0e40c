#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest.
# The whole output, with the 30 slowest tests at its end, is kept in test-output/last-run.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${TUNETERM_VENV:-.venv}"
# Triton's interpreter must be chosen before anything imports triton (CPU machines).
export TRITON_INTERPRET="${TRITON_INTERPRET:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p test-output
# Two worker processes by default (a test file stays on one worker: module fixtures are built
# once); TUNETERM_TEST_WORKERS=0 runs everything in this process (for pdb), N for more.
set +e
"$VENV/bin/python" -m pytest -q -n "${TUNETERM_TEST_WORKERS:-2}" --dist loadfile --durations=30 "$@" \
  2>&1 | tee test-output/last-run.txt
rc=${PIPESTATUS[0]}
exit "$rc"
