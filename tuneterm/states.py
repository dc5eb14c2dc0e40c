"""The two kinds of state tuneterm speaks of, one enum each (no torch, no textual).

- ``SessionState``: where a session stands in the runner's queue (the queue's ``state``
  column, `queue ls`, the TUI's status column).
- ``RunEnd``: how one attempt of a run ended — the ``state`` of the ``end`` row that closes
  its events.jsonl, and what the worker's exit code follows from.

They are different facts: a session is ``done`` whether its run ended ``done``,
``early_stopped`` or ``stopped`` (the queue keeps which in its ``result`` column), and a run
that ended ``paused`` may belong to a paused, an interrupted or a cancelled session.
Everything that compares or stores a state spells it through these enums; their values are
what the queue database, the socket and the run directory hold.
"""

from __future__ import annotations

import enum

from tuneterm.errors import ExitCode


class _Named(str, enum.Enum):
    """A string enum whose members print as their value (``f"{s}"`` is ``done``, as in
    the database and on the socket)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, value: object):
        """The member named by ``value``; None for anything else."""
        try:
            return cls(value)
        except ValueError:
            return None


class SessionState(_Named):
    """A queued session's state (the runner's queue column). ``finished`` means the runner
    will never start a worker for it again on its own; ``resumable`` that its run directory
    continues from its newest checkpoint when it runs again."""

    QUEUED = "queued"            # waiting for a slot (fresh, or resumed and waiting)
    RUNNING = "running"          # a worker trains it now
    PAUSED = "paused"            # stopped on request at a checkpoint; `resume` continues it
    INTERRUPTED = "interrupted"  # the daemon or its worker went away mid-run; resumes by itself
    DONE = "done"                # trained to its end (done, early-stopped or stopped)
    FAILED = "failed"            # ended with an error; `retry` runs it again
    CANCELLED = "cancelled"      # cancelled by the user; `retry` runs it again

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def resumable(self) -> bool:
        return self in (SessionState.PAUSED, SessionState.INTERRUPTED)

    @property
    def waiting(self) -> bool:
        """The scheduler may start a worker for it (an interrupted one resumes by itself)."""
        return self in (SessionState.QUEUED, SessionState.INTERRUPTED)

    @property
    def active(self) -> bool:
        return not self.finished


_FINISHED = frozenset({SessionState.DONE, SessionState.FAILED, SessionState.CANCELLED})
STATES = tuple(s.value for s in SessionState)
FINISHED_STATES = tuple(s.value for s in SessionState if s.finished)
ACTIVE_STATES = tuple(s.value for s in SessionState if s.active)
WAITING_STATES = tuple(s.value for s in SessionState if s.waiting)


def is_finished(state: object) -> bool:
    """True only for a state the runner never leaves on its own (done, failed, cancelled)."""
    s = SessionState.of(state)
    return s is not None and s.finished


class RunEnd(_Named):
    """How one attempt of a run ended: the ``state`` of its last events.jsonl row (``end``).
    ``completed``: the run trained to its end (its session is done)."""

    DONE = "done"                    # the plan's last step
    EARLY_STOPPED = "early_stopped"  # early stopping ended it
    STOPPED = "stopped"              # a `stop` message ended it
    PAUSED = "paused"                # checkpointed and exited on request (resumable)
    FAILED = "failed"                # a training error; the row says why

    @property
    def completed(self) -> bool:
        return self in (RunEnd.DONE, RunEnd.EARLY_STOPPED, RunEnd.STOPPED)

    @property
    def exit_code(self) -> ExitCode:
        """What the worker that wrote this end row exits with."""
        if self.completed:
            return ExitCode.OK
        return ExitCode.PAUSED if self is RunEnd.PAUSED else ExitCode.FAILED


class Want(_Named):
    """Why the daemon is ending (or bouncing) a running worker: the queue's ``want`` column,
    set when the request is taken and read when the worker exits, so that its exit code is
    read as what was asked (a SIGTERM'd worker asked to pause is paused, not crashed)."""

    PAUSE = "pause"        # `pause`: checkpoint and exit 75; the session is paused
    CANCEL = "cancel"      # `cancel`: the session is cancelled whatever the worker does
    BOUNCE = "bounce"      # a restart asked (new knobs that need one): pause, then queue again
    SHUTDOWN = "shutdown"  # the daemon is stopping: the session is interrupted, resumed later
    WALL = "wall"          # runtime.max_wall_s passed: failed, with the limit as the reason
    HUNG = "hung"          # no step and no heartbeat for too long: killed, a crash
    RESTART = "restart"    # the mark on a session paused by `daemon stop`: `daemon start` resumes it

    @property
    def stopping(self) -> bool:
        """It ends the worker (a bounce restarts it; a restart mark is on a paused session)."""
        return self not in (Want.BOUNCE, Want.RESTART)


RUN_ENDS = tuple(e.value for e in RunEnd)
COMPLETED_ENDS = tuple(e.value for e in RunEnd if e.completed)


def exit_code_for_end(state: str | None) -> int | None:
    """The exit code a worker whose last end event says ``state`` exited with (None: no
    end event, the attempt died)."""
    end = RunEnd.of(state)
    return None if end is None else int(end.exit_code)
