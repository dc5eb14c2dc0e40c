"""Running a sweep: an Optuna study in the workspace, its trials trained through the queue.

    run_sweep(sweep, workspace, say=print) -> dict        the summary (best trial, counts)
    open_study(workspace, name) -> optuna.Study           an existing study (`sweep show`)
    describe_study(study) -> dict                         trials and importances

The study lives in ``WS/.tuneterm/sweeps.db`` (SQLite: every ask, report and tell is
committed, so a sweep survives a crash of this process or of the daemon). Each trial is
an ordinary session file, ``sessions/sweeps/<sweep>/<sweep>-tNNN.toml``, queued through
the runner; its eval rows come back over the runner's stream and are reported to Optuna;
a trial the pruner stops gets a ``stop`` control message. Optuna is imported lazily.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from tuneterm.errors import UserError
from tuneterm.sweep.spec import OBJECTIVES, Sweep, trial_session

_CONSECUTIVE_FAILURES = 5   # a sweep whose trials all fail stops after this many in a row
_RECONNECTS = 20            # daemon restarts tolerated while following one trial


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
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, sweep.trials // 3)))


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


# -- the loop ---------------------------------------------------------------------------

class _Runner:
    """The runner connection, re-made when the daemon goes away (it is restarted)."""

    def __init__(self, workspace: Path):
        self.ws = workspace
        self.client = None

    def get(self):
        from tuneterm.runner.client import RunnerClient

        if self.client is None:
            self.client = RunnerClient.connect(self.ws, start=True, timeout=20.0)
        return self.client

    def call(self, fn: Callable):
        """fn(client), retried over a lost daemon."""
        from tuneterm.runner.client import RunnerUnavailable

        for attempt in range(_RECONNECTS):
            try:
                return fn(self.get())
            except RunnerUnavailable:
                self.drop()
                if attempt == _RECONNECTS - 1:
                    raise
                time.sleep(0.5)

    def drop(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        self.client = None


def _counted(t) -> bool:
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("lost"))


def run_sweep(sweep: Sweep, workspace: Path, say: Callable[[str], None] = print) -> dict:
    optuna = _optuna()
    from optuna.trial import TrialState

    from tuneterm.session.io import check_session_text, dumps_session, save_session

    ws = Path(workspace)
    lock = _lock(ws, sweep.name)  # held until this process exits: one driver per sweep
    study = create_or_resume(sweep, ws)
    target = sweep.trials
    if sweep.sampler == "grid":
        size = 1
        for p in sweep.space.values():
            size *= len(p.grid_values())
        if size < target:
            say(f"the grid has {size} points: running {size} trials, not {target}")
            target = size
    runner = _Runner(ws)
    folder = ws / "sessions" / "sweeps" / sweep.name
    folder.mkdir(parents=True, exist_ok=True)
    failures = 0
    try:
        # Trials left running by an earlier `tuneterm sweep` (it crashed or was interrupted).
        for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            _reattach(study, sweep, ft, runner, say)
        while True:
            trials = study.get_trials(deepcopy=False)
            if sum(1 for t in trials if _counted(t)) >= target:
                break
            if failures >= _CONSECUTIVE_FAILURES:
                raise UserError(f"{failures} trials failed in a row; see `tuneterm sweep show {sweep.name}` "
                                "and the runs' logs (`tuneterm queue logs RUN`)")
            trial = study.ask(_distributions(sweep))
            session = trial_session(sweep, dict(trial.params), trial.number)
            name = sweep.trial_name(trial.number)
            path = folder / f"{name}.toml"
            checked, problems = check_session_text(dumps_session(session), str(path), ws)
            if problems:  # a sampled combination the session rules refuse (e.g. no steps after warmup)
                trial.set_user_attr("error", str(problems[0]))
                study.tell(trial, state=TrialState.FAIL)
                say(f"trial {trial.number}: failed before training: {problems[0].field}: {problems[0].message}")
                failures += 1
                continue
            save_session(session, path)
            trial.set_user_attr("session_file", str(path.relative_to(ws)))
            view = runner.call(lambda c: c.add(path, check=False))
            trial.set_user_attr("run_id", view["run_id"])
            say(f"trial {trial.number}: queued {view['run_id']}  {_params(trial.params)}")
            state = _follow(study, sweep, trial, view, runner, say)
            failures = failures + 1 if state == TrialState.FAIL else 0
        return finish(study, sweep, ws, say)
    finally:
        runner.drop()
        lock.close()


def _lock(ws: Path, name: str):
    import fcntl
    import os

    path = ws / ".tuneterm" / f"sweep-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise UserError(f"the sweep {name!r} is already running (pid {pid}); "
                        f"follow it with `tuneterm sweep show {name}`") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def _reattach(study, sweep: Sweep, ft, runner: _Runner, say) -> None:
    """A trial left RUNNING: follow its session if the queue still has it, else fail it."""
    from optuna.trial import Trial, TrialState

    name = sweep.trial_name(ft.number)
    run_id = ft.user_attrs.get("run_id")
    since = ft.datetime_start.timestamp() - 5 if ft.datetime_start else 0
    views = runner.call(lambda c: c.list_sessions())
    match = [v for v in views if (v["run_id"] == run_id if run_id else
                                  v["name"] == name and (v.get("created") or 0) >= since)]
    trial = Trial(study, ft._trial_id)
    if not match:
        trial.set_user_attr("lost", True)
        study.tell(trial, state=TrialState.FAIL)
        say(f"trial {ft.number}: was being asked when the last sweep stopped and never reached the queue; "
            "marked failed (not counted)")
        return
    view = match[-1]
    if not run_id:
        trial.set_user_attr("run_id", view["run_id"])
    say(f"trial {ft.number}: resuming {view['run_id']} ({view['state']})")
    if view["state"] in ("paused", "cancelled", "interrupted"):
        # Paused by `daemon stop` or a person: the sweep needs it to finish.
        runner.call(lambda c: c.resume(view["id"]) if view["state"] == "paused" else c.retry(view["id"]))
    _follow(study, sweep, trial, view, runner, say)


def _follow(study, sweep: Sweep, trial, view: dict, runner: _Runner, say):
    """Stream one trial's eval rows into Optuna until its session ends; tell the outcome."""
    from optuna.trial import TrialState

    from tuneterm.runner.client import RunnerUnavailable

    metric = sweep.objective
    reported = set(study._storage.get_trial(trial._trial_id).intermediate_values)
    stopped_at = None
    for attempt in range(_RECONNECTS):
        try:
            client = runner.get()
            for msg in client.subscribe(view["id"]):
                if msg.get("type") != "metric":
                    continue
                d = msg.get("data") or {}
                if d.get("kind") != "eval" or not isinstance(d.get(metric), (int, float)):
                    continue
                step = int(d["step"])
                if step in reported:
                    continue
                trial.report(float(d[metric]), step)
                reported.add(step)
                if stopped_at is None and trial.should_prune():
                    stopped_at = step
                    ans = client.control(view["id"], {"type": "stop"})
                    say(f"trial {trial.number}: pruned at step {step} ({metric} {d[metric]:.4f})"
                        + ("" if ans.get("type") == "ack" else f" (stop: {ans.get('reason')})"))
            break
        except RunnerUnavailable:
            runner.drop()  # the daemon died: the next connect starts a new one, which re-adopts the worker
            time.sleep(0.5)
    final = runner.call(lambda c: c.get(view["id"]))
    # A crashed daemon/worker may have left the stream early: wait for the session to end.
    while final["state"] not in ("done", "failed", "cancelled"):
        time.sleep(0.5)
        final = runner.call(lambda c: c.get(view["id"]))
    values = _eval_values(Path(final["run_dir"]), metric)
    for step, v in values:  # rows the stream may have missed (history covers them; belt and braces)
        if step not in reported:
            trial.report(v, step)
            reported.add(step)
    if stopped_at is not None or (final["state"] == "done" and final.get("result") == "stopped"):
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    if final["state"] == "done" and values:
        best = (min if sweep.direction == "minimize" else max)(v for _, v in values)
        trial.set_user_attr("final", values[-1][1])
        study.tell(trial, best)
        say(f"trial {trial.number}: complete  {metric} {best:.4f} (best of {len(values)} evaluations)")
        return TrialState.COMPLETE
    why = final.get("error") or (f"ended {final['state']}" + ("" if values else f" without a {metric} row"))
    trial.set_user_attr("error", str(why)[:500])
    study.tell(trial, state=TrialState.FAIL)
    say(f"trial {trial.number}: failed: {why}")
    return TrialState.FAIL


