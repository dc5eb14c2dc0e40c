"""Helpers of the trust tests (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path


def run_dirs(workspace: Path) -> list[str]:
    """Every entry of runs/, hidden ones included."""
    return sorted(p.name for p in (workspace / "runs").iterdir())


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


# Ways to damage one file of a checkpoint, as a crash or a bad disk would.
def truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def garble(f: Path) -> None:
    text = f.read_text()
    f.write_text("#garbled" + text[8:])  # the same length: only the checksum sees it


def delete_field(f: Path) -> None:
    state = json.loads(f.read_text())
    del state["cursor"]
    f.write_text(json.dumps(state))
