"""Fixtures for runner tests: a real daemon in a temporary workspace, a short per-test
runtime folder for its socket, and a finaliser that kills every process the test started
(the daemon, its workers, pre-flight checks) by pid."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from runner_helpers import Harness, rows, strip_clock, tiny  # noqa: E402


@pytest.fixture
def runtime_dir(monkeypatch):
    """A short socket folder per test (tmp paths can exceed the 107-byte socket limit)."""
    base = Path(tempfile.mkdtemp(prefix="tt-", dir="/tmp"))
    monkeypatch.setenv("TUNETERM_RUNTIME_DIR", str(base / "r"))
    yield base / "r"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def runner(workspace, runtime_dir):
    h = Harness(workspace)
    yield h
    h.cleanup()


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """Metrics of tiny sessions trained by `tuneterm run` in this process (no daemon):
    reference(steps) -> rows without wall-clock fields."""
    cache: dict[int, list] = {}

    def get(steps: int) -> list[dict]:
        if steps not in cache:
            from tuneterm.cli import main

            ws = tmp_path_factory.mktemp("refws")
            (ws / "sessions").mkdir()
            p = ws / "sessions" / "ref.toml"
            p.write_text(tiny("ref", steps))
            old = os.environ.get("TUNETERM_HOME")
            os.environ["TUNETERM_HOME"] = str(ws)
            try:
                assert main(["run", str(p), "--workspace", str(ws)]) == 0
            finally:
                if old is None:
                    os.environ.pop("TUNETERM_HOME", None)
                else:
                    os.environ["TUNETERM_HOME"] = old
            run_dir = next((ws / "runs").iterdir())
            cache[steps] = strip_clock(rows(run_dir))
        return cache[steps]

    return get
