"""Runner verbs: `queue add|ls|show|pause|resume|cancel|move|retry|logs`, `set`, `freeze`,
`unfreeze`, `daemon start|stop|status`, `watch`. They talk to the workspace's daemon
through ``tuneterm.runner.client`` (no torch, no textual: they start in milliseconds).

Only the verbs that mean "train" start a daemon when none runs: `queue add`, `queue
resume`, `queue retry`, `daemon start` (and the TUI). `queue ls`, `show` and `logs` read the
queue database and run directories when no daemon runs; the other verbs need a running
daemon (docs/runner.md, "Which verbs start the daemon").
"""

from __future__ import annotations

import argparse
import sys
import time

from tuneterm.cli import daemon_verbs
from tuneterm.cli.common import finish, logged_rejection, print_json, print_table, workspace
from tuneterm.errors import ExitCode, UserError
from tuneterm.rundir import RunDir
from tuneterm.states import SessionState


def register(sub) -> None:
    q = sub.add_parser("queue", help="the session queue: add, ls, show, pause, resume, cancel, move, retry, logs "
                                     "(only add, resume and retry start the daemon)",
                       description="Manage the queue of the workspace's runner daemon. Only add, resume and "
                                   "retry start the daemon when none runs; ls, show and logs then read the queue "
                                   "from disk; pause, cancel and move need a running daemon.")
    qs = q.add_subparsers(dest="queue_verb", metavar="VERB", parser_class=sub._parser_class)
    qs.required = True

    p = qs.add_parser("add", help="check session files and queue them (starts the daemon when none runs)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--smoke", action="store_true", help="also train one step before queueing")
    p.add_argument("--no-check", action="store_true", help="skip the model/data check (schema only at run time)")
    finish(p, cmd_queue_add)

    p = qs.add_parser("ls", help="the queue in order (never starts the daemon)")
    finish(p, cmd_queue_ls)

    for verb, helptext in (("pause", "pause (a running session checkpoints and exits; a queued one is held)"),
                           ("resume", "put a paused or interrupted session back in the queue (starts the daemon)"),
                           ("cancel", "cancel (a running session checkpoints first; `retry` continues it)"),
                           ("retry", "queue a failed, cancelled or interrupted session again (starts the daemon)")):
        p = qs.add_parser(verb, help=helptext)
        p.add_argument("refs", nargs="+", metavar="RUN", help="id, run id or a unique prefix")
        finish(p, cmd_queue_simple, verb=verb)

    p = qs.add_parser("move", help="reorder: --to POSITION (1 = first) or --by N (negative = earlier)")
    p.add_argument("ref", metavar="RUN")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--to", type=int, metavar="POS")
    g.add_argument("--by", type=int, metavar="N")
    g.add_argument("--top", action="store_true")
    g.add_argument("--bottom", action="store_true")
    finish(p, cmd_queue_move)

    p = qs.add_parser("show", help="one session: state, progress, its run directory and, for a multi-process "
                                   "session, its process count and each rank's last step and step time, or the "
                                   "rank that stalled (never starts the daemon)")
    p.add_argument("ref", metavar="RUN")
    finish(p, cmd_queue_show)

    p = qs.add_parser("logs", help="a session's log (log.txt of its run directory, else the worker's stderr; "
                                   "never starts the daemon)")
    p.add_argument("ref", metavar="RUN")
    p.add_argument("-n", "--lines", type=int, default=40, help="last N lines (0: all)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    finish(p, cmd_queue_logs, json=False)

    p = sub.add_parser("set", help="live edit of a running session: set RUN key=value... (needs a running daemon)",
                       description="Change hyperparameters of a running session at the next step boundary.")
    p.add_argument("ref", metavar="RUN")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    finish(p, cmd_set)

    for verb in ("freeze", "unfreeze"):
        p = sub.add_parser(verb, help=f"{verb} layer groups of a running session (see `tuneterm layers`)")
        p.add_argument("ref", metavar="RUN")
        p.add_argument("layers", nargs="+", metavar="LAYER")
        finish(p, cmd_freeze, verb=verb)

    daemon_verbs.register(sub)

    p = sub.add_parser("watch", help="stream a session's metrics as plain text until it ends (needs a running daemon)")
    p.add_argument("ref", metavar="RUN")
    p.add_argument("--no-history", action="store_true", help="only what happens from now on")
    p.add_argument("--events", action="store_true", help="print events (checkpoints, edits, ...) too")
    finish(p, cmd_watch, json=False)


def _client(args, start: bool = False):
    """The daemon's client for the command's workspace (resolved once: ``workspace``)."""
    from tuneterm.runner.client import RunnerClient

    return RunnerClient.connect(workspace(args), start=start)


def _ref(text: str):
    return int(text) if text.isdigit() else text


def _fmt(v, spec: str = ".4f") -> str:
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _eta(s) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _rows(sessions: list[dict]) -> list[dict]:
    out = []
    for s in sessions:
        best = s.get("best_metric")
        out.append({
            "id": s["id"], "name": s["name"], "state": s["state"] + (f"({s['want']})" if s.get("want") else ""),
            "step": f"{s['step']}/{s['total_steps']}" if s.get("total_steps") else str(s.get("step") or 0),
            "loss": _fmt(s.get("loss")), "best": f"{best['name']}={best['value']:.4f}" if best else "-",
            "eta": _eta(s.get("eta_s")), "run": s["run_id"],
            "note": (s.get("error") or "")[:60],
        })
    return out


_COLUMNS = ["id", "name", "state", "step", "loss", "best", "eta", "run", "note"]


def cmd_queue_add(args) -> int:
    with _client(args, start=True) as c:
        added = []
        for f in args.files:
            s = c.add(f, smoke=args.smoke, check=not args.no_check)
            added.append(s)
            if not args.json:
                sys.stdout.write(f"queued {s['id']} {s['run_id']}\n")
                sys.stdout.flush()
        if args.json:
            print_json(added)
    return 0


def _offline(args):
    """None when a daemon answers, else the reason (the caller reads the disk instead)."""
    from tuneterm.runner.client import RunnerUnavailable

    try:
        return _client(args, start=False)
    except RunnerUnavailable:
        return None


def _health(s: dict) -> str:
    """A multi-process session's per-rank line (runner/health.py); "" otherwise."""
    from tuneterm.runner.health import health_line, session_processes

    return health_line(s.get("processes") or session_processes(s["run_dir"]), s.get("ranks") or [])


def cmd_queue_ls(args) -> int:
    c = _offline(args)
    if c is None:
        from tuneterm.runner.readonly import read_sessions

        sessions = read_sessions(workspace(args))
        sys.stderr.write("(no daemon running: the queue as it is on disk; `tuneterm daemon start` runs it)\n")
    else:
        with c:
            sessions = c.list_sessions()
    if args.json:
        print_json(sessions)
    elif sessions:
        print_table(_rows(sessions), _COLUMNS)
        for s in sessions:  # a running multi-process session: its ranks, under the table
            line = _health(s) if s["state"] == SessionState.RUNNING and s.get("processes") else ""
            if line:
                sys.stdout.write(f"{s['id']} {s['name']}: {line}\n")
    else:
        sys.stdout.write("the queue is empty\n")
    return 0


def cmd_queue_show(args) -> int:
    s = _view(args)
    if args.json:
        print_json(s)
        return 0
    row = _rows([s])[0]
    lines = [f"{k:<9} {row[k]}" for k in _COLUMNS if row[k] and row[k] != "-" and k != "note"]
    lines += [f"{'run dir':<9} {s['run_dir']}", f"{'attempts':<9} {s['attempts']} ({s['crashes']} crashes in a row)"]
    if s.get("error"):
        lines.append(f"{'error':<9} {s['error']}")
    health = _health(s)
    if health:
        lines.append(health)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_queue_simple(args) -> int:
    out = []
    with _client(args, start=args.verb in ("resume", "retry")) as c:
        for ref in args.refs:
            s = getattr(c, args.verb)(_ref(ref))
            out.append(s)
    if args.json:
        print_json(out)
    else:
        print_table(_rows(out), _COLUMNS)
    return 0


def cmd_queue_move(args) -> int:
    with _client(args) as c:
        if args.top:
            s = c.move(_ref(args.ref), to=1)
        elif args.bottom:
            s = c.move(_ref(args.ref), to=1 << 30)
        else:
            s = c.move(_ref(args.ref), to=args.to, by=args.by)
    if args.json:
        print_json(s)
    else:
        sys.stdout.write(f"{s['run_id']} is now at position {s['position']}\n")
    return 0


def _view(args) -> dict:
    """The session ``args.ref`` names, from the daemon, else as it is on disk."""
    c = _offline(args)
    if c is None:
        from tuneterm.runner.readonly import read_session

        return read_session(workspace(args), _ref(args.ref))
    with c:
        return c.get(_ref(args.ref))


def cmd_queue_logs(args) -> int:
    s = _view(args)
    rd = RunDir(s["run_dir"])
    path, stderr = rd.log, rd.worker_stderr
    if (not path.exists() or path.stat().st_size == 0) and stderr.exists() and stderr.stat().st_size:
        path = stderr  # a worker that died before logging: its traceback is there
    if not path.exists():
        sys.stdout.write(f"{s['run_id']} has no log yet ({s['state']})\n")
        if not args.follow:
            return 0
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines(keepends=True)
    sys.stdout.write("".join(lines[-args.lines:] if args.lines > 0 else lines))
    sys.stdout.flush()
    if args.follow:
        pos = len(text.encode())
        while True:
            time.sleep(0.5)
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except OSError:
                continue
            if chunk:
                pos += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
    return 0


def _answer(args, ans: dict, what: str) -> int:
    if args.json:
        print_json(ans)
    if ans.get("type") == "reject":
        raise UserError(f"{what} rejected: {ans.get('reason')}")
    if not args.json:
        sys.stdout.write(f"{what} applied after step {ans.get('step')}\n")
    return 0


def cmd_set(args) -> int:
    from tuneterm.session import check_set_values, coerce_value

    values = {}
    # A value refused here is logged in the run's events.jsonl too (source "cli").
    with logged_rejection(args, _ref(args.ref), {"type": "set", "assignments": list(args.assignments)}):
        for a in args.assignments:
            key, sep, text = a.partition("=")
            if not sep or not key.strip():
                raise UserError(f"expected KEY=VALUE, got {a!r}")
            values[key.strip()] = coerce_value(key, text)
        problems = check_set_values(values)
        if problems:
            raise UserError(problems[0])
    with _client(args, start=False) as c:
        ans = c.control(_ref(args.ref), {"type": "set", "values": values})
    return _answer(args, ans, "set " + " ".join(f"{k}={v}" for k, v in values.items()))


def cmd_freeze(args) -> int:
    with _client(args, start=False) as c:
        ans = c.control(_ref(args.ref), {"type": args.verb, "layers": list(args.layers)})
    return _answer(args, ans, f"{args.verb} {' '.join(args.layers)}")


def _watch_line(msg: dict, events: bool) -> str | None:
    t, d = msg.get("type"), msg.get("data") or {}
    if t == "metric" and d.get("kind") == "train":
        lr = d.get("lr")
        return (f"step {d.get('step')}  epoch {_fmt(d.get('epoch'), '.2f')}  loss {_fmt(d.get('loss'))}"
                f"  lr {format(lr, '.3g') if isinstance(lr, float) else '-'}")
    if t == "metric" and d.get("kind") == "eval":
        vals = "  ".join(f"{k} {_fmt(v)}" for k, v in d.items() if k.startswith("val_"))
        return f"eval step {d.get('step')}  {vals}"
    if t == "event" and (events or d.get("kind") in ("edit", "end", "error", "early_stop")):
        extra = {k: v for k, v in d.items() if k not in ("kind", "step", "time")}
        return f"event {d.get('kind')} step {d.get('step')}  {extra}"
    if t == "state":
        s = msg.get("session") or {}
        return f"state {msg.get('state')}" + (f"  ({s['error']})" if s.get("error") else "")
    return None


def cmd_watch(args) -> int:
    with _client(args) as c:
        for msg in c.subscribe(_ref(args.ref), history=not args.no_history):
            line = _watch_line(msg, args.events)
            if line:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        final = c.get(_ref(args.ref))
    sys.stdout.write(f"{final['run_id']}: {final['state']}\n")
    return ExitCode.OK if final["state"] == SessionState.DONE else ExitCode.FAILED
