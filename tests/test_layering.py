"""The layers of DESIGN.md, checked twice, the way harlequin does: the import-linter
contracts in pyproject.toml ([tool.importlinter], every import statement, lazy ones too),
and fresh interpreters that import a layer and look at what ended up in sys.modules (what
really loads). Also: no import cycle inside tuneterm or the kernels, and no module of
tuneterm/ or kernels/ over 400 lines."""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "triton", "peft", "trl", "accelerate")
UI = ("textual", "rich")
MAX_LINES = 400


def _modules(package: str) -> list[str]:
    mod = __import__(package, fromlist=["__path__"])
    return [package] + [i.name for i in pkgutil.walk_packages(mod.__path__, prefix=package + ".")
                        if not i.name.endswith("__main__")]


def _loaded(modules: list[str], then: str = "") -> set[str]:
    """Top-level packages in sys.modules after importing ``modules`` (and running ``then``)
    in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n" + then +
            "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed in this environment"
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and " kept" in out.stdout


HEADLESS = ["tuneterm.session", "tuneterm.runner", "tuneterm.sweep", "tuneterm.protocol", "tuneterm.workspace",
            "tuneterm.errors", "tuneterm.rundir", "tuneterm.files", "tuneterm.states"]


def test_headless_layers_load_neither_torch_nor_textual_nor_numpy_nor_optuna():
    mods = [m for p in HEADLESS for m in (_modules(p) if p in ("tuneterm.session", "tuneterm.runner",
                                                               "tuneterm.sweep") else [p])]
    loaded = _loaded(mods + ["tuneterm.cli.runner_verbs", "tuneterm.cli.daemon_verbs", "tuneterm.cli.sweep_verbs"])
    assert not loaded & set(HEAVY + UI + ("numpy", "optuna", "ray")), sorted(loaded & set(HEAVY + UI + ("numpy",
                                                                                                   "optuna", "ray")))


def test_the_daemon_and_the_tui_leave_torch_out():
    assert not _loaded(["tuneterm.runner.daemon", "tuneterm.runner.server"]) & set(HEAVY + UI)
    loaded = _loaded(_modules("tuneterm.tui") + ["tuneterm.cli.tui_verbs"], then="import tuneterm.tui.knobs as k; k.check_knob('learning_rate', "
                                                    "'2e-5')\n")
    assert "textual" in loaded  # the check is live: the TUI does load its toolkit
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not _loaded(["tuneterm.tui.data", "tuneterm.tui.series", "tuneterm.tui.knobs"]) & set(UI)


def test_engine_and_kernels_leave_textual_out():
    loaded = _loaded(_modules("tuneterm.engine") + _modules("tuneterm_kernels"))
    assert "torch" in loaded
    assert not loaded & set(UI), sorted(loaded & set(UI))


@pytest.mark.parametrize("argv", [["--help"], ["queue", "ls"], ["daemon", "status"], ["sweep", "show", "x"]])
def test_the_cli_parser_starts_light(argv):
    then = ("from tuneterm.cli import build_parser\n"
            f"try:\n    build_parser().parse_args({argv!r})\nexcept SystemExit:\n    pass\n")
    loaded = _loaded([], then=then)
    assert not loaded & set(HEAVY + UI + ("numpy", "optuna")), sorted(loaded & set(HEAVY + UI + ("numpy", "optuna")))


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    edges = {m: sorted(d for d in graph.find_modules_directly_imported_by(m) if d in modules) for m in modules}
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on.add(node)
            for j in range(i, len(edges[node])):
                nxt = edges[node][j]
                if nxt not in index:
                    work.append((node, j + 1))
                    work.append((nxt, 0))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return out


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph("tuneterm", "tuneterm_kernels")
    # A package's __init__ importing its own submodules is not a cycle worth the name.
    modules = {m for m in graph.modules}
    cycles = [c for c in _cycles(graph, modules)
              if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_over_400_lines():
    long = []
    for folder in ("tuneterm", "kernels"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            n = len(p.read_text().splitlines())
            if n > MAX_LINES:
                long.append(f"{p.relative_to(ROOT)} ({n})")
    assert long == [], f"modules over {MAX_LINES} lines: " + ", ".join(long)


def test_the_cycle_finder_finds_cycles():
    class Fake:
        def __init__(self, edges):
            self.edges = edges

        def find_modules_directly_imported_by(self, m):
            return self.edges.get(m, set())

    g = Fake({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}})
    assert _cycles(g, set("abcdef")) == [["a", "b", "c"]]
