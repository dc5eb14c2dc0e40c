"""The session state machine as pure functions (no I/O, no clock, no torch).

Three kinds of transition, each a table (tests/runner/test_transitions.py walks them whole):

- ``on_request``: a person asks to pause, resume, cancel or retry a session;
- ``on_exit``: the worker of a running session exited (``code`` is its exit status, negative
  for a signal, None when unknowable: a re-adopted worker that is not our child), the run
  directory's end event says how the run itself ended, and ``want`` is what the daemon
  asked of it (pause, cancel, shutdown, bounce, wall, hung);
- ``on_recover``: a starting daemon finds a row ``running`` whose worker is gone.

The caller applies the returned ``Outcome`` to the store (``Outcome.fields``) and does the
side effect it names (``action``): stop the worker, start another one, look for the worker
that holds the run lock, or wait before the next try.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from tuneterm.errors import UserError
from tuneterm.rundir import EXIT_BAD_INPUT as EXIT_BAD  # the worker exit codes are the run directory's
from tuneterm.rundir import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_PAUSED, exit_code_for_end
from tuneterm.states import RunEnd, Want
from tuneterm.states import SessionState as S

STOPPING = tuple(w for w in Want if w.stopping)  # wants that end a worker (a tuple: the column holds str)
# The mark on a session paused by `daemon stop`: `daemon start` resumes exactly these.
STOPPED_BY_DAEMON = Want.RESTART

_KEEP = object()


@dataclass(frozen=True)
class Outcome:
    state: S | None = None           # the new state; None: unchanged
    want: object = _KEEP             # the new `want` column; _KEEP: unchanged
    error: object = _KEEP
    result: object = _KEEP
    crashes: int | None = None
    finished: bool = False           # stamp the finish time
    clear_pid: bool = False
    action: str = ""                 # "" | stop | restart | find_holder | backoff
    backoff_s: float = 0.0

    def fields(self, now: float) -> dict:
        out: dict = {}
        if self.state is not None:
            out["state"] = self.state
        for k in ("want", "error", "result"):
            v = getattr(self, k)
            if v is not _KEEP:
                out[k] = v
        if self.crashes is not None:
            out["crashes"] = self.crashes
        if self.finished:
            out["finished"] = now
        if self.clear_pid:
            out["pid"] = None
        return out


def signame(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


# -- requests -----------------------------------------------------------------------------------


def on_request(verb: str, state: str, want: str | None, supervised: bool) -> Outcome:
    """What ``verb`` does to a session in ``state``; ``supervised``: the daemon has (or is
    starting) a worker for it. Raises UserError for what a person may not do."""
    if verb == "pause":
        if supervised or state == S.RUNNING:
            return Outcome(want=Want.PAUSE, action="stop")
        if state in (S.QUEUED, S.INTERRUPTED):
            return Outcome(state=S.PAUSED)
        if state == S.PAUSED:
            return Outcome()
        raise UserError(f"is {state}; only queued or running sessions pause")
    if verb == "resume":
        if state in (S.PAUSED, S.INTERRUPTED):
            return Outcome(state=S.QUEUED, want=None, crashes=0, error=None)
        if state == S.RUNNING and want == Want.PAUSE:
            raise UserError("is pausing; resume it once it is paused")
        if state in (S.QUEUED, S.RUNNING):
            return Outcome()
        raise UserError(f"is {state}; use `queue retry` to run it again")
    if verb == "cancel":
        if supervised or state == S.RUNNING:
            return Outcome(want=Want.CANCEL, action="stop")
        if state in (S.QUEUED, S.PAUSED, S.INTERRUPTED):
            return Outcome(state=S.CANCELLED, want=None, finished=True)
        if state == S.CANCELLED:
            return Outcome()
        raise UserError(f"is already {state}")
    if verb == "retry":
        if state in (S.FAILED, S.CANCELLED, S.INTERRUPTED):
            return Outcome(state=S.QUEUED, want=None, crashes=0, error=None, result=None)
        raise UserError(f"is {state}; only failed, cancelled or interrupted sessions can be retried")
    raise UserError(f"unknown request {verb!r}")


# -- a worker exited ----------------------------------------------------------------------------


def code_from_end(end_state: str | None) -> int | None:
    """The exit code a worker that wrote this end event had (None: it wrote none)."""
    return exit_code_for_end(end_state)


def on_exit(*, code: int | None, want: str | None, end_state: str | None, reason: str | None = None,
            crashes: int = 0, max_crashes: int = 3, progress: bool = False, detail: str = "") -> Outcome:
    """The session's next state after its worker exited. ``progress``: the attempt wrote a
    checkpoint newer than the one it started from (a crash then does not count towards
    ``max_crashes`` in a row). ``detail``: what the daemon knows about a stop it forced
    (wall-clock limit, lost heartbeat)."""
    if code is None:  # an adopted worker: its end row is all there is
        code = code_from_end(end_state)
        if code is None:
            code = -signal.SIGKILL
    done = dict(want=None, clear_pid=True, finished=True)
    if code == EXIT_OK:
        return Outcome(state=S.DONE, result=end_state or RunEnd.DONE, crashes=0, **done)
    stopped = code == EXIT_PAUSED or (code < 0 and want in STOPPING)
    if want == Want.BOUNCE and code == EXIT_PAUSED:
        return Outcome(want=None, action="restart")
    if want == Want.HUNG:
        # Killed by the daemon for a lost heartbeat: a crash (it may hang again).
        return _crash(code, crashes + 1, max_crashes, detail or "no heartbeat")
    if stopped:
        forced = f" (did not stop in time: killed by {signame(code)})" if code < 0 else ""
        if want == Want.CANCEL:
            return Outcome(state=S.CANCELLED, **done)
        if want == Want.SHUTDOWN:
            return Outcome(state=S.PAUSED, want=STOPPED_BY_DAEMON, clear_pid=True, crashes=0,
                           error="stopped by `tuneterm daemon stop`" + forced +
                                 "; `queue resume` or `daemon start` continues it")
        if want == Want.WALL:
            return Outcome(state=S.FAILED, error=(detail or "wall-clock limit reached") + forced +
                           "; checkpointed: `queue retry` continues it", **done)
        return Outcome(state=S.PAUSED, want=None, clear_pid=True, crashes=0)
    if code == EXIT_LOCKED:
        # Another worker holds the run: one a dead daemon started whose pid was never
        # recorded. The caller follows it when it can find it, else waits and tries again.
        return Outcome(state=S.INTERRUPTED, clear_pid=True, action="find_holder", backoff_s=5.0,
                       error="another worker holds the run; retrying")
    if code in (EXIT_FAILED, EXIT_BAD):
        what = "training failed" if code == EXIT_FAILED else "bad session or run directory"
        return Outcome(state=S.FAILED, error=f"{what}: {reason}" if reason else what, **done)
    if want == Want.CANCEL:
        return Outcome(state=S.CANCELLED, **done)
    how = f"killed by {signame(code)}" if code < 0 else f"exit code {code}"
    return _crash(code, 1 if progress else crashes + 1, max_crashes, how)


def _crash(code: int, crashes: int, max_crashes: int, how: str) -> Outcome:
    if crashes >= max_crashes:
        return Outcome(state=S.FAILED, crashes=crashes, want=None, clear_pid=True, finished=True,
                       error=f"the worker crashed {crashes} times in a row (last: {how})")
    return Outcome(state=S.INTERRUPTED, crashes=crashes, want=None, clear_pid=True, action="backoff",
                   backoff_s=0.5, error=f"the worker crashed ({how}); resuming from the last checkpoint")


def on_recover(want: str | None, end_state: str | None, reason: str | None = None) -> Outcome:
    """A row ``running`` whose worker ended while no daemon ran."""
    done = dict(want=None, clear_pid=True, finished=True)
    end = RunEnd.of(end_state)
    if end is not None and end.completed:
        return Outcome(state=S.DONE, result=end_state, **done)
    if end is RunEnd.FAILED:
        return Outcome(state=S.FAILED, error=f"training failed: {reason or ''}".rstrip(": "), **done)
    if want == Want.CANCEL:
        return Outcome(state=S.CANCELLED, **done)
    if end is RunEnd.PAUSED and want == Want.PAUSE:
        return Outcome(state=S.PAUSED, want=None, clear_pid=True)
    return Outcome(state=S.INTERRUPTED, clear_pid=True,
                   error="the worker ended while no daemon ran; resuming from the last checkpoint")
