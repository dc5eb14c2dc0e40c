"""Running a sweep: an Optuna study in the workspace, its trials trained through the queue.

    run_sweep(sweep, workspace, say=print) -> dict        the summary (best trial, counts)
    open_study(workspace, name) -> optuna.Study           an existing study (`sweep show`)
    describe_study(study) -> dict                         trials and importances

The study lives in ``WS/.tuneterm/sweeps.db`` (SQLite: every ask, report and tell is
committed, so a sweep survives a crash of this process or of the daemon). Each trial is
an ordinary session file, ``sessions/sweeps/<sweep>/<sweep>-tNNN.toml``, queued through
the runner; its eval rows come back over the runner's stream and are reported to Optuna;
a trial the pruner stops gets a ``stop`` control message. Up to ``[sweep] parallel``
trials are in flight at once, each followed by a thread of its own; Optuna is only called
from the driver's thread. Optuna is imported lazily.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


# -- the loop ---------------------------------------------------------------------------

_ENDED = ("done", "failed", "cancelled")  # session states that end a trial


class _Runner:
    """The runner connection, re-made when the daemon goes away (it is restarted)."""

    def __init__(self, workspace: Path):
        self.ws = workspace
        self.client = None
        self.closed = False  # close(): no more connections (the sweep is stopping)

    def get(self):
        from tuneterm.runner.client import RunnerClient, RunnerUnavailable

        if self.client is None:
            if self.closed:
                raise RunnerUnavailable("the sweep is stopping")
            self.client = RunnerClient.connect(self.ws, start=True, timeout=20.0)
            if self.closed:  # closed from another thread while connecting
                self.drop()
                raise RunnerUnavailable("the sweep is stopping")
        return self.client

    def call(self, fn: Callable):
        """fn(client), retried over a lost daemon."""
        from tuneterm.runner.client import RunnerUnavailable

        for attempt in range(_RECONNECTS):
            try:
                return fn(self.get())
            except RunnerUnavailable:
                self.drop()
                if self.closed or attempt == _RECONNECTS - 1:
                    raise
                time.sleep(0.5)

    def drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        """Safe from any thread: ends this connection's streams and refuses new ones."""
        self.closed = True
        self.drop()


def _eval_row(msg: dict, metric: str) -> tuple[int, float] | None:
    """(step, value) of a stream message that is an eval row with the objective."""
    if msg.get("type") != "metric":
        return None
    d = msg.get("data") or {}
    if d.get("kind") != "eval" or not isinstance(d.get(metric), (int, float)):
        return None
    return int(d["step"]), float(d[metric])


class _Follower(threading.Thread):
    """Follows one trial's session on a runner connection of its own (a daemon restart
    breaks each stream, and each reconnects): puts ("eval", number, step, value) on ``box``
    for every objective row, then ("end", number, view) once the session has ended, or
    ("error", number, exception). Only the driver's thread talks to Optuna."""

    def __init__(self, ws: Path, number: int, ref: int, metric: str, box: queue.Queue):
        super().__init__(name=f"sweep-trial-{number}", daemon=True)
        self.runner = _Runner(ws)
        self.number, self.ref, self.metric, self.box = number, ref, metric, box

    def run(self) -> None:
        try:
            self.box.put(("end", self.number, self._follow()))
        except BaseException as e:  # noqa: BLE001 - the driver raises it
            if not self.runner.closed:
                self.box.put(("error", self.number, e))
        finally:
            self.runner.drop()

    def _follow(self) -> dict:
        from tuneterm.runner.client import RunnerUnavailable

        for _ in range(_RECONNECTS):
            try:
                for msg in self.runner.get().subscribe(self.ref):
                    row = _eval_row(msg, self.metric)
                    if row is not None:
                        self.box.put(("eval", self.number, *row))
                break
            except RunnerUnavailable:
                if self.runner.closed:
                    raise
                self.runner.drop()  # the daemon died: the next connect starts a new one, which re-adopts the worker
                time.sleep(0.5)
        final = self.runner.call(lambda c: c.get(self.ref))
        # A crashed daemon/worker may have left the stream early: wait for the session to end.
        while final["state"] not in _ENDED:
            time.sleep(0.5)
            final = self.runner.call(lambda c: c.get(self.ref))
        return final

    def stop(self) -> None:
        self.runner.close()


