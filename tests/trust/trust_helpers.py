"""Helpers of the trust tests (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path


def run_dirs(workspace: Path) -> list[str]:
    """Every entry of runs/, hidden ones included."""
    return sorted(p.name for p in (workspace / "runs").iterdir())


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]
