"""Helpers shared by the engine tests (importable: pyproject puts tests/ on sys.path)."""

from __future__ import annotations

import json
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
