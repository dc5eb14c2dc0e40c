"""The [callback] command at each session's end: the right variables, once per end; a
failing or hanging callback is logged and bounded, and the queue goes on."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "runner"))

from runner_helpers import Harness, wait_for  # noqa: E402

from tuneterm.runner import callback  # noqa: E402

VARS = ("TUNETERM_RUN_ID", "TUNETERM_NAME", "TUNETERM_STATE", "TUNETERM_RESULT", "TUNETERM_STEPS",
        "TUNETERM_BEST_METRIC", "TUNETERM_BEST_VALUE", "TUNETERM_ERROR", "TUNETERM_RUN_DIR")


def recorder(tmp: Path) -> Path:
    """A script that appends its TUNETERM_* variables, as one JSON line, to ``tmp/calls.jsonl``."""
    script = tmp / "record.py"
    script.write_text("import json, os\n"
                      f"with open({str(tmp / 'calls.jsonl')!r}, 'a') as f:\n"
                      "    f.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith('TUNETERM_')"
                      " and k not in ('TUNETERM_HOME', 'TUNETERM_RUNTIME_DIR')}) + '\\n')\n")
    return script


def configure(ws: Path, body: str, runner: str = "") -> None:
    (ws / ".tuneterm").mkdir(parents=True, exist_ok=True)
    (ws / ".tuneterm" / "config.toml").write_text(runner + "\n[callback]\n" + body)


def fake_run(ws: Path, name: str = "r1") -> Path:
    rd = ws / "runs" / name
    rd.mkdir(parents=True)
    (rd / "session.toml").write_text(f'[session]\nname = "{name}"\n')
    (rd / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 7, "loss": 0.5}) + "\n" +
                                      json.dumps({"kind": "eval", "step": 7, "val_loss": 0.25}) + "\n")
    (rd / "events.jsonl").write_text(json.dumps({"kind": "end", "step": 7, "state": "done", "time": 1.0}) + "\n")
    return rd


def test_the_callback_gets_the_run_variables(workspace, tmp_path):
    configure(workspace, f'command = "{sys.executable} {recorder(tmp_path)}"\n')
    rd = fake_run(workspace)

    async def go():
        callback.fire(workspace, {"run_id": "r1", "name": "r1", "state": "done", "result": "done"}, rd)
        await callback.drain(30)

    asyncio.run(go())
    (call,) = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert set(call) == set(VARS)
    assert call["TUNETERM_RUN_ID"] == "r1" and call["TUNETERM_STATE"] == "done" and call["TUNETERM_STEPS"] == "7"
    assert call["TUNETERM_BEST_METRIC"] == "val_loss" and float(call["TUNETERM_BEST_VALUE"]) == 0.25
    assert call["TUNETERM_RUN_DIR"] == str(rd)


def test_a_hanging_callback_is_killed_and_a_failing_one_logged(workspace, tmp_path, caplog):
    cfg = callback.CallbackConfig("sleep 30 & sleep 30", timeout_s=0.5)
    log = workspace / ".tuneterm" / "callback.log"
    t0 = time.monotonic()
    assert asyncio.run(callback.run_callback(cfg, {"TUNETERM_NAME": "n"}, log)) is None
    assert time.monotonic() - t0 < 10
    assert "killed after 0.5s" in log.read_text()
    code = asyncio.run(callback.run_callback(callback.CallbackConfig("echo oops; exit 3"), {"TUNETERM_NAME": "n"}, log))
    assert code == 3 and "oops" in log.read_text()
    assert any("exit status 3" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("body, needle", [
    ("command = ''\n", "non-empty string"),
    ("command = 'true'\ntimeout_s = -1\n", "timeout_s"),
    ("command = 'true'\nstates = ['paused']\n", "states"),
    ("command = 'true'\nwhen = 'always'\n", "unknown [callback] keys when"),
])
def test_a_broken_callback_table_is_logged_and_ignored(workspace, body, needle, caplog):
    configure(workspace, body)
    assert callback.load_config(workspace) is None
    assert any(needle in r.getMessage() for r in caplog.records)


@pytest.fixture
def runner(workspace, monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="tt-", dir="/tmp"))
    monkeypatch.setenv("TUNETERM_RUNTIME_DIR", str(base / "r"))
    h = Harness(workspace)
    yield h
    h.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def test_once_per_session_end_through_the_daemon(runner, tmp_path):
    """Three sessions: one done, one failed, one hanging callback — every end reported once,
    and the hanging callback holds up nothing."""
    runner.use_fake_worker()
    cfg = (runner.ws / ".tuneterm" / "config.toml").read_text()
    configure(runner.ws, f'command = "{sys.executable} {recorder(tmp_path)}; sleep 60"\ntimeout_s = 3\n',
              runner=cfg)
    c = runner.client()
    ok = c.add(runner.session("ok", steps=6, fake=True), check=False)
    bad = c.add(runner.session("bad", steps=20, fake=True, extra="fail_at = 3\n"), check=False)
    wait_for(lambda: all(c.get(s["id"])["state"] in ("done", "failed") for s in (ok, bad)), 60, "both ends")
    assert c.get(ok["id"])["state"] == "done" and c.get(bad["id"])["state"] == "failed"
    calls_file = tmp_path / "calls.jsonl"
    wait_for(lambda: calls_file.exists() and len(calls_file.read_text().splitlines()) == 2, 30, "two callbacks")
    time.sleep(1.0)  # no third call turns up
    calls = {x["TUNETERM_NAME"]: x for x in map(json.loads, calls_file.read_text().splitlines())}
    assert set(calls) == {"ok", "bad"}
    assert calls["ok"]["TUNETERM_STATE"] == "done" and calls["ok"]["TUNETERM_STEPS"] == "6"
    assert calls["bad"]["TUNETERM_STATE"] == "failed" and "non-finite loss" in calls["bad"]["TUNETERM_ERROR"]
    assert calls["ok"]["TUNETERM_RUN_ID"] == c.get(ok["id"])["run_id"]
    # the shell (recorder; sleep 60) outlives the timeout: both are killed, and logged
    wait_for(lambda: (runner.ws / ".tuneterm" / "callback.log").read_text().count("killed after 3.0s") == 2, 30,
             "the hanging callbacks killed")
    assert c.list_sessions()  # the daemon still answers


@pytest.mark.parametrize("row, end, result", [
    ({"state": "cancelled"}, "paused", "cancelled"),  # a cancel pauses the worker at a checkpoint
    ({"state": "failed", "error": "wall-clock limit reached"}, "paused", "failed"),
    ({"state": "failed", "error": "the worker crashed 3 times"}, None, "failed"),
    ({"state": "done", "result": "early_stopped"}, "early_stopped", "early_stopped"),
    ({"state": "done"}, "done", "done"),
])
def test_the_result_says_what_happened(workspace, row, end, result):
    rd = fake_run(workspace)
    (rd / "events.jsonl").write_text(json.dumps({"kind": "end", "step": 7, "state": end}) + "\n" if end else "")
    env = callback.environment({"run_id": "r1", "name": "r1", **row}, rd)
    assert env["TUNETERM_RESULT"] == result and result in callback.RESULTS


def test_the_docs_list_every_state_and_result():
    doc = (Path(__file__).parents[2] / "docs" / "results.md").read_text()
    table = {ln.split("|")[1].strip(" `"): ln for ln in doc.splitlines() if ln.startswith("| `TUNETERM_")}
    assert all(f"`{v}`" in table["TUNETERM_STATE"] for v in callback.END_STATES)
    assert all(f"`{v}`" in table["TUNETERM_RESULT"] for v in callback.RESULTS)


def test_the_output_of_a_callback_is_capped(workspace):
    log = workspace / ".tuneterm" / "callback.log"
    cfg = callback.CallbackConfig(f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 5_000_000)\"; echo ok")
    assert asyncio.run(callback.run_callback(cfg, {"TUNETERM_NAME": "n"}, log)) == 0
    text = log.read_text()
    assert len(text) < callback.OUTPUT_CAP + 1000 and "output cut" in text
    # a log grown past its cap is set aside (one old file), so many sessions stay bounded too
    log.write_bytes(b"y" * (callback.LOG_CAP + 1))
    asyncio.run(callback.run_callback(callback.CallbackConfig("echo fresh"), {"TUNETERM_NAME": "n"}, log))
    assert "fresh" in log.read_text() and log.stat().st_size < 1000
    assert log.with_name("callback.log.1").stat().st_size == callback.LOG_CAP + 1


def test_a_running_callback_dies_with_the_daemon(runner, tmp_path):
    """`daemon stop` while a callback runs (its timeout far away): the callback's process
    group is killed, nothing of it outlives the daemon, and callback.log says so."""
    import os
    import signal

    from runner_helpers import alive

    runner.use_fake_worker()
    cfg = (runner.ws / ".tuneterm" / "config.toml").read_text()
    pids = tmp_path / "pids"
    configure(runner.ws, f"command = \"sleep 600 & echo $$ $! > {pids}; wait\"\ntimeout_s = 900\n", runner=cfg)
    c = runner.client()
    s = c.add(runner.session("ok", steps=3, fake=True), check=False)
    wait_for(lambda: c.get(s["id"])["state"] == "done", 60, "the session's end")
    group, sleeper = map(int, wait_for(lambda: pids.exists() and pids.read_text().split(), 30, "the callback"))
    try:
        assert alive(sleeper)
        daemon = runner.daemon_pid()
        c.shutdown()
        wait_for(lambda: not alive(daemon), 30, "the daemon to exit")
        wait_for(lambda: not alive(sleeper), 10, "the callback to die with the daemon")
        assert "killed: the daemon stopped" in (runner.ws / ".tuneterm" / "callback.log").read_text()
    finally:
        try:
            os.killpg(group, signal.SIGKILL)  # a failed run of this test leaves nothing behind
        except ProcessLookupError:
            pass
