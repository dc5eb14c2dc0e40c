"""The session state machine (tuneterm/runner/transitions.py), walked over its whole table:
every request in every state, every kind of worker exit under every want, recovery."""

from __future__ import annotations

import itertools
import signal

import pytest

from tuneterm.errors import UserError
from tuneterm.runner import transitions as tr
from tuneterm.runner.store import STATES

VERBS = ("pause", "resume", "cancel", "retry")

# (verb, state, supervised) -> new state, "same" (no change), "stop" (the worker is asked to
# stop; the state changes when it exits) or "refused".
REQUESTS = {
    ("pause", "queued", False): "paused", ("pause", "interrupted", False): "paused",
    ("pause", "paused", False): "same", ("pause", "running", False): "stop",
    ("resume", "paused", False): "queued", ("resume", "interrupted", False): "queued",
    ("resume", "queued", False): "same", ("resume", "running", False): "same",
    ("cancel", "queued", False): "cancelled", ("cancel", "paused", False): "cancelled",
    ("cancel", "interrupted", False): "cancelled", ("cancel", "cancelled", False): "same",
    ("cancel", "running", False): "stop",
    ("retry", "failed", False): "queued", ("retry", "cancelled", False): "queued",
    ("retry", "interrupted", False): "queued",
}


def _kind(out: tr.Outcome, state: str) -> str:
    if out.action == "stop":
        return "stop"
    return out.state or "same"


@pytest.mark.parametrize("verb,state,supervised", list(itertools.product(VERBS, STATES, (False, True))))
def test_every_request_in_every_state(verb, state, supervised):
    if supervised and verb in ("pause", "cancel"):
        expected = "stop"  # a worker is running or starting: it is asked to stop, whatever the row says
    else:
        expected = REQUESTS.get((verb, state, False), "refused")
    try:
        got = _kind(tr.on_request(verb, state, None, supervised), state)
    except UserError:
        got = "refused"
    assert got == expected


def test_resume_of_a_pausing_session_is_refused_and_resume_clears_the_crash_count():
    with pytest.raises(UserError, match="pausing"):
        tr.on_request("resume", "running", "pause", True)
    out = tr.on_request("resume", "paused", tr.STOPPED_BY_DAEMON, False)
    assert out.fields(5.0) == {"state": "queued", "want": None, "error": None, "crashes": 0}
    assert tr.on_request("cancel", "queued", None, False).fields(5.0)["finished"] == 5.0
    assert tr.on_request("retry", "failed", None, False).fields(1.0)["result"] is None


KILL = -int(signal.SIGKILL)
# (code, want, end state) -> (state, action); crashes 0 before, max_crashes 3, no progress.
EXITS = [
    (0, None, "done", "done", ""), (0, None, "early_stopped", "done", ""), (0, "pause", "stopped", "done", ""),
    (75, None, "paused", "paused", ""), (75, "pause", "paused", "paused", ""),
    (75, "cancel", "paused", "cancelled", ""), (75, "shutdown", "paused", "paused", ""),
    (75, "bounce", "paused", None, "restart"), (75, "wall", "paused", "failed", ""),
    (KILL, "pause", None, "paused", ""), (KILL, "cancel", None, "cancelled", ""),
    (KILL, "shutdown", None, "paused", ""), (KILL, "wall", None, "failed", ""),
    (KILL, "hung", None, "interrupted", "backoff"), (KILL, None, None, "interrupted", "backoff"),
    (KILL, "bounce", None, "interrupted", "backoff"),
    (73, None, None, "interrupted", "find_holder"), (1, None, "failed", "failed", ""),
    (2, None, None, "failed", ""), (1, "pause", "failed", "failed", ""),
    (3, None, None, "interrupted", "backoff"), (3, "cancel", None, "cancelled", ""),
    (None, None, "done", "done", ""), (None, None, "paused", "paused", ""), (None, None, "failed", "failed", ""),
    (None, None, None, "interrupted", "backoff"), (None, "cancel", None, "cancelled", ""),
]


@pytest.mark.parametrize("code,want,end,state,action", EXITS)
def test_every_kind_of_worker_exit(code, want, end, state, action):
    out = tr.on_exit(code=code, want=want, end_state=end, reason="boom", crashes=0, max_crashes=3)
    assert (out.state, out.action) == (state, action)
    if state in ("done", "failed", "cancelled"):
        f = out.fields(7.0)
        assert f["finished"] == 7.0 and f["pid"] is None and f["want"] is None
    if state == "done":
        assert out.result == (end or "done") and out.crashes == 0


def test_exit_messages_say_what_happened():
    assert tr.on_exit(code=1, want=None, end_state="failed", reason="nan loss").error == "training failed: nan loss"
    assert tr.on_exit(code=2, want=None, end_state=None).error == "bad session or run directory"
    stop = tr.on_exit(code=75, want="shutdown", end_state="paused")
    assert stop.want == tr.STOPPED_BY_DAEMON and "daemon stop" in stop.error and "killed" not in stop.error
    forced = tr.on_exit(code=KILL, want="shutdown", end_state=None)
    assert "did not stop in time: killed by SIGKILL" in forced.error and forced.want == tr.STOPPED_BY_DAEMON
    wall = tr.on_exit(code=75, want="wall", end_state="paused", detail="wall-clock limit reached (x)")
    assert wall.error.startswith("wall-clock limit reached (x)") and "queue retry" in wall.error
    hung = tr.on_exit(code=KILL, want="hung", end_state=None, detail="no heartbeat for 3s")
    assert hung.crashes == 1 and "no heartbeat for 3s" in hung.error
    assert "killed by SIGSEGV" in tr.on_exit(code=-int(signal.SIGSEGV), want=None, end_state=None).error


def test_crashes_in_a_row_fail_the_session_and_progress_resets_the_count():
    two = tr.on_exit(code=KILL, want=None, end_state=None, crashes=1, max_crashes=3)
    assert (two.state, two.crashes, two.backoff_s) == ("interrupted", 2, 0.5)
    third = tr.on_exit(code=KILL, want=None, end_state=None, crashes=2, max_crashes=3)
    assert third.state == "failed" and third.crashes == 3 and "crashed 3 times in a row" in third.error
    progressed = tr.on_exit(code=KILL, want=None, end_state=None, crashes=2, max_crashes=3, progress=True)
    assert (progressed.state, progressed.crashes) == ("interrupted", 1)
    hung = tr.on_exit(code=KILL, want="hung", end_state=None, crashes=2, max_crashes=3, progress=True)
    assert hung.state == "failed"  # a hang counts even after progress: it may hang again


@pytest.mark.parametrize("want,end,state", [
    (None, "done", "done"), (None, "early_stopped", "done"), (None, "stopped", "done"),
    (None, "failed", "failed"), ("pause", "failed", "failed"), ("cancel", None, "cancelled"),
    ("cancel", "paused", "cancelled"), ("pause", "paused", "paused"), (None, "paused", "interrupted"),
    (None, None, "interrupted"), ("pause", None, "interrupted"),
])
def test_recovery_of_a_row_whose_worker_ended_while_no_daemon_ran(want, end, state):
    out = tr.on_recover(want, end, "why")
    assert out.state == state
    assert out.fields(1.0)["pid"] is None


def test_code_from_end_matches_the_worker_exit_codes():
    assert [tr.code_from_end(s) for s in ("done", "early_stopped", "stopped", "paused", "failed", None)] == \
        [tr.EXIT_OK] * 3 + [tr.EXIT_PAUSED, tr.EXIT_FAILED, None]
