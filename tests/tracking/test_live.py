"""[tracking] written live, read back with TensorBoard's and MLflow's own readers; `tuneterm
track` on the finished run writes the same, and twice adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import rows, run_cli
from tracking_helpers import expected, history, mlflow_runs, session_file, steered_run, tensorboard


def _check_tensorboard(tb: dict, want: dict) -> None:
    loss = tb["scalars"]["train/loss"]
    assert [s for s, _ in loss] == sorted(want["loss"])  # every step, once
    assert all(v == pytest.approx(want["loss"][s], rel=1e-6) for s, v in loss)  # float32 in the file
    assert [s for s, _ in tb["scalars"]["eval/val_loss"]] == sorted(want["val_loss"]) == [6, 12]
    assert {"train/lr", "train/grad_norm", "eval/val_accuracy", "eval/val_f1"} <= set(tb["scalars"])
    assert tb["texts"]["edits"] == [(4, "step 4: learning_rate=0.001"), (4, "step 4: freeze layer.0")]
    assert tb["texts"]["run/end"] == [(12, "done at step 12")]
    assert "| hyperparameters.learning_rate | 0.002 |" in tb["texts"]["session/knobs"][0][1]
    assert tb["hparams"]["hyperparameters.learning_rate"] == pytest.approx(2e-3)
    assert tb["hparams"]["model.source"] == "builtin:tiny-bert"


def _check_mlflow(client, run, want: dict, run_id: str) -> None:
    assert run.info.status == "FINISHED" and run.data.tags["tuneterm.state"] == "done"
    assert run.data.tags["tuneterm.run_id"] == run_id
    assert history(client, run, "train/loss") == sorted(want["loss"].items())
    assert history(client, run, "eval/val_loss") == sorted(want["val_loss"].items())
    assert run.data.params["hyperparameters.learning_rate"] == "0.002"
    assert run.data.params["hyperparameters.max_steps"] == "12"
    assert run.data.tags["edit.step-000004"] == "step 4: learning_rate=0.001; freeze layer.0"


@pytest.mark.slow
def test_a_run_writes_tensorboard_and_mlflow_live_and_track_writes_the_same_twice(workspace, capsys, tmp_path):
    session = session_file(workspace, "tracked", 'tensorboard = true\nmlflow = "sqlite:///mlflow.db"\n')
    run_dir = steered_run(workspace, capsys, session)
    want = expected(run_dir)
    assert len(want["loss"]) == 12
    assert [r["kind"] for r in rows(run_dir, "events.jsonl")].count("edit") == 2

    live_tb = tensorboard(run_dir / "tensorboard")
    _check_tensorboard(live_tb, want)
    db = "sqlite:///" + str(workspace / "mlflow.db")  # a relative path starts at the workspace
    (client, live), = mlflow_runs(db)
    _check_mlflow(client, live, want, run_dir.name)
    assert "WARNING" not in (run_dir / "log.txt").read_text()

    # The same from the run directory, into another folder and another store, twice.
    other = str(tmp_path / "mlruns")  # MLflow's file store
    for _ in range(2):
        code, out, err = run_cli(["track", run_dir.name, "--tensorboard", str(tmp_path / "tb"), "--mlflow", other],
                                 capsys)
        assert code == 0, err
    assert [p.name for p in (tmp_path / "tb").iterdir()] == [run_dir.name]
    assert len(list((tmp_path / "tb" / run_dir.name).iterdir())) == 1  # one event file: replaced, not added to
    assert tensorboard(tmp_path / "tb" / run_dir.name) == live_tb
    (client2, again), = mlflow_runs(other)
    _check_mlflow(client2, again, want, run_dir.name)
    assert again.data.params == live.data.params and again.data.tags["edit.step-000004"] == \
        live.data.tags["edit.step-000004"]
    assert "0 metric values added" in out

    # Into the store the run wrote live: the same MLflow run, nothing added.
    code, out, err = run_cli(["track", run_dir.name, "--mlflow", db, "--json"], capsys)
    assert code == 0, err
    (client, live2), = mlflow_runs(db)
    assert live2.info.run_id == live.info.run_id and '"added": 0' in out
    assert history(client, live2, "train/loss") == sorted(want["loss"].items())


def test_track_without_flags_uses_the_runs_tracking_and_the_workspace_defaults(workspace, capsys, tmp_path):
    (workspace / ".tuneterm").mkdir()
    (workspace / ".tuneterm" / "config.toml").write_text('[tracking]\nmlflow = "mlruns"\nexperiment = "team"\n')
    session = session_file(workspace, "plain", "tensorboard = true\n", steps=6)
    run_dir = steered_run(workspace, capsys, session)
    # live: the workspace's MLflow store and experiment, the session's TensorBoard
    (client, run), = mlflow_runs(str(workspace / "mlruns"), "team")
    assert history(client, run, "train/loss") == sorted(expected(run_dir)["loss"].items())
    before = tensorboard(run_dir / "tensorboard")
    code, out, err = run_cli(["track", run_dir.name], capsys)
    assert code == 0, err
    assert f"tensorboard {run_dir / 'tensorboard'}" in out and "0 metric values added" in out
    assert tensorboard(run_dir / "tensorboard") == before
    assert len(mlflow_runs(str(workspace / "mlruns"), "team")) == 1


def test_track_refuses_what_it_cannot_write(workspace, capsys):
    session = session_file(workspace, "none", "", steps=3)
    run_dir = steered_run(workspace, capsys, session)
    code, _, err = run_cli(["track", run_dir.name], capsys)
    assert code == 2 and "nothing to write" in err and err.count("\n") == 1
    code, _, err = run_cli(["track", run_dir.name, "--mlflow", "sqlite://x.db"], capsys)
    assert code == 2 and "not a tracking URI" in err
    code, _, err = run_cli(["track", "no-such-run", "--mlflow", "mlruns"], capsys)
    assert code == 2 and "no run 'no-such-run'" in err
    import fcntl
    import os

    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT)  # a worker holds the run
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, err = run_cli(["track", run_dir.name, "--mlflow", "mlruns"], capsys)
    finally:
        os.close(fd)
    assert code == 2 and "still training" in err
    assert not Path(workspace / "mlruns").exists()


def test_validate_smoke_writes_no_tracker(workspace, capsys):
    session = session_file(workspace, "smoke", 'tensorboard = true\nmlflow = "mlruns"\n', steps=3)
    code, out, err = run_cli(["validate", "--smoke", str(session)], capsys)
    assert code == 0, err
    assert not (workspace / "mlruns").exists() and not list((workspace / "runs").iterdir())


@pytest.mark.slow
def test_a_run_killed_and_resumed_tracks_each_step_once_with_the_uninterrupted_values(workspace, capsys, tmp_path):
    from engine_helpers import kill9_after_checkpoint, strip_clock

    tracking = 'tensorboard = true\nmlflow = "mlruns"\n'
    reference = steered_run(workspace, capsys, session_file(workspace, "whole", tracking, steps=24))
    # the steered run's session (its edit log included) again, killed after its checkpoint at step 8
    again = workspace / "sessions" / "again.toml"
    again.write_text((reference / "session.toml").read_text())
    run_dir = kill9_after_checkpoint(workspace, again, 8, timeout=240)
    code, out, err = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert strip_clock(rows(run_dir)) == strip_clock(rows(reference))

    want = expected(reference)
    tb = tensorboard(run_dir / "tensorboard")  # one event file: the resumed attempt wrote the run anew
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    loss = tb["scalars"]["train/loss"]
    assert [s for s, _ in loss] == list(range(1, 25))
    assert all(v == pytest.approx(want["loss"][s], rel=1e-6) for s, v in loss)
    assert [s for s, _ in tb["texts"]["edits"]] == [4, 4]
    assert [s for s, _ in tb["texts"]["run/start"]] == [0, 8] and tb["texts"]["run/end"] == [(24, "done at step 24")]
    code, out, err = run_cli(["track", run_dir.name, "--tensorboard", str(tmp_path)], capsys)
    assert code == 0, err
    assert tensorboard(tmp_path / run_dir.name) == tb
    runs = {r.data.tags["tuneterm.run_id"]: (c, r) for c, r in mlflow_runs(str(workspace / "mlruns"))}
    client, run = runs[run_dir.name]
    assert history(client, run, "train/loss") == sorted(want["loss"].items())
    assert run.info.status == "FINISHED"
