"""Flags shared by several verbs, and small output helpers (no torch, no textual)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.workspace import Workspace


def add_workspace(p: argparse.ArgumentParser) -> None:
    # SUPPRESS so that `tuneterm -w X run` and `tuneterm run -w X` both work.
    p.add_argument("--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
                   help="workspace folder (default: $TUNETERM_HOME, else the current directory)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def finish(p: argparse.ArgumentParser, func, *, json: bool = True, **defaults) -> None:
    """The end of every verb's parser: --workspace, --json (for verbs that print data) and
    the function that runs it (with any other ``defaults``)."""
    add_workspace(p)
    if json:
        add_json(p)
    p.set_defaults(func=func, **defaults)


def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernels", choices=("auto", "triton", "torch"),
                   help="optimizer/dropout implementation (default: the session's, else auto)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where to train (default: the session's, else auto)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="stop after N optimizer steps (overrides the session)")


def workspace(args: argparse.Namespace) -> Workspace:
    """The command's workspace, resolved once: the first call resolves --workspace (else
    $TUNETERM_HOME, else the current directory) and keeps the value on ``args``."""
    ws = vars(args).get("_workspace")
    if ws is None:
        ws = args._workspace = Workspace.resolve(getattr(args, "workspace", None))
    return ws


def workspace_of(args: argparse.Namespace) -> Path:
    """The root of the command's workspace, for verbs that want a plain path."""
    return workspace(args).root


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned text table (no rich: start-up stays fast)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    sys.stdout.write("\n".join(out) + "\n")


# -- refusals of live edits, logged where the run's history is ----------------------------

def _run_dir_of(ws: Workspace, ref) -> Path | None:
    """The run directory a `set RUN` / `freeze RUN` reference means, resolved as the queue
    resolves it (without starting a daemon), else as a run id; None when there is none."""
    from tuneterm.workspace import find_run

    try:
        from tuneterm.runner.readonly import read_session

        return ws.run_dir(read_session(ws, ref)["run_id"])
    except Exception:  # noqa: BLE001 - no queue, no such session, a damaged database: try the run id
        pass
    try:
        rd = find_run(ws, str(ref))
    except UserError:
        return None
    return rd if rd.parent == ws.runs.resolve() else None


def record_rejection(ws: Workspace, ref, request: dict, reason: str) -> Path | None:
    """Append a refusal made before the edit reached the run (by the CLI's own checks) to
    the run's events.jsonl (``rundir.append_rejection``, ``"source": "cli"``). Returns the run
    directory written to, or None."""
    from tuneterm.rundir import append_rejection

    rd = _run_dir_of(ws, ref)
    return rd if rd is not None and append_rejection(rd, request, reason, "cli") else None


@contextmanager
def logged_rejection(args: argparse.Namespace, ref, request: dict):
    """Around a verb's own checks of a live edit: a UserError raised inside is recorded in
    the run's events (``record_rejection``) and then raised as usual (exit 2)."""
    try:
        yield
    except UserError as e:
        try:
            record_rejection(workspace(args), ref, request, str(e))
        except OSError:
            pass  # the refusal still reaches the user; the log is best effort
        raise
