"""How the driver tells Optuna an ended trial went, when the pruner's stop and the run's
last step race: a trial is PRUNED only if the stop took."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from tuneterm.rundir import RunDir
from tuneterm.sweep.driver import _Driver, _Flight


def _told(tmp_path, stopped_at, final_state, result):
    run = tmp_path / "run"
    run.mkdir()
    RunDir(run).metrics.write_text("".join(json.dumps({"kind": "eval", "step": s, "val_loss": v}) + "\n"
                                           for s, v in ((4, 0.9), (8, 0.7))))
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    sweep = SimpleNamespace(objective="val_loss", direction="minimize", name="t", parallel=1)
    drv = _Driver(study, sweep, tmp_path, trials=None, say=lambda _: None)
    fl = _Flight(trial=trial, view={}, follower=None, stopped_at=stopped_at)
    state = drv._tell(fl, {"run_dir": str(run), "state": final_state, "result": result})
    return state, study.trials[0].state


@pytest.mark.parametrize("stopped_at,final_state,result,want", [
    (4, "done", "stopped", TrialState.PRUNED),     # the stop took
    (4, "done", "done", TrialState.COMPLETE),      # the run ended before the stop reached it
    (None, "done", "stopped", TrialState.PRUNED),  # stopped by an earlier driver
    (None, "done", "done", TrialState.COMPLETE),
    (4, "failed", None, TrialState.PRUNED),        # stopped, then the worker died: not a failure of its knobs
])
def test_a_trial_is_pruned_only_if_its_stop_took(tmp_path, stopped_at, final_state, result, want):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    told, stored = _told(tmp_path, stopped_at, final_state, result)
    assert told == want and stored == want
