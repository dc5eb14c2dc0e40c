"""A tracker that fails never stops training: one warning line in log.txt per tracker, the
run's own files as without it. A malformed [tracking] is refused up front (file:line)."""

from __future__ import annotations

import pytest
from engine_helpers import rows, run_cli, strip_clock
from tracking_helpers import closed_port, session_file, steered_run, tensorboard


def _train_blocked(workspace, session):
    """A run whose tensorboard/ folder cannot be made (a file is in its way; root ignores
    permissions), trained the way the worker trains one."""
    from tuneterm.engine.runs import create_run, setup_logging, train_run
    from tuneterm.session.io import load_session

    run_dir = create_run(workspace, load_session(session, workspace))
    (run_dir / "tensorboard").write_text("in the way\n")
    setup_logging(run_dir, to_stderr=False)
    code, state = train_run(run_dir, workspace, sinks=[])
    assert (code, state) == (0, "done")
    return run_dir


@pytest.mark.slow
def test_a_dead_server_and_an_unwritable_folder_leave_the_run_as_it_would_be(workspace, capsys):
    dead = f"http://127.0.0.1:{closed_port()}"
    session = session_file(workspace, "failing", f'tensorboard = true\nmlflow = "{dead}"\n')
    run_dir = _train_blocked(workspace, session)

    log = (run_dir / "log.txt").read_text().splitlines()
    warnings = [line for line in log if " WARNING " in line]
    assert len(warnings) == 2, warnings
    assert any("tracking: tensorboard" in w and "the run goes on without it" in w for w in warnings)
    assert any(f"tracking: mlflow ({dead}" in w and "the run goes on without it" in w for w in warnings)
    assert rows(run_dir, "events.jsonl")[-1]["state"] == "done"

    plain = session_file(workspace, "plain", "tensorboard = false\n")
    reference = _train_blocked(workspace, plain)
    assert strip_clock(rows(run_dir)) == strip_clock(rows(reference))


def test_tensorboard_survives_a_dead_mlflow_and_tracks_the_live_edit(workspace, capsys):
    session = session_file(workspace, "half", f'tensorboard = true\nmlflow = "http://127.0.0.1:{closed_port()}"\n')
    run_dir = steered_run(workspace, capsys, session)
    tb = tensorboard(run_dir / "tensorboard")
    assert [s for s, _ in tb["scalars"]["train/loss"]] == list(range(1, 13))
    assert tb["texts"]["edits"][0][0] == 4
    assert sum(" WARNING " in line for line in (run_dir / "log.txt").read_text().splitlines()) == 1


def test_validate_names_the_line_of_a_malformed_tracking_table(workspace, capsys):
    bad = session_file(workspace, "bad", 'tensorboard = "yes"\nmlflow = "sqlite://x.db"\nexperimnt = "a"\n')
    code, out, err = run_cli(["validate", "--no-model", str(bad)], capsys)
    assert code == 2
    lines = err.splitlines()
    text = bad.read_text().splitlines()
    for field, needle in (("tracking.tensorboard", "expected true or false"), ("tracking.mlflow", "tracking URI"),
                          ("tracking.experimnt", "did you mean 'experiment'")):
        line = next(ln for ln in lines if f": {field}: " in ln)
        assert needle in line, line
        number = int(line.split(":")[1])
        assert text[number - 1].startswith(field.split(".")[1]), (line, text[number - 1])

    # The workspace's table: its own file and line, for every session that takes its keys.
    (workspace / ".tuneterm").mkdir()
    (workspace / ".tuneterm" / "config.toml").write_text('[runner]\nslots = 1\n\n[tracking]\nmlflow = 5\n')
    good = session_file(workspace, "good", "tensorboard = true\n", steps=3)
    code, out, err = run_cli(["validate", "--no-model", str(good)], capsys)
    assert code == 2 and err.strip() == (f"{workspace / '.tuneterm' / 'config.toml'}:5: tracking.mlflow: "
                                         "expected a string, got an integer 5")
    code, out, err = run_cli(["run", str(good)], capsys)
    assert code == 2 and "config.toml:5: tracking.mlflow" in err and not list((workspace / "runs").iterdir())
    alone = session_file(workspace, "alone", "inherit = false\n", steps=3)
    code, out, err = run_cli(["validate", "--no-model", str(alone)], capsys)
    assert code == 0, err
