"""`tuneterm` (no verb: the TUI), `tuneterm demo`, `tuneterm web`.

Textual and the runner client are imported inside the commands: `tuneterm --help` and the
other verbs stay fast. Closing the app never stops a run: the daemon owns the workers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tuneterm.cli.common import add_workspace, finish, workspace_of
from tuneterm.errors import UserError

# The demo queue, in order: MiniLM on BBC News first (README's main command), then the
# causal-LM demo (SmolLM2 writing BBC headlines).
DEMO_SESSIONS = ("bbc-minilm.toml", "bbc-headlines-smollm2.toml", "tweets-minilm.toml", "smoke-tiny.toml")
# Copied too, not queued: there to add from the app (`a`) or `tuneterm queue add`.
DEMO_EXTRAS = ("bbc-headlines-smollm2-lora.toml", "bbc-headline-preference-smollm2.toml")


def register(sub) -> None:
    p = sub.add_parser("demo", help="the TUI on a demo workspace with the demo sessions queued",
                       description="Prepare a demo workspace (default ./demo-workspace), copy the example "
                       "sessions into its sessions/, queue them (MiniLM on BBC News first, then SmolLM2 "
                       "writing BBC headlines; the LoRA and preference (DPO) examples are copied, not queued: "
                       "`a` adds them) and "
                       "open the TUI. "
                       "Run it again to reopen the same workspace; nothing is queued twice.")
    finish(p, cmd_demo, json=False)
    p = sub.add_parser("web", help="serve the TUI to a browser on localhost (needs textual-serve)",
                       description="Serve the same app to a browser through textual-serve.")
    add_workspace(p)
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_web)


def _connect(ws: Path):
    from tuneterm.runner.client import RunnerClient

    return RunnerClient.connect(ws, start=True)


def cmd_tui(args: argparse.Namespace) -> int:
    """The app on the workspace, starting the runner daemon when none runs."""
    ws = workspace_of(args)
    if not ws.is_dir():
        raise UserError(f"workspace {ws} does not exist")
    (ws / "sessions").mkdir(exist_ok=True)
    return _run_app(ws, [])


def _run_app(ws: Path, queue: list[Path]) -> int:
    client = _connect(ws)
    try:
        from tuneterm.tui.app import make_app

        app = make_app(client, ws, queue_on_start=queue)
        app.run()
    finally:
        client.close()  # ends the streams; the daemon and its runs carry on
    return 0


def example_sessions_dir() -> Path:
    """The repository's sessions/ folder (next to the package in a checkout)."""
    import tuneterm

    here = Path(tuneterm.__file__).resolve().parent
    for cand in (here.parent / "sessions", here / "examples"):
        if all((cand / n).is_file() for n in DEMO_SESSIONS):
            return cand
    raise UserError("the example sessions (sessions/bbc-minilm.toml, ...) were not found next to the "
                    f"tuneterm package ({here.parent / 'sessions'}); run `tuneterm demo` from a checkout")


def prepare_demo(ws: Path) -> list[Path]:
    """Create the workspace and copy the example sessions (never over a file the user
    changed). Returns the session files to queue: none when the queue already has runs."""
    src = example_sessions_dir()
    (ws / "sessions").mkdir(parents=True, exist_ok=True)
    (ws / "runs").mkdir(exist_ok=True)
    out = []
    for name in DEMO_SESSIONS + DEMO_EXTRAS:
        dst = ws / "sessions" / name
        if not dst.exists() and (src / name).is_file():
            shutil.copyfile(src / name, dst)
        if name in DEMO_SESSIONS:
            out.append(dst)
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    ws = Path(getattr(args, "workspace", None) or "demo-workspace").expanduser().resolve()
    files = prepare_demo(ws)
    client = _connect(ws)
    try:
        queue = files if not client.list_sessions() else []  # a second demo reopens the first
    finally:
        client.close()
    sys.stderr.write(f"tuneterm demo: workspace {ws}\n")
    return _run_app(ws, queue)


def cmd_web(args: argparse.Namespace) -> int:
    try:
        from textual_serve.server import Server
    except ImportError:
        raise UserError("`tuneterm web` needs textual-serve: pip install textual-serve") from None
    ws = workspace_of(args)
    import shlex

    Server(f"{shlex.quote(sys.executable)} -m tuneterm --workspace {shlex.quote(str(ws))}", host=args.host, port=args.port,
           title="tuneterm").serve()
    return 0