@dataclass
class _Flight:
    """A trial whose session is in the queue: what the driver knows of it."""

    trial: Any                     # optuna.Trial
    view: dict                     # its session, as the runner showed it when queued
    follower: _Follower
    reported: set[int] = field(default_factory=set)  # steps told to Optuna
    stopped_at: int | None = None  # the step the pruner stopped it at


def _counted(t) -> bool:
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("lost"))


def run_sweep(sweep: Sweep, workspace: Path, say: Callable[[str], None] = print) -> dict:
    _optuna()  # the install hint when it is missing
    from optuna.trial import TrialState

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
    drive = _Driver(study, sweep, ws, runner, say)
    failures = 0
    try:
        # Trials left running by an earlier `tuneterm sweep` (it crashed or was interrupted).
        for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            drive.reattach(ft)
        while True:
            counted = sum(1 for t in study.get_trials(deepcopy=False) if _counted(t))
            # Keep `parallel` trials in flight; with 1 each trial ends before the next is asked.
            while (len(drive.flights) < sweep.parallel and counted + len(drive.flights) < target
                   and failures < _CONSECUTIVE_FAILURES):
                if not drive.launch():  # refused before training: told FAIL, and counted
                    failures += 1
                    counted += 1
            if not drive.flights:
                if counted >= target:
                    break
                raise UserError(f"{failures} trials failed in a row; see `tuneterm sweep show {sweep.name}` "
                                "and the runs' logs (`tuneterm queue logs RUN`)")
            state = drive.next_event()
            if state is not None:
                failures = failures + 1 if state == TrialState.FAIL else 0
        return finish(study, sweep, ws, say)
    finally:
        drive.close()
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


