"""TUI test set-up: the fake client importable, no cursor blink, no clocks."""

from __future__ import annotations

import sys
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
