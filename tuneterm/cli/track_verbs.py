"""`tuneterm track RUN... [--tensorboard DIR] [--mlflow URI]`: finished runs to the trackers
people already read (docs/tracking.md). No torch: it reads run directories."""

from __future__ import annotations

import sys

from tuneterm.cli.common import finish, print_json, workspace_of


def register(sub) -> None:
    p = sub.add_parser("track", help="write finished runs to TensorBoard and/or MLflow",
                       description="Write runs that already ended to TensorBoard event files and/or an MLflow "
                       "tracking store, from their run directories: every step's train/* scalars, eval/* at "
                       "each evaluation, the knobs, each edit at its step and the end state (what [tracking] "
                       "writes live). Idempotent: the TensorBoard folder is replaced, the MLflow run (found "
                       "by its tuneterm.run_id tag) only gets the steps it lacks. Without --tensorboard or "
                       "--mlflow, each run's own [tracking] applies (the session's over the workspace's "
                       ".tuneterm/config.toml).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or run ids (unique prefixes)")
    p.add_argument("--tensorboard", metavar="DIR", help="write DIR/<run-id>/ event files")
    p.add_argument("--mlflow", metavar="URI", help="an MLflow tracking URI (sqlite:///mlflow.db, ./mlruns, "
                   "http://host:5000)")
    p.add_argument("--experiment", metavar="NAME", help="the MLflow experiment (default: [tracking] experiment)")
    finish(p, cmd_track)


def cmd_track(args) -> int:
    import re

    from tuneterm.errors import UserError
    from tuneterm.session.schema import MLFLOW_URI
    from tuneterm.tracking.offline import track_run
    from tuneterm.workspace import find_run

    if args.mlflow is not None and (not args.mlflow or not re.match(MLFLOW_URI, args.mlflow)):
        raise UserError(f"--mlflow: {args.mlflow!r} is not a tracking URI (e.g. sqlite:///mlflow.db, ./mlruns, "
                        "http://host:5000)")
    ws = workspace_of(args)
    runs = [find_run(ws, r) for r in args.runs]
    results = []
    for run_dir in runs:
        res = track_run(run_dir, ws, tensorboard=args.tensorboard, mlflow=args.mlflow, experiment=args.experiment)
        results.append(res)
        if not args.json:
            parts = []
            if "tensorboard" in res:
                parts.append(f"tensorboard {res['tensorboard']}")
            if "mlflow" in res:
                m = res["mlflow"]
                parts.append(f"mlflow {m['uri']} experiment {m['experiment']!r} run {m['run_id']} "
                             f"({m['added']} metric values added)")
            sys.stdout.write(f"{res['run']}: " + "; ".join(parts) + "\n")
    if args.json:
        print_json(results)
    return 0
