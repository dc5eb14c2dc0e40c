"""`tuneterm sweep FILE`, `sweep show NAME`, `sweep rm NAME`: Optuna sweeps through the
queue (tuneterm.sweep; docs/sweep.md). Optuna and the runner client are imported lazily."""

from __future__ import annotations

import argparse
import sys

from tuneterm.cli.common import finish, print_json, print_table, workspace_of
from tuneterm.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="hyperparameter search: sweep FILE | sweep show NAME | sweep rm NAME",
        description="Run (or resume) the sweep of FILE, a session file with a [sweep] table: an Optuna "
        "study in .tuneterm/sweeps.db whose trials train through the queue (the daemon is started when "
        "needed). `sweep show NAME` prints its trials and parameter importances; `sweep rm NAME` "
        "deletes a study. See docs/sweep.md.")
    p.add_argument("target", metavar="FILE|show|rm", help="a sweep file, or `show`/`rm`")
    p.add_argument("name", nargs="?", metavar="NAME", help="the sweep's name (show, rm)")
    p.add_argument("--check", action="store_true", help="only check the sweep file (exit 2 on a problem)")
    p.add_argument("--watch", action="store_true",
                   help="show: the TUI sweep view (trials, best so far, objective over trials), live")
    finish(p, cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    ws = workspace_of(args)
    if args.target in ("show", "rm") and args.name:
        return cmd_show(args, ws) if args.target == "show" else cmd_rm(args, ws)
    if args.target in ("show", "rm"):
        raise UserError(f"sweep {args.target}: give the sweep's name")
    if args.name:
        raise UserError(f"sweep FILE takes no second argument (got {args.name!r}); "
                        "did you mean `sweep show NAME`?")
    from tuneterm.sweep.spec import load_sweep

    sweep = load_sweep(args.target, ws)
    if args.check:
        if args.json:
            print_json({"file": args.target, "name": sweep.name, "ok": True})
        else:
            sys.stdout.write(f"{args.target}: ok (sweep {sweep.name}: {sweep.trials} trials x "
                             f"{sweep.max_steps} steps, {', '.join(sweep.space)})\n")
        return 0
    from tuneterm.sweep.driver import run_sweep

    def say(line: str) -> None:
        (sys.stderr if args.json else sys.stdout).write(line + "\n")
        (sys.stderr if args.json else sys.stdout).flush()

    summary = run_sweep(sweep, ws, say=say)
    if args.json:
        print_json(summary)
    return 0 if summary.get("best") else 1


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_show(args, ws) -> int:
    from tuneterm.sweep.study import describe_study, open_study

    if args.watch:
        from tuneterm.tui.sweep_screen import make_sweep_app

        make_sweep_app(ws, args.name).run()
        return 0
    info = describe_study(open_study(ws, args.name))
    if args.json:
        print_json(info)
        return 0
    names = sorted({k for t in info["trials"] for k in t["params"]})
    rows = []
    for t in info["trials"]:
        row = {"trial": t["number"], "state": t["state"], info["objective"] or "value": _fmt(t["value"]),
               "steps": _fmt(t["steps"])}
        row.update({k: _fmt(t["params"].get(k)) for k in names})
        row["run"] = t["run_id"] or "-"
        rows.append(row)
    sys.stdout.write(f"sweep {info['name']}: {info['direction']} {info['objective']}; "
                     + ", ".join(f"{n} {s.lower()}" for s, n in sorted(info["counts"].items())) + "\n")
    if rows:
        print_table(rows, ["trial", "state", info["objective"] or "value", "steps", *names, "run"])
    if info["best"]:
        b = info["best"]
        sys.stdout.write(f"best: trial {b['number']}  {info['objective']} {_fmt(b['value'])}  run {b['run_id']}\n")
    if info["importances"]:
        sys.stdout.write("importances: " + "  ".join(f"{k} {v:.3f}" for k, v in info["importances"].items()) + "\n")
    elif info.get("importances_note"):
        sys.stdout.write(info["importances_note"] + "\n")
    return 0


def cmd_rm(args, ws) -> int:
    from tuneterm.sweep.study import delete_study

    delete_study(ws, args.name)
    if args.json:
        print_json({"deleted": args.name})
    else:
        sys.stdout.write(f"deleted the study {args.name} (its sessions and runs are kept)\n")
    return 0
