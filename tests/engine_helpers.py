"""Helpers shared by the engine tests (importable: pyproject puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(x) for x in (run_dir / name).read_text().splitlines() if x.strip()]


def strip_clock(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s", "elapsed")} for r in rs]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from tuneterm.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def kill9_after_checkpoint(workspace: Path, session: Path, step: int, timeout: float = 300) -> Path:
    """Run ``session`` in a child ``tuneterm run``, SIGKILL it once its checkpoint at ``step``
    is on disk, and return the killed run's directory (asserting it was still running)."""
    env = {**os.environ, "TUNETERM_HOME": str(workspace)}
    before = {p.name for p in (workspace / "runs").iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "run", str(session)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir, deadline = None, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            new = [p for p in (workspace / "runs").iterdir() if p.name not in before]
            if new and (new[0] / "checkpoints" / f"step-{step:08d}").is_dir():
                run_dir = new[0]
                break
            time.sleep(0.02)
        assert run_dir is not None and proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    return run_dir


def last_weights(run_dir: Path) -> dict:
    """The model tensors of a run's newest checkpoint."""
    from safetensors.torch import load_file

    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return load_file(str(last / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    """The newest checkpoints of two runs hold bit-identical tensors."""
    import torch

    wa, wb = last_weights(a), last_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
