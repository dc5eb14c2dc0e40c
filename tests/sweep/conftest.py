import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "runner"))

import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def runner(workspace, monkeypatch):
    """A short per-test socket folder and a finaliser that kills, by pid, every process of
    the workspace (the daemon, its workers, a sweep process)."""
    from runner_helpers import Harness

    base = Path(tempfile.mkdtemp(prefix="tt-", dir="/tmp"))
    monkeypatch.setenv("TUNETERM_RUNTIME_DIR", str(base / "r"))
    h = Harness(workspace)
    yield h
    h.cleanup()
    shutil.rmtree(base, ignore_errors=True)
