"""Trackers (TensorBoard, MLflow) read back with their own readers; tiny runs in a tmp workspace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("tensorboard", reason="the track extra (pip install -e .[track])")
pytest.importorskip("mlflow", reason="the track extra (pip install -e .[track])")


@pytest.fixture(autouse=True)
def _mlflow_fails_fast(monkeypatch):
    """A dead server is one refused connection, not minutes of MLflow's retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
