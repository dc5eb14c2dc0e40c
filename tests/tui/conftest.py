"""TUI test set-up: the fake client importable, no cursor blink, no clocks."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _no_blink(monkeypatch):
    # a blinking cursor makes two renders of the same screen differ
    from textual.widgets import Input

    monkeypatch.setattr(Input, "cursor_blink", False, raising=False)


@pytest.fixture
def fake(tmp_path):
    from fake_client import FakeClient

    ws = tmp_path / "ws"
    return FakeClient(ws)


@pytest.fixture
def real(workspace, monkeypatch):
    """A real daemon on the test workspace; every process it started is killed (by pid)
    afterwards."""
    pytest.importorskip("torch")
    from tui_helpers import kill_processes_of

    base = Path(tempfile.mkdtemp(prefix="tt-tui-", dir="/tmp"))
    monkeypatch.setenv("TUNETERM_RUNTIME_DIR", str(base / "r"))
    from tuneterm.runner.client import RunnerClient

    client = RunnerClient.connect(workspace, start=True, timeout=30.0)
    yield client
    client.close()
    kill_processes_of(workspace)
