"""`tuneterm validate FILE...`: check session files; every problem as `file:line: field: message`.

Static checks need no torch. Unless ``--no-model``, a file that passes them is also checked
against its model (``engine_problems``, which `run` and `replay` use too: layer names, the
edit log's freezing, data.max_length against the model's positions, a model folder's
weight files); ``--deep``/``--smoke`` go further (data, tokenizer, the model loaded, one
step). The engine is imported lazily and only when it exists, so validate works before the engine
does. Exit 2 if any file has a problem, else 0; never a traceback.
"""

from __future__ import annotations

import importlib.util
import re
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


_KEY = re.compile(r"^([a-z_]+\.[a-z_]+(?:\[\d+\](?:\.[a-z_]+)?)?): ")


def validate_file(path: str, workspace: Path, *, model: bool = True, deep: bool = False,
                  smoke: bool = False) -> list:
    """Every problem of one file (a list of ``Problem``; empty when it is fine)."""
    from tuneterm.session import check_session_file

    session, problems = check_session_file(path, workspace)
    if problems:
        return problems
    return engine_problems(session, workspace, model=model, deep=deep, smoke=smoke)


def engine_problems(session, workspace: Path, *, model: bool = True, deep: bool = False,
                    smoke: bool = False) -> list:
    """What this machine and the engine find in a session that passed the static checks
    (``Problem``s with the file's lines; [] when it can train). The one check of `validate`,
    of `run` and `replay` before they write anything, and of the runner's pre-flight
    (`validate --deep`): the machine's limits (runtime.threads); with ``model``, layer
    names, the edit log's freezing, data.max_length against the model's positions, a model
    folder's weight files; ``deep``: data, tokenizer and model loaded; ``smoke``: one step.
    Never raises for bad input: an engine failure is a finding."""
    from tuneterm.errors import TunetermError
    from tuneterm.session import Problem, validate_layer_names
    from tuneterm.session.check import machine_checks

    origin = getattr(session, "_origin", None)
    file, line_of = (origin[0], origin[1].line) if origin else ("<session>", lambda p: 1)
    problems = [Problem(file, line_of(p), p, msg) for p, msg in machine_checks(session)]
    if session.tracking.inherit:  # the workspace's [tracking] applies to this run: its lines
        from tuneterm.session.tracking import workspace_tracking

        problems += workspace_tracking(workspace)[1]
    if problems or not (model or deep or smoke):
        return problems
    try:
        eng = _engine_check()
        if eng is None:
            return []
        from tuneterm.engine.liblogs import route_library_warnings

        route_library_warnings()  # the findings are the output: no library warning among them
        if model and hasattr(eng, "model_layer_names"):
            problems = validate_layer_names(session, list(eng.model_layer_names(session, workspace)))
            if problems:
                return problems
        if model and hasattr(eng, "model_problems"):
            found = eng.model_problems(session, workspace)
            if found:
                return [Problem(file, line_of(p), p, msg) for p, msg in found]
        if (deep or smoke) and hasattr(eng, "deep_check"):
            eng.deep_check(session, workspace, smoke=smoke)
    except TunetermError as e:
        msg = str(e)
        m = None if getattr(e, "field", None) else _KEY.match(msg)
        field = getattr(e, "field", None) or (m.group(1) if m else _blame(session, workspace, msg))
        msg = msg.removeprefix(field + ":").strip()
        return [Problem(file, line_of(field), field, msg)]
    except Exception as e:  # an engine failure is still a finding, never a traceback
        return [Problem(file, line_of("model.source"), "model.source",
                        f"check failed: {type(e).__name__}: {e}".splitlines()[0])]
    return []


def _blame(session, workspace: Path, msg: str) -> str:
    """The key an engine error that names none is about: the data file its message starts
    with, else the model."""
    for key in ("data.source", "data.validation"):
        src = getattr(session.data, key.split(".")[1], None)
        if src and not src.startswith("builtin:"):
            path = Path(src) if Path(src).is_absolute() else Path(workspace) / src
            if msg.startswith((f"{path}:", f"{src}:")):
                return key
    return "model.source"


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
