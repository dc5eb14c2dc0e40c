"""The runner never imports torch, transformers or textual (start-up stays fast)."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["tuneterm.runner", "tuneterm.runner.client", "tuneterm.runner.daemon", "tuneterm.runner.server",
           "tuneterm.runner.supervise",
           "tuneterm.runner.store", "tuneterm.runner.executor", "tuneterm.runner.tail", "tuneterm.runner.paths",
           "tuneterm.cli.runner_verbs"]
HEAVY = ("torch", "transformers", "textual", "triton", "numpy")


def test_runner_modules_import_no_heavy_packages():
    code = (f"import importlib, json, sys\nfor m in {MODULES!r}: importlib.import_module(m)\n"
            f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cli_parser_with_runner_verbs_imports_no_heavy_packages():
    code = ("import json, sys\nfrom tuneterm.cli import build_parser\n"
            "build_parser().parse_args(['queue', 'ls'])\n"
            f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
