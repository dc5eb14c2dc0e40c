"""Sweep files: the [sweep] table is checked with one-line `file:line: field: message`
errors (exit 2), and a session file carrying one is still an ordinary session."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sweep_helpers import SPACE, sweep_text

from tuneterm.cli import main
from tuneterm.session import check_session_text, dumps_session
from tuneterm.session.problems import SessionError
from tuneterm.sweep.spec import load_sweep
from tuneterm.sweep.trial import trial_session


def _write(ws, text, name="sw.toml"):
    p = ws / "sessions" / name
    p.write_text(text)
    return p


def _line_of(text: str, needle: str) -> int:
    """The line of ``needle`` in the search space (the last occurrence)."""
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][-1]


def test_a_session_with_a_sweep_table_validates_and_the_table_is_not_saved(workspace):
    text = sweep_text()
    s, problems = check_session_text(text, "sw.toml", workspace)
    assert not problems and s.session.name == "sw"
    assert "[sweep" not in dumps_session(s)


def test_a_good_sweep_file_loads(workspace):
    sw = load_sweep(_write(workspace, sweep_text()), workspace)
    assert sw.name == "sw" and sw.direction == "minimize" and sw.trials == 8 and sw.max_steps == 12
    assert sw.space["learning_rate"].log and sw.space["batch_size"].choices == [8, 16]
    t = trial_session(sw, {"learning_rate": 1e-4, "dropout": 0.2, "batch_size": 16}, 7)
    assert t.session.name == "sw-t007" and t.hyperparameters.max_steps == 12
    assert t.hyperparameters.learning_rate == 1e-4 and t.hyperparameters.batch_size == 16
    assert "sweep sw trial 7" in t.session.description
    _, problems = check_session_text(dumps_session(t), "t.toml", workspace)
    assert not problems


@pytest.mark.parametrize("space,needle,field,words", [
    ("dropout = { low = 0.3, high = 0.1 }\n", "dropout", "sweep.space.dropout.low", "empty range"),
    ("learning_rate = { low = 1e-5, high = 1e-5 }\n", "learning_rate", "sweep.space.learning_rate.low",
     "empty range"),
    ("weight_decay = { low = 0.0, high = 0.1, log = true }\n", "weight_decay",
     "sweep.space.weight_decay.low", "log range must stay above zero"),
    ("learning_rate = { low = -1e-3, high = 1e-3, log = true }\n", "learning_rate",
     "sweep.space.learning_rate.low", "log range"),
    ("learnig_rate = { low = 1e-5, high = 1e-3 }\n", "learnig_rate", "sweep.space.learnig_rate",
     "did you mean 'learning_rate'?"),
    ("dropout = { low = 0.0, high = 1.5 }\n", "dropout", "sweep.space.dropout.high", "out of range"),
    ("schedule = { choices = [\"linear\", \"cosin\"] }\n", "schedule", "sweep.space.schedule.choices[1]",
     "cosin"),
    ("batch_size = { low = 8, high = 16.5 }\n", "batch_size", "sweep.space.batch_size.high", "integer"),
])
def test_bad_search_spaces_exit_2_with_one_line(workspace, capsys, space, needle, field, words):
    _exits_2_with_one_line(workspace, capsys, sweep_text(space=space), needle, field, words)


@pytest.mark.parametrize("line,words", [
    ("parallel = 0", "0 must be >= 1"),
    ("parallel = -2", "-2 must be >= 1"),
    ('parallel = "2"', "expected an integer, got a string"),
    ("parallel = 1.5", "expected an integer, got a float"),
    ("parallel = true", "expected an integer, got a boolean"),
    ("pruner_warmup_steps = -1", "-1 must be >= 0"),
])
def test_bad_sweep_keys_exit_2_with_one_line(workspace, capsys, line, words):
    key = line.split(" = ")[0]
    _exits_2_with_one_line(workspace, capsys, sweep_text(extra=line + "\n"), line, f"sweep.{key}", words)


def _exits_2_with_one_line(workspace, capsys, text, needle, field, words):
    p = _write(workspace, text)
    assert main(["sweep", str(p), "--check", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"tuneterm: error: {p}:{_line_of(text, needle)}: {field}: "), err
    assert words in err, err


def test_parallel_defaults_to_one(workspace):
    assert load_sweep(_write(workspace, sweep_text()), workspace).parallel == 1
    assert load_sweep(_write(workspace, sweep_text(extra="parallel = 3\n")), workspace).parallel == 3


def test_unknown_sweep_key_and_bad_objective(workspace):
    text = sweep_text().replace('sampler = "random"', 'samplr = "random"')
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, text), workspace)
    assert "sweep.samplr: unknown key; did you mean 'sampler'?" in str(e.value)
    text = sweep_text().replace('objective = "val_loss"', 'objective = "val_acc"')
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, text), workspace)
    assert "sweep.objective: unknown objective" in str(e.value) and "val_accuracy" in str(e.value)
    text = sweep_text().replace('objective = "val_loss"', 'objective = "val_loss"\ndirection = "maximize"')
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, text), workspace)
    assert "sweep.direction: maximize does not fit val_loss" in str(e.value)


def test_missing_sweep_table_and_budget(workspace):
    text = sweep_text().split("[sweep]")[0]
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, text), workspace)
    assert "sweep: no [sweep] table" in str(e.value)
    text = sweep_text().replace("max_steps = 12\n", "")
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, text), workspace)
    assert "max_steps" in str(e.value) and "required" in str(e.value)


def test_grid_needs_points_for_float_ranges(workspace):
    with pytest.raises(SessionError) as e:
        load_sweep(_write(workspace, sweep_text(sampler="grid")), workspace)
    assert "sweep.space.learning_rate: the grid sampler needs" in str(e.value)
    space = "learning_rate = { low = 1e-5, high = 1e-3, log = true, points = 3 }\nbatch_size = { choices = [8, 16] }\n"
    sw = load_sweep(_write(workspace, sweep_text(sampler="grid", space=space)), workspace)
    vals = sw.space["learning_rate"].grid_values()
    assert len(vals) == 3 and abs(vals[1] - 1e-4) < 1e-12


@pytest.mark.parametrize("rng,ok", [("{ low = 0, high = 2 }", True), ("{ low = 1, high = 4 }", False),
                                    ("{ choices = [0, 5] }", False)])
def test_freeze_depth_is_checked_against_the_models_layers(workspace, rng, ok):
    """tiny-bert has embeddings, layer.0, layer.1 (and the head, which always trains)."""
    text = sweep_text(space=SPACE + f"freeze_depth = {rng}\n")
    p = _write(workspace, text)
    r = subprocess.run([sys.executable, "-m", "tuneterm", "sweep", str(p), "--check", "--workspace",
                        str(workspace)], capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, r.stderr
        sw = load_sweep(p, workspace)
        assert sw.layer_groups == ["embeddings", "layer.0", "layer.1"]
        t = trial_session(sw, {"freeze_depth": 2}, 0)
        assert t.freeze.layers == ["embeddings", "layer.0"]
        return
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f":{_line_of(text, 'freeze_depth')}: sweep.space.freeze_depth." in lines[0]
    assert "beyond the model's 3 freezable layer groups" in lines[0]


def test_sweep_verbs_refuse_bad_invocations(workspace, capsys):
    assert main(["sweep", "show", "--workspace", str(workspace)]) == 2
    assert "give the sweep's name" in capsys.readouterr().err
    assert main(["sweep", "show", "nope", "--workspace", str(workspace)]) == 2
    assert "no sweeps" in capsys.readouterr().err


def test_one_driver_per_sweep(workspace):
    from tuneterm.errors import UserError
    from tuneterm.sweep.driver import _lock

    held = _lock(workspace, "sw")
    try:
        with pytest.raises(UserError, match="already running"):
            _lock(workspace, "sw")
        _lock(workspace, "other").close()  # another sweep is fine
    finally:
        held.close()
    _lock(workspace, "sw").close()  # free again
