"""Suite-wide set-up: environment before any import of triton/transformers, and fixtures."""

import os

# Triton's interpreter must be chosen before anything imports triton (torch imports it
# lazily on the first optimizer step), and nothing may reach the hub.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """An empty workspace with sessions/ and runs/, used as $TUNETERM_HOME."""
    ws = tmp_path / "ws"
    (ws / "sessions").mkdir(parents=True)
    (ws / "runs").mkdir()
    monkeypatch.setenv("TUNETERM_HOME", str(ws))
    return ws
