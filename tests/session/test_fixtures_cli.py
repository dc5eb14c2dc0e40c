"""One fixture per kind of malformed session: `tuneterm validate` exits 2 with exactly one
line naming the file, the line and the field — never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneterm.cli import main

BAD = Path(__file__).parent / "fixtures" / "bad"
REPO = Path(__file__).resolve().parents[2]

# fixture -> (line, field, a fragment of the message). Written by hand from the fixture
# text, so a wrong line number fails the test.
EXPECTED = {
    "syntax-error": (3, "syntax", "column"),
    "duplicate-key": (4, "syntax", "Cannot overwrite"),
    "bad-utf8": (3, "file", "not UTF-8"),
    "unknown-table": (5, "hyperparameter", "did you mean [hyperparameters]?"),
    "unknown-key": (4, "hyperparameters.learnig_rate", "did you mean 'learning_rate'?"),
    "key-in-wrong-table": (4, "hyperparameters.max_length", "belongs in [data]"),
    "key-outside-table": (2, "name", "belongs in [session]"),
    "table-not-table": (2, "session", "expected a table"),
    "wrong-type-string": (3, "hyperparameters.learning_rate", "expected a number, got a string"),
    "wrong-type-float-for-int": (4, "hyperparameters.batch_size", "expected an integer"),
    "bool-as-number": (3, "hyperparameters.epochs", "got a boolean"),
    "nan": (6, "hyperparameters.learning_rate", "nan is not allowed"),
    "inf": (4, "hyperparameters.weight_decay", "inf is not allowed"),
    "zero-batch-size": (3, "hyperparameters.batch_size", "0 is out of range [1, 65536]"),
    "negative-max-length": (4, "data.max_length", "-128 is out of range [8, 8192]"),
    "negative-lr": (3, "hyperparameters.learning_rate", "out of range (0, 1]"),
    "zero-lr": (4, "hyperparameters.learning_rate", "0.0 is out of range (0, 1]"),
    "negative-seed": (4, "session.seed", "-1 is out of range"),
    "dropout-one": (3, "hyperparameters.dropout", "1.0 is out of range [0, 1)"),
    "dropout-negative": (4, "hyperparameters.dropout", "-0.1 is out of range [0, 1)"),
    "bad-schedule": (3, "hyperparameters.schedule", "did you mean 'cosine'?"),
    "bad-early-stopping-metric": (4, "early_stopping.metric", "did you mean 'val_accuracy'?"),
    "bad-eval-metric": (4, "evaluation.metrics", "'acc' is not one of loss, accuracy, f1"),
    "bad-session-name": (3, "session.name", "letters, digits"),
    "path-escape": (3, "data.source", "outside the workspace"),
    "absolute-path-escape": (3, "model.source", "outside the workspace"),
    "bad-data-suffix": (3, "data.source", "expected a .csv or .jsonl file"),
    "missing-data-file": (3, "data.source", "does not exist"),
    "bad-validation-suffix": (4, "data.validation", "expected a .csv or .jsonl file"),
    "unknown-builtin": (3, "model.source", "did you mean 'builtin:minilm-l6'?"),
    "epochs-and-max-steps-zero": (3, "hyperparameters.epochs", "both 0"),
    "warmup-both": (4, "hyperparameters.warmup_steps", "not both"),
    "warmup-exceeds-max-steps": (4, "hyperparameters.warmup_steps", "max_steps = 50"),
    "early-stopping-mode": (5, "early_stopping.mode", "higher is better"),
    "early-stopping-metric-not-computed": (7, "early_stopping.metric", "add 'f1' to evaluation.metrics"),
    "edit-step-order": (10, "edits[1].step", "step order"),
    "edit-non-editable-key": (4, "edits[0].set.adam_beta1", "cannot be changed while a run trains"),
    "edit-out-of-range": (11, "edits[1].set.dropout", "1.2 is out of range [0, 1)"),
    "edit-negative-step": (3, "edits[0].step", "must be >= 0"),
    "edit-missing-step": (2, "edits[0]", "missing step"),
    "edit-unknown-key": (4, "edits[0].freze", "did you mean 'freeze'?"),
    "edit-empty": (2, "edits[0]", "needs set, freeze, unfreeze or stop"),
    "edit-freeze-not-list": (4, "edits[0].freeze", "list of layer names"),
    "edits-as-table": (2, "edits", "expected [[edits]] tables"),
}


def test_every_fixture_has_an_expectation():
    on_disk = {p.stem for p in BAD.glob("*.toml")}
    assert on_disk == set(EXPECTED), (on_disk ^ set(EXPECTED))


@pytest.fixture
def ws(workspace: Path) -> Path:
    (workspace / "data").mkdir()
    return workspace


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_fixture(name: str, ws: Path, capsys):
    line, field, fragment = EXPECTED[name]
    path = BAD / f"{name}.toml"
    code = main(["validate", "--no-model", "-w", str(ws), str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{path}:{line}: {field}: "), lines[0]
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_subprocess_no_traceback(ws: Path):
    """Through the real entry point: exit 2, one line per problem, no traceback."""
    files = [str(BAD / "dropout-one.toml"), str(BAD / "syntax-error.toml"), str(BAD / "bad-utf8.toml")]
    r = subprocess.run([sys.executable, "-m", "tuneterm", "validate", "--no-model", "-w", str(ws), *files],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.splitlines()) == 3
    assert r.stdout == ""


def test_missing_file_and_directory(ws: Path, capsys):
    code = main(["validate", "--no-model", "-w", str(ws), str(ws / "nope.toml"), str(ws)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [f"{ws / 'nope.toml'}:1: file: no such file",
                                f"{ws}:1: file: is a directory, not a session file"]


def test_ok_and_bad_together(ws: Path, capsys):
    good = ws / "sessions" / "good.toml"
    good.write_text('[session]\nname = "good"\n')
    code = main(["validate", "--no-model", "-w", str(ws), str(good), str(BAD / "nan.toml")])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == f"{good}: ok\n"
    assert len(err.splitlines()) == 1


def test_all_ok_exits_0(ws: Path, capsys):
    good = ws / "sessions" / "good.toml"
    good.write_text('[session]\nname = "good"\n')
    assert main(["validate", "--no-model", "-w", str(ws), str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"


def test_json(ws: Path, capsys):
    good = ws / "sessions" / "good.toml"
    good.write_text('[session]\nname = "good"\n')
    bad = BAD / "edit-out-of-range.toml"
    code = main(["validate", "--no-model", "--json", "-w", str(ws), str(good), str(bad)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    assert doc["ok"] is False
    assert doc["files"][0] == {"file": str(good), "ok": True, "problems": []}
    assert doc["files"][1]["problems"] == [
        {"file": str(bad), "line": 11, "field": "edits[1].set.dropout", "message": "1.2 is out of range [0, 1)"}]


def test_several_problems_each_on_its_line(ws: Path, capsys):
    f = ws / "many.toml"
    f.write_text('[session]\nname = "a b"\n\n[hyperparameters]\ndropout = 2.0\nbatch_size = -1\n'
                 'schedule = "cosine"\n[model]\nsourse = "x"\n')
    assert main(["validate", "--no-model", "-w", str(ws), str(f)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(": ")[0:2] for ln in lines] == [
        [f"{f}:2", "session.name"], [f"{f}:5", "hyperparameters.dropout"],
        [f"{f}:6", "hyperparameters.batch_size"], [f"{f}:9", "model.sourse"]]
