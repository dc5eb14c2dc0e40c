"""`tuneterm validate FILE...`: check session files; every problem as `file:line: field: message`.

Static checks need no torch. Unless ``--no-model``, a file that passes them is also checked
against its model (``tuneterm.engine.check.session_problems``: layer names, the edit log's
freezing, data.max_length against the model's positions, a model folder's weight files);
``--deep``/``--smoke`` go further (data, tokenizer, the model loaded, one step). The
engine is imported lazily and only when it exists, so validate works before the engine
does. Exit 2 if any file has a problem, else 0; never a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tuneterm.cli.common import add_json, add_workspace, print_json, workspace_of


def register(sub) -> None:
    p = sub.add_parser("validate", help="check session files (errors name file, line and field)",
                       description="Check session files. Every problem is printed as "
                       "`file:line: field: message`; exit 2 if any file has one.")
    p.add_argument("files", nargs="+", metavar="FILE", help="session .toml files")
    add_workspace(p)
    add_json(p)
    p.add_argument("--no-model", action="store_true",
                   help="static checks only: do not load the model to check layer names")
    p.add_argument("--deep", action="store_true",
                   help="also load the data and the model and run a forward pass")
    p.add_argument("--smoke", action="store_true", help="also train a few steps (implies --deep)")
    p.set_defaults(func=cmd_validate)


def _engine_check():
    """tuneterm.engine.check, or None while it does not exist (the engine is optional here)."""
    try:
        if importlib.util.find_spec("tuneterm.engine.check") is None:
            return None
    except (ImportError, ValueError):
        return None
    return importlib.import_module("tuneterm.engine.check")


def validate_file(path: str, workspace: Path, *, model: bool = True, deep: bool = False,
                  smoke: bool = False) -> list:
    """Every problem of one file (a list of ``Problem``; empty when it is fine): the static
    checks, then (unless ``model`` is off) ``tuneterm.engine.check.session_problems`` —
    the same checks `run`, `replay` and the runner's pre-flight make."""
    from tuneterm.session import check_session_file

    session, problems = check_session_file(path, workspace)
    if problems or not (model or deep or smoke):
        return problems
    eng = _engine_check()
    if eng is None:
        return []
    return eng.session_problems(session, workspace, deep=deep or smoke, smoke=smoke)


def cmd_validate(args) -> int:
    ws = workspace_of(args)
    results = []
    for f in args.files:
        problems = validate_file(f, ws, model=not args.no_model, deep=args.deep or args.smoke,
                                 smoke=args.smoke)
        results.append((f, problems))
        if not args.json:
            if problems:
                for p in problems:
                    sys.stderr.write(f"{p}\n")
            else:
                sys.stdout.write(f"{f}: ok\n")
            sys.stdout.flush()
    ok = all(not probs for _, probs in results)
    if args.json:
        print_json({"ok": ok, "files": [{"file": f, "ok": not probs, "problems": [p.to_dict() for p in probs]}
                                        for f, probs in results]})
    return 0 if ok else 2
