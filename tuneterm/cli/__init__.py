"""The `tuneterm` command: parses arguments and dispatches to the layers, importing lazily.

Each group of verbs lives in its own module with a ``register(subparsers)`` function that
adds its parsers and sets ``func`` (a callable taking the parsed args and returning an exit
code). Heavy imports (torch, transformers, textual) happen inside those callables only, so
`tuneterm --help` and the runner verbs start fast.

Exit codes: 0 ok, 1 failure (training error, replay mismatch), 2 bad input (one line on
stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys

from tuneterm import __version__
from tuneterm.errors import TunetermError

_VERB_MODULES = ("engine_verbs", "session_verbs", "runner_verbs", "tui_verbs", "sweep_verbs", "result_verbs",
                "track_verbs")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="tuneterm",
        description="A terminal experiment manager for fine-tuning pre-trained transformers. "
        "With no verb, opens the TUI on the workspace (starting the runner daemon if needed).",
    )
    parser.add_argument("--version", action="version", version=f"tuneterm {__version__}")
    parser.add_argument("--workspace", "-w", metavar="DIR",
                        help="workspace folder (default: $TUNETERM_HOME, else the current directory)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name in _VERB_MODULES:
        mod = importlib.import_module(f"tuneterm.cli.{name}")
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # No verb: the TUI.
        from tuneterm.cli.tui_verbs import cmd_tui

        func = cmd_tui
    try:
        code = func(args)
    except TunetermError as e:
        sys.stderr.write(f"tuneterm: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("tuneterm: interrupted\n")
        return 130
    except BrokenPipeError:
        # `tuneterm queue ls | head`: not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(code or 0)


def run() -> None:
    raise SystemExit(main())
