"""The sweep driver: asks the study for trials, keeps up to ``[sweep] parallel`` of them
in flight through an injected trial runner (``trials.QueueTrials`` by default), reports
their evaluations to Optuna, prunes, tells, and re-attaches to the trials an earlier driver
left running. Optuna is only called from the driver's thread; one driver per sweep (a
lock file)."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneterm.errors import UserError
from tuneterm.states import RunEnd, SessionState
from tuneterm.sweep.report import eval_values, finish, format_params
from tuneterm.sweep.spec import Sweep
from tuneterm.sweep.trial import trial_session
from tuneterm.sweep.study import _counted, _distributions, _optuna, create_or_resume
from tuneterm.sweep.trials import QueueTrials

_CONSECUTIVE_FAILURES = 5   # a sweep whose trials all fail stops after this many in a row


@dataclass
class _Flight:
    """A trial whose session is in the queue: what the driver knows of it."""

    trial: Any                     # optuna.Trial
    view: dict                     # its session, as the runner showed it when queued
    follower: Any                  # what the trial runner follows it with (has .stop())
    reported: set[int] = field(default_factory=set)  # steps told to Optuna
    stopped_at: int | None = None  # the step the pruner stopped it at


def run_sweep(sweep: Sweep, workspace: Path, say: Callable[[str], None] = print,
              trials: QueueTrials | None = None) -> dict:
    """Run the sweep to its end (or resume it): the summary. ``trials``: the trial runner
    (default: the workspace's runner queue)."""
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
    trials = trials or QueueTrials(ws)
    drive = _Driver(study, sweep, ws, trials, say)
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
        trials.close()
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

    def __init__(self, study, sweep: Sweep, ws: Path, trials: QueueTrials, say):
        self.study, self.sweep, self.ws, self.trials, self.say = study, sweep, ws, trials, say
        self.box: queue.Queue = queue.Queue()
        self.flights: dict[int, _Flight] = {}
        self.folder = ws / "sessions" / "sweeps" / sweep.name
        self.slots_checked = sweep.parallel == 1

    def _fly(self, trial, view: dict) -> None:
        done = set(self.study._storage.get_trial(trial._trial_id).intermediate_values)
        f = self.trials.follow(trial.number, view, self.sweep.objective, self.box)
        self.flights[trial.number] = _Flight(trial, view, f, done)

    def launch(self) -> bool:
        """Ask Optuna for a trial and queue its session; False when the session rules
        refuse the sampled combination (the trial is told FAIL)."""
        from optuna.trial import TrialState

        from tuneterm.session.io import check_session_text, dumps_session, save_session

        if not self.slots_checked:
            self.slots_checked = True
            slots = self.trials.slots()
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
        view = self.trials.queue(path)
        trial.set_user_attr("run_id", view["run_id"])
        self.say(f"trial {trial.number}: queued {view['run_id']}  {format_params(trial.params)}")
        self._fly(trial, view)
        return True

    def reattach(self, ft) -> None:
        """A trial left RUNNING: follow its session if the queue still has it, else fail it."""
        from optuna.trial import Trial, TrialState

        name = self.sweep.trial_name(ft.number)
        run_id = ft.user_attrs.get("run_id")
        since = ft.datetime_start.timestamp() - 5 if ft.datetime_start else 0
        views = self.trials.sessions()
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
        if view["state"] in (SessionState.PAUSED, SessionState.CANCELLED, SessionState.INTERRUPTED):
            # Paused by `daemon stop` or a person: the sweep needs it to finish.
            self.trials.keep_going(view)
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
            ans = self.trials.stop(fl.view)
            self.say(f"trial {fl.trial.number}: pruned at step {step} ({self.sweep.objective} {value:.4f})"
                     + ("" if ans.get("type") == "ack" else f" (stop: {ans.get('reason')})"))

    def _tell(self, fl: _Flight, final: dict):
        from optuna.trial import TrialState

        study, trial, metric = self.study, fl.trial, self.sweep.objective
        values = eval_values(Path(final["run_dir"]), metric)
        for step, v in values:  # rows the stream may have missed (history covers them; belt and braces)
            if step not in fl.reported:
                trial.report(v, step)
                fl.reported.add(step)
        # Pruned only if the stop took: a run whose last step came before the stop reached it
        # trained its whole budget and ended done, so it is a complete trial.
        done = final["state"] == SessionState.DONE
        stopped = done and final.get("result") == RunEnd.STOPPED
        ran_out = done and not stopped
        if stopped or (fl.stopped_at is not None and not ran_out):
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        if done and values:
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
