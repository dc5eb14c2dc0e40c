"""`tuneterm validate` with the real engine: layer names are checked against the model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None
                       or importlib.util.find_spec("tuneterm.engine.check") is None,
                       reason="needs torch and tuneterm.engine.check"),
]


def test_unknown_layer_against_tiny_bert(workspace: Path):
    f = workspace / "sessions" / "s.toml"
    f.write_text('[session]\nname = "s"\n\n[model]\nsource = "builtin:tiny-bert"\n\n'
                 '[freeze]\nlayers = ["embeddings", "layers.1"]\n\n[[edits]]\nstep = 3\nunfreeze = ["hed"]\n')
    r = subprocess.run([sys.executable, "-m", "tuneterm", "validate", "-w", str(workspace), str(f)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    if "needs the package" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"{f}:8: freeze.layers: unknown layer 'layers.1'; did you mean 'layer.1'?",
        f"{f}:12: edits[0].unfreeze: unknown layer 'hed'; did you mean 'head'?",
    ]
    assert "Traceback" not in r.stderr
