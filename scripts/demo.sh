#!/usr/bin/env bash
# Set up (if needed) and open tuneterm on the demo workspace (./demo-workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/tuneterm demo "$@"
