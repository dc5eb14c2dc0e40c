"""Flags shared by several verbs, and small output helpers (no torch, no textual)."""

from __future__ import annotations

import argparse
import json
import sys

from tuneterm.workspace import resolve_workspace


def add_workspace(p: argparse.ArgumentParser) -> None:
    # SUPPRESS so that `tuneterm -w X run` and `tuneterm run -w X` both work.
    p.add_argument("--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
                   help="workspace folder (default: $TUNETERM_HOME, else the current directory)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernels", choices=("auto", "triton", "torch"),
                   help="optimizer/dropout implementation (default: the session's, else auto)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where to train (default: the session's, else auto)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="stop after N optimizer steps (overrides the session)")


def workspace_of(args: argparse.Namespace):
    return resolve_workspace(getattr(args, "workspace", None))


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned text table (no rich: start-up stays fast)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    sys.stdout.write("\n".join(out) + "\n")
