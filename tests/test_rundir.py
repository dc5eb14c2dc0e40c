"""tuneterm.rundir: the one owner of the run directory's facts."""

from __future__ import annotations

import json
import os

import pytest

from tuneterm import rundir
from tuneterm.rundir import SessionState


def test_a_torn_last_line_is_not_a_row(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"kind":"train","step":1}\n\n[1,2]\nnot json\n{"kind":"train","step":2}\n{"kind":"tr')
    assert [r["step"] for r in rundir.read_jsonl(p)] == [1, 2]
    # even when the torn tail happens to be valid JSON (a writer cut right after a brace)
    p.write_bytes(b'{"step":1}\n{"step":2}')
    assert rundir.read_jsonl(p) == [{"step": 1}]
    assert rundir.read_jsonl(tmp_path / "missing.jsonl") == []


def test_tail_follows_complete_lines_and_notices_a_rewrite(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_bytes(b'{"step":1}\n{"ste')
    t = rundir.JsonlTail(p)
    assert t.read_new() == (False, b'{"step":1}\n')
    with open(p, "ab") as fh:
        fh.write(b'p":2}\n')
    assert t.read_new() == (False, b'{"step":2}\n')
    tmp = tmp_path / "x"
    tmp.write_bytes(b'{"step":1}\n')
    os.replace(tmp, p)  # a resumed attempt truncates after its checkpoint
    assert t.read_new() == (True, b'{"step":1}\n')


def test_a_limited_tail_reads_only_the_newest_lines_of_a_long_file(tmp_path):
    # the TUI's Log tab follows log.txt with the same tail as the runner follows metrics
    p = tmp_path / "log.txt"
    p.write_bytes(b"".join(b"line %03d\n" % i for i in range(100)))  # 9 bytes a line
    t = rundir.JsonlTail(p, limit=40)
    assert t.read_new() == (False, b"line 096\nline 097\nline 098\nline 099\n")  # the cut line 095 dropped
    with open(p, "ab") as fh:
        fh.write(b"line 100\nline 1")
    assert t.read_new() == (False, b"line 100\n")
    p.write_bytes(b"new\n")  # shorter: rewritten, read from the start
    assert t.read_new() == (True, b"new\n")


def test_end_event_is_the_last_row_only(tmp_path):
    rd = tmp_path
    (rd / "events.jsonl").write_text(json.dumps({"kind": "end", "state": "paused", "step": 3}) + "\n")
    assert rundir.last_end_event(rd)["state"] == "paused"
    with open(rd / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"kind": "start", "step": 3}) + "\n")
    assert rundir.last_end_event(rd) is None
    assert rundir.exit_code_for_end("early_stopped") == 0 and rundir.exit_code_for_end("paused") == 75
    assert rundir.exit_code_for_end(None) is None


def test_checkpoint_listing_counts_only_complete_step_folders(tmp_path):
    ck = tmp_path / "checkpoints"
    for s in (4, 12, 8):
        (ck / rundir.checkpoint_name(s)).mkdir(parents=True)
        (ck / rundir.checkpoint_name(s) / "state.json").write_text("{}")
    (ck / "step-00000016").mkdir()  # no state.json: incomplete
    (ck / ".tmp-step-00000020-1").mkdir()
    (ck / "step-abc").mkdir()
    assert rundir.checkpoint_steps(ck) == [4, 8, 12]
    assert rundir.latest_checkpoint_step(tmp_path) == 12
    assert rundir.latest_checkpoint_step(tmp_path / "nowhere") is None


def test_session_states_say_what_they_mean():
    assert set(rundir.FINISHED_STATES) == {"done", "failed", "cancelled"}
    assert not SessionState.INTERRUPTED.finished and SessionState.INTERRUPTED.resumable
    assert SessionState.PAUSED.resumable and not SessionState.DONE.resumable
    assert rundir.is_finished("done") and not rundir.is_finished("interrupted") and not rundir.is_finished("bogus")
    assert [int(c) for c in rundir.ExitCode] == [0, 1, 2, 70, 73, 75]


def train(step, loss, **kw):
    return {"kind": "train", "step": step, "loss": loss, "time": float(step), **kw}


def test_one_comparison_rule():
    a = [train(1, 0.5), train(2, 0.4), {"kind": "eval", "step": 2, "val_loss": 0.3, "time": 2.5}]
    assert rundir.compare_metrics(a, [dict(r, time=99.0, samples_per_s=1.0) for r in a]).match
    # a resumed attempt rewrote step 2: the newest row of a (step, kind) counts
    assert rundir.compare_metrics(a, a[:2] + [train(2, 0.4)] + a[2:]).match
    cmp = rundir.compare_metrics(a, [train(1, 0.5), train(2, 0.41), a[2]])
    assert not cmp.match and cmp.step == 2 and cmp.detail.startswith("step 2 (train): loss differs")
    short = rundir.compare_metrics(a, a[:2])
    assert not short.match and "only the original" in short.detail and short.step == 2
    assert not rundir.compare_metrics(a, []).match


def test_write_atomic_leaves_the_old_file_on_error(tmp_path, monkeypatch):
    p = tmp_path / "session.toml"
    rundir.write_atomic(p, "a = 1\n")
    assert p.read_text() == "a = 1\n"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        rundir.write_atomic(p, "a = 2\n")
    assert p.read_text() == "a = 1\n" and [x.name for x in tmp_path.iterdir()] == ["session.toml"]


def test_a_refusal_is_appended_only_to_an_attempt_in_progress(tmp_path):
    rd = tmp_path / "r"
    rd.mkdir()
    (rd / rundir.SESSION).write_text("[session]\nname = 'r'\n")
    req = {"type": "set", "id": "a", "values": {"learning_rate": 0.0}}
    # queued, never started: its events.jsonl stays absent (a rebuilt queue reads that as "never ran")
    assert not rundir.append_rejection(rd, req, "no", "daemon") and not (rd / rundir.EVENTS).exists()
    (rd / rundir.EVENTS).write_text(json.dumps({"kind": "start", "step": 0}) + "\n")
    (rd / rundir.METRICS).write_text(json.dumps({"kind": "train", "step": 7, "loss": 1.0}) + "\n")
    assert rundir.append_rejection(rd, req, "session r is stopping (pause)", "daemon")
    last = rundir.read_jsonl(rd / rundir.EVENTS)[-1]
    assert {k: last[k] for k in ("kind", "step", "source", "request", "reason")} == {
        "kind": "reject", "step": 7, "source": "daemon", "request": req, "reason": "session r is stopping (pause)"}
    with open(rd / rundir.EVENTS, "a") as fh:  # the attempt ends: its end row stays last
        fh.write(json.dumps({"kind": "end", "step": 7, "state": "paused"}) + "\n")
    assert not rundir.append_rejection(rd, req, "no", "cli")
    assert rundir.read_jsonl(rd / rundir.EVENTS)[-1]["kind"] == "end"
