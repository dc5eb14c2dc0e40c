"""A Python started in the checkout root (``python -m pytest``, ``python -c``, a REPL or a
notebook there, the daemon's pre-flight when the workspace is the checkout) has the root
first on sys.path. transformers >= 5.25 imports the PyPI package ``kernels`` (the Hugging
Face kernel hub) from ``transformers.modeling_utils``; the project's ``kernels/`` folder
must never be found under that name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import transformers.modeling_utils
import kernels, tuneterm_kernels
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2)
model = LlamaForCausalLM(cfg)
print(json.dumps({"path0": sys.path[0], "kernels": kernels.__file__,
                  "tuneterm_kernels": tuneterm_kernels.__file__,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def _probe(*args: str, stdin: str | None = None) -> dict:
    out = subprocess.run([sys.executable, *args], input=stdin, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(found: dict) -> None:
    assert Path(found["path0"] or ".").resolve() == ROOT
    # the kernel hub's package, from site-packages, not this checkout's folder
    assert not Path(found["kernels"]).resolve().is_relative_to(ROOT / "kernels"), found
    assert Path(found["tuneterm_kernels"]).resolve().parent == ROOT / "kernels" / "tuneterm_kernels" or \
        "site-packages" in found["tuneterm_kernels"], found
    assert found["params"] > 0


def test_python_c_in_the_checkout_root_imports_transformers_models_and_tuneterm_kernels():
    _check(_probe("-c", PROBE))


def test_python_reading_stdin_in_the_checkout_root_does_too():
    _check(_probe("-", stdin=PROBE))


def test_the_kernels_folder_is_no_regular_package():
    # A kernels/__init__.py would make the folder a regular package that wins over the
    # kernel hub's whenever the root is on sys.path.
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert (ROOT / "kernels" / "tuneterm_kernels" / "__init__.py").exists()