class _Driver:
    """The trials in flight (up to ``sweep.parallel``): asked and queued, or re-attached,
    followed by one thread each, reported, pruned and told from this thread."""

    def __init__(self, study, sweep: Sweep, ws: Path, runner: _Runner, say):
        self.study, self.sweep, self.ws, self.runner, self.say = study, sweep, ws, runner, say
        self.box: queue.Queue = queue.Queue()
        self.flights: dict[int, _Flight] = {}
        self.folder = ws / "sessions" / "sweeps" / sweep.name
        self.slots_checked = sweep.parallel == 1

    def _fly(self, trial, view: dict) -> None:
        f = _Follower(self.ws, trial.number, view["id"], self.sweep.objective, self.box)
        done = set(self.study._storage.get_trial(trial._trial_id).intermediate_values)
        self.flights[trial.number] = _Flight(trial, view, f, done)
        f.start()

    def launch(self) -> bool:
        """Ask Optuna for a trial and queue its session; False when the session rules
        refuse the sampled combination (the trial is told FAIL)."""
        from optuna.trial import TrialState

        from tuneterm.session.io import check_session_text, dumps_session, save_session

        if not self.slots_checked:
            self.slots_checked = True
            slots = self.runner.call(lambda c: c.status()).get("slots")
            if isinstance(slots, int) and slots < self.sweep.parallel:
                self.say(f"parallel = {self.sweep.parallel}, but the runner trains {slots} session(s) at once: "
                         f"the other trials wait in the queue (`tuneterm daemon start --slots "
                         f"{self.sweep.parallel}`, or [runner] slots)")
        study, sweep, ws = self.study, self.sweep, self.ws
        trial = study.ask(_distributions(sweep))
        session = trial_session(sweep, dict(trial.params), trial.number)
        path = self.folder / f"{sweep.trial_name(trial.number)}.toml"
        checked, problems = check_session_text(dumps_session(session), str(path), ws)
        if problems:  # a sampled combination the session rules refuse (e.g. no steps after warmup)
            trial.set_user_attr("error", str(problems[0]))
            study.tell(trial, state=TrialState.FAIL)
            self.say(f"trial {trial.number}: failed before training: {problems[0].field}: {problems[0].message}")
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        save_session(session, path)
        trial.set_user_attr("session_file", str(path.relative_to(ws)))
        view = self.runner.call(lambda c: c.add(path, check=False))
        trial.set_user_attr("run_id", view["run_id"])
        self.say(f"trial {trial.number}: queued {view['run_id']}  {_params(trial.params)}")
        self._fly(trial, view)
        return True

    def reattach(self, ft) -> None:
        """A trial left RUNNING: follow its session if the queue still has it, else fail it."""
        from optuna.trial import Trial, TrialState

        name = self.sweep.trial_name(ft.number)
        run_id = ft.user_attrs.get("run_id")
        since = ft.datetime_start.timestamp() - 5 if ft.datetime_start else 0
        views = self.runner.call(lambda c: c.list_sessions())
        match = [v for v in views if (v["run_id"] == run_id if run_id else
                                      v["name"] == name and (v.get("created") or 0) >= since)]
        trial = Trial(self.study, ft._trial_id)
        if not match:
            trial.set_user_attr("lost", True)
            self.study.tell(trial, state=TrialState.FAIL)
            self.say(f"trial {ft.number}: was being asked when the last sweep stopped and never reached the "
                     "queue; marked failed (not counted)")
            return
        view = match[-1]
        if not run_id:
            trial.set_user_attr("run_id", view["run_id"])
        self.say(f"trial {ft.number}: resuming {view['run_id']} ({view['state']})")
        if view["state"] in ("paused", "cancelled", "interrupted"):
            # Paused by `daemon stop` or a person: the sweep needs it to finish.
            self.runner.call(lambda c: c.resume(view["id"]) if view["state"] == "paused" else c.retry(view["id"]))
        self._fly(trial, view)

    def next_event(self):
        """Wait for a follower's next message and act on it: report an evaluation (and
        stop the run when the pruner says so), or tell Optuna how an ended trial went
        (its TrialState is returned)."""
        kind, number, *rest = self.box.get()
        fl = self.flights.get(number)
        if fl is None:
            return None
        if kind == "error":
            raise rest[0]
        if kind == "eval":
            self._report(fl, *rest)
            return None
        del self.flights[number]
        return self._tell(fl, rest[0])

    def _report(self, fl: _Flight, step: int, value: float) -> None:
        if step in fl.reported:
            return
        fl.trial.report(value, step)
        fl.reported.add(step)
        if fl.stopped_at is None and fl.trial.should_prune():
            fl.stopped_at = step
            ans = self.runner.call(lambda c: c.control(fl.view["id"], {"type": "stop"}))
            self.say(f"trial {fl.trial.number}: pruned at step {step} ({self.sweep.objective} {value:.4f})"
                     + ("" if ans.get("type") == "ack" else f" (stop: {ans.get('reason')})"))

    def _tell(self, fl: _Flight, final: dict):
        from optuna.trial import TrialState

        study, trial, metric = self.study, fl.trial, self.sweep.objective
        values = _eval_values(Path(final["run_dir"]), metric)
        for step, v in values:  # rows the stream may have missed (history covers them; belt and braces)
            if step not in fl.reported:
                trial.report(v, step)
                fl.reported.add(step)
        if fl.stopped_at is not None or (final["state"] == "done" and final.get("result") == "stopped"):
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        if final["state"] == "done" and values:
            best = (min if self.sweep.direction == "minimize" else max)(v for _, v in values)
            trial.set_user_attr("final", values[-1][1])
            study.tell(trial, best)
            self.say(f"trial {trial.number}: complete  {metric} {best:.4f} (best of {len(values)} evaluations)")
            return TrialState.COMPLETE
        why = final.get("error") or (f"ended {final['state']}" + ("" if values else f" without a {metric} row"))
        trial.set_user_attr("error", str(why)[:500])
        study.tell(trial, state=TrialState.FAIL)
        self.say(f"trial {trial.number}: failed: {why}")
        return TrialState.FAIL

    def close(self) -> None:
        """Stop following (the trials keep training in the queue; a re-run re-attaches)."""
        for fl in self.flights.values():
            fl.follower.stop()


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
