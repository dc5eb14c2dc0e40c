"""Trackers people already read: TensorBoard event files and MLflow runs (docs/tracking.md).

Written live by the process that writes metrics.jsonl, through the engine's metric sink
(``live_sink``), and for finished runs from their run directories (``offline``, the verb
`tuneterm track`). Each tracker is one small class with ``open``/``write``/``close``/
``abandon`` over the calls of ``rows.Translator``; W&B or Trackio would be one more.
No torch, no textual; tensorboard and mlflow are imported only when a run uses them.
"""

from __future__ import annotations

from pathlib import Path

from tuneterm import rundir
from tuneterm.session.tracking import effective_tracking, resolve_mlflow_uri
from tuneterm.tracking.rows import RunInfo, knobs_of


def make_trackers(tensorboard_dir: Path | None, mlflow_uri: str, experiment: str, info: RunInfo, *,
                  live: bool) -> list:
    trackers: list = []
    if tensorboard_dir is not None:
        from tuneterm.tracking.tb import TensorBoardTracker

        trackers.append(TensorBoardTracker(tensorboard_dir, info))
    if mlflow_uri:
        from tuneterm.tracking.mlflow_run import MlflowTracker

        trackers.append(MlflowTracker(mlflow_uri, experiment, info, live=live))
    return trackers


def live_sink(session, run_dir: Path, workspace: Path | None, *, resumed: bool = False):
    """The sink that writes this run's trackers as it trains, or None when it has none.
    ``resumed``: this attempt continues an earlier one (its rows are written first). Raises
    ``SessionError`` (file:line) on a malformed workspace [tracking]."""
    settings = effective_tracking(session, workspace)
    rd = rundir.RunDir(run_dir)
    info = RunInfo(rd.name, session.name, knobs_of(session), resumed=resumed)
    trackers = make_trackers(rd.tensorboard if settings.tensorboard else None,
                             resolve_mlflow_uri(settings.mlflow, workspace), settings.experiment, info, live=True)
    if not trackers:
        return None
    from tuneterm.tracking.rows import run_calls
    from tuneterm.tracking.sink import TrackingSink

    if not resumed:
        return TrackingSink(trackers)
    calls, _, translator = run_calls(rd.path)
    return TrackingSink(trackers, (calls, translator))
