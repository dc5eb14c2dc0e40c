"""`tuneterm demo`, `tuneterm` (no verb) and `tuneterm web` wiring."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fake_client import FakeClient
from tui_helpers import aio, kill_processes_of, wait_until

from tuneterm.cli import main
from tuneterm.cli import tui_verbs
from tuneterm.tui.app import TuneTermApp, make_app


def test_prepare_demo_copies_the_examples_once(tmp_path):
    ws = tmp_path / "demo"
    files = tui_verbs.prepare_demo(ws)
    assert [f.name for f in files] == ["bbc-minilm.toml", "bbc-headlines-smollm2.toml", "tweets-minilm.toml", "smoke-tiny.toml"]
    assert all(f.is_file() for f in files) and (ws / "runs").is_dir()
    assert (ws / "sessions" / "bbc-headlines-smollm2-lora.toml").is_file()  # copied, not queued
    (ws / "sessions" / "bbc-minilm.toml").write_text("# mine\n")
    tui_verbs.prepare_demo(ws)
    assert (ws / "sessions" / "bbc-minilm.toml").read_text() == "# mine\n"  # never overwritten


def test_demo_queues_minilm_first_and_only_once(tmp_path, monkeypatch):
    fake = FakeClient(tmp_path / "x", sessions=[])
    seen = {}
    monkeypatch.setattr(tui_verbs, "_connect", lambda ws: fake)
    monkeypatch.setattr(tui_verbs, "_run_app", lambda ws, queue: seen.update(ws=ws, queue=queue) or 0)
    assert main(["demo", "--workspace", str(tmp_path / "d")]) == 0
    assert [p.name for p in seen["queue"]] == ["bbc-minilm.toml", "bbc-headlines-smollm2.toml", "tweets-minilm.toml", "smoke-tiny.toml"]
    fake.sessions.append({"id": 1})
    assert main(["demo", "--workspace", str(tmp_path / "d")]) == 0
    assert seen["queue"] == []  # reopening shows the runs; nothing is queued twice


@aio
async def test_queue_on_start_adds_in_order_without_blocking(tmp_path):
    fake = FakeClient(tmp_path / "ws")
    files = tui_verbs.prepare_demo(tmp_path / "ws")
    app = make_app(fake, poll_interval=0, queue_on_start=files)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(app.sessions) == 9, what="four more sessions")
        adds = [Path(c[1]).name for c in fake.calls if c[0] == "add"]
        assert adds == ["bbc-minilm.toml", "bbc-headlines-smollm2.toml", "tweets-minilm.toml", "smoke-tiny.toml"]


def test_no_verb_opens_the_app_on_the_workspace(workspace, monkeypatch):
    fake = FakeClient(workspace)
    ran = {}
    monkeypatch.setattr(tui_verbs, "_connect", lambda ws: fake)
    monkeypatch.setattr(TuneTermApp, "run", lambda self, **kw: ran.update(ws=self.workspace))
    assert main([]) == 0
    assert ran["ws"] == workspace and fake._closed.is_set()  # the client closes; runs go on


def test_web_without_textual_serve_is_a_one_line_error(workspace, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_serve(name, *a, **k):
        if name.startswith("textual_serve"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_serve)
    assert main(["web"]) == 2
    assert "textual-serve" in capsys.readouterr().err


@pytest.mark.slow
def test_newcomer_demo_opens_with_minilm_training(tmp_path, monkeypatch):
    """README's main command on a fresh workspace: the app opens and MiniLM on BBC News
    trains (first optimizer steps seen in the queue). Closing the app leaves it running."""
    pytest.importorskip("torch")
    base = Path(tempfile.mkdtemp(prefix="tt-demo-", dir="/tmp"))
    monkeypatch.setenv("TUNETERM_RUNTIME_DIR", str(base / "r"))
    ws = tmp_path / "demo-workspace"
    seen: dict = {}
    original_run = TuneTermApp.run

    async def auto_pilot(pilot):
        app = pilot.app
        await wait_until(pilot, lambda: app.sessions and app.sessions[0].get("state") == "running"
                         and (app.sessions[0].get("step") or 0) > 0, timeout=240, what="MiniLM training")
        seen["sessions"] = list(app.sessions)
        app.exit()

    monkeypatch.setattr(TuneTermApp, "run",
                        lambda self, **kw: original_run(self, headless=True, size=(80, 24), auto_pilot=auto_pilot))
    try:
        assert main(["demo", "--workspace", str(ws)]) == 0
        names = [s["name"] for s in seen["sessions"]]
        assert names[0] == "bbc-minilm" and set(names) == {"bbc-minilm", "bbc-headlines-smollm2", "tweets-minilm", "smoke-tiny"}
        from tuneterm.runner.client import RunnerClient

        with RunnerClient.connect(ws, start=False) as c:  # the app is gone; the run is not
            assert c.get(seen["sessions"][0]["id"])["state"] == "running"
    finally:
        kill_processes_of(ws)
