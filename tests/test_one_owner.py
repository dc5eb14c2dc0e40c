"""One owner per fact (docs/architecture.md): the names of the run directory's files are
spelled only in tuneterm/rundir.py, and the runner, its verbs, the TUI and sweeps spell a
session state or a run's end state only through tuneterm.states' enums. Read from the source with
ast, so a second spelling fails here before it drifts."""

from __future__ import annotations

import ast
from pathlib import Path

from tuneterm.rundir import FILE_NAMES
from tuneterm.states import RUN_ENDS, STATES, Want

ROOT = Path(__file__).resolve().parents[1]

# Constants that are a run-directory file's name by coincidence, and what they name instead.
NOT_A_RUN_FILE = {
    ("tuneterm/session/reference.py", "session.toml"): "the session template shipped with the package",
    ("tuneterm/session/datafiles.py", "state.json"): "a `datasets` save_to_disk folder's own state.json",
}

# Where the runner states things in words that happen to be state names, and why that is
# not a state.
NOT_A_STATE = {
    ("tuneterm/runner/paths.py", "running"): "the daemon's ready line `running PID`: another daemon serves",
}

STATE_SCOPE = ("tuneterm/runner", "tuneterm/tui", "tuneterm/sweep", "tuneterm/cli/runner_verbs.py",
               "tuneterm/cli/daemon_verbs.py")


def strings(source: str, *, keys: bool = True) -> list[tuple[int, str]]:
    """(line, value) of every string constant of ``source`` that says something to the
    code, in source order. Left out: docstrings, the pieces of an f-string (fragments, not
    names: the ".lock" of f"sweep-{name}.lock"), and with ``keys=False`` the keys of a
    mapping (``{"running": True}``, ``st["paused"]``: the labels of a JSON answer)."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
        if not keys and isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)
        if not keys and isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]
    return [(n.lineno, n.value) for n in sorted(found, key=lambda n: (n.lineno, n.col_offset))]


def modules(root: Path, *scope: str) -> list[Path]:
    out = []
    for s in scope:
        p = root / s
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def second_spellings_of_file_names(root: Path) -> list[str]:
    names = set(FILE_NAMES)
    found = []
    for path in modules(root, "tuneterm"):
        rel = path.relative_to(root).as_posix()
        if rel == "tuneterm/rundir.py":
            continue
        found += [f"{rel}:{line}: {value!r}" for line, value in strings(path.read_text())
                  if value in names and (rel, value) not in NOT_A_RUN_FILE]
    return found


def bare_states(root: Path) -> list[str]:
    words = set(STATES) | set(RUN_ENDS)
    found = []
    for path in modules(root, *STATE_SCOPE):
        rel = path.relative_to(root).as_posix()
        found += [f"{rel}:{line}: {value!r}" for line, value in strings(path.read_text(), keys=False)
                  if value in words and (rel, value) not in NOT_A_STATE]
    return found


def wants_in(source: str) -> list[tuple[int, str]]:
    """(line, value) of each string constant compared with, assigned to or passed as a
    ``want`` (the queue's column saying why a worker is being ended): each should be a
    ``states.Want`` member."""
    words = {w.value for w in Want}
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs = []
        if isinstance(node, ast.Compare):
            pairs = [(node.left, c) for c in node.comparators] + [(c, node.left) for c in node.comparators]
        elif isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, ast.Call):
            pairs = [(ast.Name(id=k.arg), k.value) for k in node.keywords if k.arg]
        for target, value in pairs:
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                name = target.slice.value
            values = value.elts if isinstance(value, (ast.Tuple, ast.List, ast.Set)) else [value]
            found += [(v.lineno, v.value) for v in values
                      if name == "want" and isinstance(v, ast.Constant) and v.value in words]
    return sorted(found)


def test_the_runner_spells_no_want_as_a_bare_string():
    found = [f"{p.relative_to(ROOT)}:{line}: {v!r}" for p in modules(ROOT, *STATE_SCOPE)
             for line, v in wants_in(p.read_text())]
    assert found == [], "use tuneterm.states.Want"
    src = 'run.want = "pause"\nif row["want"] in ("cancel", x):\n    f(want="bounce")\nok = verb == "pause"\n'
    assert wants_in(src) == [(1, "pause"), (2, "cancel"), (3, "bounce")]


def test_run_directory_file_names_are_spelled_only_in_rundir():
    assert second_spellings_of_file_names(ROOT) == [], "use RunDir(path).<name> (tuneterm/rundir.py owns them)"


def test_the_runner_and_the_tui_spell_no_state_as_a_bare_string():
    assert bare_states(ROOT) == [], "use tuneterm.states.SessionState / RunEnd"


def test_the_checks_see_what_they_look_for():
    src = ('D = {"done": 1}\ndef f(s):\n    """done"""\n    return s == "running" or D["paused"] or "metrics.jsonl"'
           ' or f"x{s}.lock"\n')
    assert strings(src) == [(1, "done"), (4, "running"), (4, "paused"), (4, "metrics.jsonl")]
    assert strings(src, keys=False) == [(4, "running"), (4, "metrics.jsonl")]
