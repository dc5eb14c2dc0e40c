"""The sweep's Optuna study (optuna is imported lazily).

    open_study(workspace, name) -> optuna.Study           an existing study (`sweep show`)
    create_or_resume(sweep, workspace) -> optuna.Study    the driver's study
    describe_study(study) -> dict                         trials and importances
    delete_study(workspace, name)

The study lives in ``WS/.tuneterm/sweeps.db`` (SQLite: every ask, report and tell is
committed, so a sweep survives a crash of its driver or of the daemon). The driver that
runs the trials is ``driver.py``; the trials reach the queue through ``trials.py``; the
summary and the best session file are ``report.py``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.sweep.spec import OBJECTIVES, Sweep

def storage_url(workspace: Path) -> str:
    return f"sqlite:///{Path(workspace) / '.tuneterm' / 'sweeps.db'}"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("tuneterm sweep needs optuna: pip install 'tuneterm[sweep]' "
                        "(or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage(workspace: Path):
    optuna = _optuna()
    (Path(workspace) / ".tuneterm").mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(storage_url(workspace),
                                      engine_kwargs={"connect_args": {"timeout": 30}})


def open_study(workspace: Path, name: str):
    optuna = _optuna()
    db = Path(workspace) / ".tuneterm" / "sweeps.db"
    if not db.exists():
        raise UserError(f"no sweeps in {workspace} (no .tuneterm/sweeps.db)")
    storage = _storage(workspace)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if name not in names:
        from tuneterm.session.check import did_you_mean

        raise UserError(f"no sweep named {name!r}" + (did_you_mean(name, names)
                                                       or (f"; sweeps: {', '.join(names)}" if names else "")))
    return optuna.load_study(study_name=name, storage=storage)


def _sampler(sweep: Sweep, seed: int | None = None):
    optuna = _optuna()
    seed = sweep.seed if seed is None else seed
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values):  # noqa: ARG002
                # GridSampler calls study.stop() when the grid is done, which only works
                # inside study.optimize(); the driver stops at the grid's size itself.
                pass

        return Grid({k: p.grid_values() for k, p in sweep.space.items()}, seed=seed)
    # With trials in parallel, TPE counts the running ones as bad (constant liar) so that
    # two trials asked together do not land on the same spot.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, sweep.trials // 3)),
                                      constant_liar=sweep.parallel > 1)


def _pruner(sweep: Sweep):
    optuna = _optuna()
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                           n_warmup_steps=sweep.pruner_warmup_steps)
    if sweep.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _distributions(sweep: Sweep) -> dict:
    d = _optuna().distributions
    out = {}
    for k, p in sweep.space.items():
        if sweep.sampler == "grid":
            out[k] = d.CategoricalDistribution(p.grid_values())
        elif p.kind == "categorical":
            out[k] = d.CategoricalDistribution(p.choices)
        elif p.kind == "int":
            out[k] = d.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[k] = d.FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    return out


def _fingerprint(sweep: Sweep) -> str:
    return json.dumps({"objective": sweep.objective, "direction": sweep.direction,
                       "space": {k: _distributions(sweep)[k].__class__.__name__ + repr(sorted(vars(v).items()))
                                 for k, v in sweep.space.items()}}, sort_keys=True)


def create_or_resume(sweep: Sweep, workspace: Path):
    optuna = _optuna()
    study = optuna.create_study(study_name=sweep.name, storage=_storage(workspace), sampler=_sampler(sweep),
                                pruner=_pruner(sweep), direction=sweep.direction, load_if_exists=True)
    done = len(study.get_trials(deepcopy=False))
    if done and sweep.sampler != "grid":
        # A resumed sweep: a sampler seeded as before would propose the first trials again.
        study.sampler = _sampler(sweep, seed=sweep.seed + done)
    fp = _fingerprint(sweep)
    old = study.user_attrs.get("fingerprint")
    if old is None:
        study.set_user_attr("fingerprint", fp)
        study.set_user_attr("objective", sweep.objective)
        study.set_user_attr("file", sweep.file)
        study.set_user_attr("max_steps", sweep.max_steps)
    elif old != fp:
        raise UserError(f"the sweep {sweep.name!r} in .tuneterm/sweeps.db was started with another objective "
                        f"or search space; give this one another [sweep] name, or remove the old one with "
                        f"`tuneterm sweep rm {sweep.name}`")
    return study


def _counted(t) -> bool:
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("lost"))


def describe_study(study, importances: bool = True) -> dict:
    from optuna.trial import TrialState

    trials = []
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
        last = max(t.intermediate_values) if t.intermediate_values else None
        trials.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                       "steps": last, "run_id": t.user_attrs.get("run_id"),
                       "error": t.user_attrs.get("error")})
    out = {"name": study.study_name, "objective": study.user_attrs.get("objective"),
           "direction": study.direction.name.lower(), "counts": counts, "trials": trials, "best": None}
    if counts.get(TrialState.COMPLETE.name):
        b = study.best_trial
        out["best"] = {"number": b.number, "value": b.value, "params": dict(b.params),
                       "run_id": b.user_attrs.get("run_id")}
    if importances:
        out["importances"], out["importances_note"] = _importances(study)
    return out


def _importances(study) -> tuple[dict, str | None]:
    from optuna.trial import TrialState

    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 2:
        return {}, f"parameter importances need at least 2 complete trials ({n} so far)"
    try:
        from optuna.importance import get_param_importances

        return {k: float(v) for k, v in get_param_importances(study).items()}, None
    except Exception as e:  # e.g. every complete trial has the same value of a parameter
        return {}, f"parameter importances unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def delete_study(workspace: Path, name: str) -> None:
    optuna = _optuna()
    open_study(workspace, name)
    optuna.delete_study(study_name=name, storage=_storage(workspace))


__all__ = ["OBJECTIVES", "open_study", "create_or_resume", "describe_study", "delete_study", "storage_url"]