def _eval_values(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    out: dict[int, float] = {}
    p = run_dir / "metrics.jsonl"
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("kind") == "eval" and isinstance(r.get(metric), (int, float)):
                out[int(r["step"])] = float(r[metric])
    return sorted(out.items())


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def finish(study, sweep: Sweep, ws: Path, say) -> dict:
    """Save the best trial's session as ``sessions/<sweep>-best.toml``; the summary."""
    from optuna.trial import TrialState

    from tuneterm.session.io import load_session, save_session

    summary = describe_study(study, importances=False)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        say(f"sweep {sweep.name}: no trial completed; nothing to save")
        return summary
    best = study.best_trial
    src = ws / best.user_attrs["session_file"]
    session = load_session(src, ws)
    session.session.description = (f"best trial {best.number} of sweep {sweep.name}: {sweep.objective} "
                                   f"{best.value:.6g} (run {best.user_attrs.get('run_id')}); "
                                   + _params(best.params))
    dest = ws / "sessions" / f"{sweep.name}-best.toml"
    save_session(session, dest)
    summary["best_file"] = str(dest.relative_to(ws))
    counts = summary["counts"]
    say(f"sweep {sweep.name}: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
        f"{counts.get('FAIL', 0)} failed; best trial {best.number}: {sweep.objective} {best.value:.4f}  "
        f"{_params(best.params)}")
    say(f"saved {summary['best_file']} (replay its run: tuneterm replay {best.user_attrs.get('run_id')} --check)")
    return summary


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
    if counts.get("COMPLETE"):
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


__all__ = ["OBJECTIVES", "run_sweep", "open_study", "describe_study", "delete_study", "storage_url"]
