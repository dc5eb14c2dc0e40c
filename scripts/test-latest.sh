#!/usr/bin/env bash
# A maintainer's early warning: set up .venv-latest with the newest releases of every
# dependency (not the tested versions of scripts/constraints-tested.txt), show what moved,
# and run the suite there. Extra arguments go to pytest. When it passes, refresh the lock:
#   bash scripts/lock.sh .venv-latest
set -euo pipefail
cd "$(dirname "$0")/.."
export TUNETERM_VENV=.venv-latest TUNETERM_DEPS=latest
bash scripts/setup.sh
echo "versions that differ from scripts/constraints-tested.txt:"
.venv-latest/bin/pip freeze --exclude-editable | sort > .venv-latest/freeze.txt
grep -v '^#' scripts/constraints-tested.txt | sort | comm -13 - .venv-latest/freeze.txt | sed 's/^/  /' || true
exec bash scripts/test.sh "$@"
