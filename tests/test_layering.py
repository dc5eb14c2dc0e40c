"""The layers of DESIGN.md, checked the way harlequin does: import each module of a layer in
a fresh interpreter and look at what ended up in sys.modules."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "triton")
UI = ("textual", "rich")


def _modules(package: str) -> list[str]:
    mod = __import__(package, fromlist=["__path__"])
    names = [package]
    for info in pkgutil.walk_packages(mod.__path__, prefix=package + "."):
        names.append(info.name)
    return names


def _imported(modules: list[str], prelude: str = "") -> set[str]:
    code = (
        "import importlib, json, sys\n" + prelude +
        f"for m in {modules!r}:\n    importlib.import_module(m)\n"
        "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("package", ["tuneterm.session", "tuneterm.runner", "tuneterm.sweep"])
def test_headless_layers_import_neither_torch_nor_textual(package):
    mods = _modules(package) + ["tuneterm.protocol", "tuneterm.workspace", "tuneterm.errors"]
    loaded = _imported(mods)
    assert not loaded & set(HEAVY + UI), f"{package} pulled in {sorted(loaded & set(HEAVY + UI))}"


def test_tui_never_imports_torch():
    loaded = _imported(_modules("tuneterm.tui"))
    assert "textual" in loaded  # the check is live: the TUI does import its toolkit
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_engine_and_kernels_never_import_textual():
    loaded = _imported(_modules("tuneterm.engine") + _modules("tuneterm_kernels"))
    assert "torch" in loaded
    assert not loaded & set(UI), sorted(loaded & set(UI))


def test_cli_parser_starts_without_torch():
    # `tuneterm --help` and the runner verbs must start fast: argparse set-up is light.
    loaded = _imported([], prelude="from tuneterm.cli import build_parser\nbuild_parser()\n")
    assert not loaded & set(HEAVY + UI), sorted(loaded & set(HEAVY + UI))

