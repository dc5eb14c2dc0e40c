"""`daemon start|stop|status` (no torch). `start` is the verb that means "run the queue":
it also resumes what `daemon stop` paused. `stop` says what really happened to each
running session; `status` and `stop` find a daemon from the workspace's lock when this
shell's runtime folder differs from the daemon's."""

from __future__ import annotations

import sys
import time

from tuneterm.cli.common import finish, print_json, workspace
from tuneterm.states import SessionState


def register(sub) -> None:
    d = sub.add_parser("daemon", help="the runner daemon: start, stop, status",
                       description="Only `daemon start`, `queue add|resume|retry`, the TUI and `sweep` start the "
                                   "daemon; `queue ls|logs` read the queue from disk when none runs; `daemon stop` "
                                   "leaves running sessions paused until `daemon start` or `queue resume`.")
    ds = d.add_subparsers(dest="daemon_verb", metavar="VERB", parser_class=sub._parser_class)
    ds.required = True
    p = ds.add_parser("start", help="start the detached daemon (reports the running one if any) and resume the "
                                    "sessions `daemon stop` paused")
    p.add_argument("--slots", type=int, help="sessions trained at once (default: config.toml, else one per device)")
    finish(p, cmd_daemon_start)
    p = ds.add_parser("stop", help="pause running sessions at a checkpoint (killing workers that do not stop in "
                                   "time) and stop the daemon; they stay paused until `daemon start` or "
                                   "`queue resume`")
    finish(p, cmd_daemon_stop)
    p = ds.add_parser("status", help="is a daemon running; its pid, executor, socket, slots and counts")
    finish(p, cmd_daemon_status)



def _client(args):
    from tuneterm.runner.client import RunnerClient

    return RunnerClient.connect(workspace(args), start=False)


def cmd_daemon_start(args) -> int:
    from tuneterm.runner.client import RunnerClient, start_daemon
    from tuneterm.runner.transitions import STOPPED_BY_DAEMON

    ws = workspace(args)
    info = start_daemon(ws, slots=args.slots, timeout=20.0)
    # Starting the daemon on purpose continues what `daemon stop` paused (and only that).
    with RunnerClient.connect(ws, start=False) as c:
        resumed = [c.resume(s["id"])["run_id"] for s in c.list_sessions()
                   if s["state"] == SessionState.PAUSED and s.get("want") == STOPPED_BY_DAEMON]
    info["resumed"] = resumed
    if args.json:
        print_json(info)
        return 0
    sys.stdout.write(f"daemon {'started' if info['started'] else 'already running'} (pid {info['pid']})\n")
    if resumed:
        sys.stdout.write(f"resumed {len(resumed)} sessions `daemon stop` had paused: {', '.join(resumed)}\n")
    return 0


STOP_WAIT_S = 120.0  # the daemon gives workers 60 s to checkpoint, then kills them


def cmd_daemon_stop(args) -> int:
    from tuneterm.runner.client import RunnerUnavailable
    from tuneterm.runner.paths import lock_holder

    ws = workspace(args)
    try:
        c = _client(args)
    except RunnerUnavailable as e:
        pid = lock_holder(ws)
        if pid is None:
            if args.json:
                print_json({"stopped": False, "running": False})
            else:
                sys.stdout.write("no daemon running\n")
            return 0
        # It holds the workspace lock but its socket is elsewhere (another
        # TUNETERM_RUNTIME_DIR): SIGTERM is the same orderly stop as the request.
        sys.stderr.write(f"the daemon (pid {pid}) holds the workspace lock but is not reachable ({e}); "
                         "sending it SIGTERM\n")
        import os
        import signal

        os.kill(pid, signal.SIGTERM)
        before = []
    else:
        with c:
            pid = c.daemon.get("pid")
            before = [s for s in c.list_sessions() if s["state"] == SessionState.RUNNING]
            c.shutdown(timeout=STOP_WAIT_S + 30)
    deadline = time.monotonic() + STOP_WAIT_S
    while pid and time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    # What really happened, from the processes and the queue as the daemon left it.
    gone = not _alive(pid)
    after = {}
    if gone:
        from tuneterm.runner.readonly import read_sessions

        try:
            after = {s["id"]: s for s in read_sessions(ws)}
        except Exception:  # a queue the next start must rebuild: say what we know
            after = {}
    report = []
    for s in before:
        worker = s.get("pid")
        lives = bool(worker) and _alive(worker)
        row = after.get(s["id"], {})
        report.append({"id": s["id"], "run_id": s["run_id"], "state": row.get("state"), "worker_pid": worker,
                       "worker_alive": lives, "note": row.get("error")})
    ok = gone and not any(r["worker_alive"] for r in report)
    if args.json:
        print_json({"stopped": gone, "pid": pid, "sessions": report})
    else:
        for r in report:
            what = "STILL RUNNING" if r["worker_alive"] else (r["state"] or "?")
            sys.stdout.write(f"session {r['id']} {r['run_id']}: {what}" + (f" ({r['note']})" if r["note"] else "") + "\n")
        if gone:
            sys.stdout.write(f"daemon stopped (pid {pid})\n" if ok else
                             f"daemon stopped (pid {pid}), but some workers are still alive\n")
        else:
            sys.stdout.write(f"the daemon (pid {pid}) has not exited after {STOP_WAIT_S:.0f}s; see "
                             f"{ws.daemon_log}\n")
    return 0 if ok else 1


def _alive(pid: int) -> bool:
    from tuneterm.runner.health import pid_alive

    return pid_alive(pid)


def cmd_daemon_status(args) -> int:
    from tuneterm.runner.client import RunnerUnavailable
    from tuneterm.runner.paths import lock_holder, socket_record_path

    try:
        with _client(args) as c:
            st = c.status()
    except RunnerUnavailable as e:
        pid = lock_holder(workspace(args))
        if pid is not None:
            try:
                where = socket_record_path(workspace(args)).read_text().strip()
            except OSError:
                where = "unknown"
            if args.json:
                print_json({"running": True, "pid": pid, "reachable": False, "socket": where, "error": str(e)})
            else:
                sys.stdout.write(f"daemon running (pid {pid}, holds the workspace lock) but not reachable from "
                                 f"this shell: its socket is {where} (another TUNETERM_RUNTIME_DIR or "
                                 "XDG_RUNTIME_DIR?)\n")
            return 0
        if args.json:
            print_json({"running": False})
        else:
            sys.stdout.write("no daemon running\n")
        return 1
    st["running"] = True
    if args.json:
        print_json(st)
    else:
        counts = ", ".join(f"{n} {k}" for k, n in st["counts"].items() if n)
        if st.get("executor") == "ray":
            cl = st.get("cluster") or {}
            where = (f"ray at {st.get('address')}{' (local head)' if st.get('local_head') else ''}: "
                     f"{cl.get('CPU', 0):g} CPUs, {cl.get('GPU', 0):g} GPUs; per session "
                     f"(per rank of a multi-process one) {st.get('gpus_per_session', 0):g} GPUs, "
                     f"{st.get('cpus_per_session', 0):g} CPUs")
        else:
            where = "local processes"
        sys.stdout.write(f"daemon running (pid {st['pid']}, up {st['uptime_s']:.0f}s, {st['slots']} slots)\n"
                         f"executor {where}\n"
                         f"socket {st['socket']}\nlog {st['log']}\nsessions: {counts or 'none'}\n")
        if st.get("recovered"):
            sys.stdout.write(f"recovered: {st['recovered']}\n")
    return 0


