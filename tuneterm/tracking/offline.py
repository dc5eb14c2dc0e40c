"""`tuneterm track`: write runs that already ended to TensorBoard and MLflow, from their run
directories (metrics.jsonl, events.jsonl, session.toml), the same as the live sink does.

Idempotent: a TensorBoard folder is written anew beside the old one and swapped in; the
MLflow run is found again by its ``tuneterm.run_id`` tag and only the steps it lacks are
logged (so `track` also completes a run whose live tracker failed midway).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from tuneterm import rundir
from tuneterm.errors import UserError
from tuneterm.session.io import load_session
from tuneterm.session.tracking import effective_tracking, resolve_mlflow_uri
from tuneterm.tracking import make_trackers
from tuneterm.tracking.rows import Ended, RunInfo, knobs_of, run_calls

def _training(run_dir: Path) -> bool:
    """Whether a worker holds the run (its flock): its trackers are being written live."""
    path = rundir.RunDir(run_dir).lock
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def track_run(run_dir: Path, workspace: Path, *, tensorboard: str | None = None, mlflow: str | None = None,
              experiment: str | None = None) -> dict:
    """Write one run. ``tensorboard``: a folder that gets ``<run-id>/``; ``mlflow``: a tracking
    URI. Neither: the run's own [tracking] (over the workspace's). Returns what was written."""
    run_dir = Path(run_dir)
    if _training(run_dir):
        raise UserError(f"{run_dir.name}: still training; its [tracking] is written live (track it once it ends)")
    session = load_session(rundir.RunDir(run_dir).session)
    settings = effective_tracking(session, workspace)
    if tensorboard is None and mlflow is None:
        tb_dir = rundir.RunDir(run_dir).tensorboard if settings.tensorboard else None
        uri = resolve_mlflow_uri(settings.mlflow, workspace)
        if tb_dir is None and not uri:
            raise UserError(f"{run_dir.name}: nothing to write: give --tensorboard DIR or --mlflow URI, or set "
                            "[tracking] in the session or in .tuneterm/config.toml")
    else:
        tb_dir = Path(tensorboard).expanduser().absolute() / run_dir.name if tensorboard else None
        uri = mlflow or ""
    calls, started, _ = run_calls(run_dir)
    ends = [c for c in calls if isinstance(c, Ended)]
    calls = [c for c in calls if not isinstance(c, Ended)] + ends[-1:]  # the run's outcome: its last end
    info = RunInfo(run_dir.name, session.name, knobs_of(session), started=started)
    exp = experiment or settings.experiment
    out: dict = {"run": run_dir.name}
    for tracker in make_trackers(tb_dir, uri, exp, info, live=False):
        if tracker.name == "tensorboard":
            _swap_in(tb_dir, tracker, calls)
            out["tensorboard"] = str(tb_dir)
        else:
            tracker.open()
            tracker.write(calls)
            tracker.close()
            out["mlflow"] = {"uri": uri, "experiment": exp, "run_id": tracker.run_id, "added": tracker.added}
    return out


def _swap_in(final: Path, tracker, calls: list) -> None:
    """Write the event files into a fresh folder beside ``final``, then put it in its place:
    tracking twice leaves one copy, and a failure leaves the old one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tracker.logdir = tmp
    try:
        tracker.open()
        tracker.write(calls)
        tracker.close()
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
