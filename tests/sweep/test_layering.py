"""tuneterm.sweep imports neither torch nor textual, and optuna only when a sweep runs: the
CLI parser (with the sweep verbs) stays light."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded(code: str) -> set[str]:
    code += "\nimport json, sys\nprint(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_sweep_package_imports_no_torch_no_textual_no_optuna():
    loaded = _loaded("import tuneterm.sweep, tuneterm.sweep.spec, tuneterm.sweep.study, tuneterm.cli.sweep_verbs")
    assert not loaded & {"torch", "transformers", "triton", "textual", "rich", "optuna"}, sorted(loaded)


def test_parser_with_sweep_verbs_does_not_import_optuna():
    loaded = _loaded("from tuneterm.cli import build_parser\nbuild_parser().parse_args(['sweep', 'show', 'x'])")
    assert "optuna" not in loaded and "torch" not in loaded
