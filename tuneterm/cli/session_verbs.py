"""`tuneterm validate FILE...`: check session files; every problem as `file:line: field: message`.

Static checks need no torch. Unless ``--no-model``, a file that passes them is also checked
against its model's layer groups (``tuneterm.engine.check.model_layer_names``);
``--deep``/``--smoke`` go further (``deep_check``: data, tokenizer, a forward pass or a few
steps). The engine is imported lazily and only when it exists, so validate works before
the engine does. Exit 2 if any file has a problem, else 0; never a traceback.
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
    """Every problem of one file (a list of ``Problem``; empty when it is fine)."""
    from tuneterm.errors import TunetermError
    from tuneterm.session import Problem, check_session_file, validate_layer_names

    session, problems = check_session_file(path, workspace)
    if problems or not (model or deep or smoke):
        return problems
    origin = getattr(session, "_origin", None)
    line_of = origin[1].line if origin else (lambda p: 1)
    try:
        eng = _engine_check()
        if eng is None:
            return []
        if model and hasattr(eng, "model_layer_names"):
            known = eng.model_layer_names(session, workspace)
            problems = validate_layer_names(session, list(known))
            if problems:
                return problems
        if (deep or smoke) and hasattr(eng, "deep_check"):
            eng.deep_check(session, workspace, smoke=smoke)
    except TunetermError as e:
        msg = str(e)
        field = "model.source"
        for f in ("data.source", "data.validation", "model.source"):
            if msg.startswith(f + ":"):
                field, msg = f, msg[len(f) + 1:].strip()
        return [Problem(str(path), line_of(field), field, msg)]
    except Exception as e:  # an engine failure is still a finding, never a traceback
        return [Problem(str(path), line_of("model.source"), "model.source",
                        f"check failed: {type(e).__name__}: {e}".splitlines()[0])]
    return []


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
