"""The runner: a detached daemon per workspace owning the session queue (SQLite), starting
workers through an executor, forwarding live control and streaming metrics to clients over
a Unix socket. No torch, no textual anywhere in this package.

    __main__.py    python -m tuneterm.runner: the daemon's process (server.main)
    client.py      RunnerClient (sync; CLI and TUI)
    launch.py      start_daemon: the detached daemon, started and waited for
    daemon.py      the daemon's queue requests and session views
    transitions.py the session state machine (pure functions)
    supervise.py   Supervisor: scheduling, workers, watchdog (wall clock, heartbeat), recovery, stop
    limits.py      a session's [runtime] max_wall_s / heartbeat_s
    process.py     the process: detaching, lock, configuration, executor, socket
    server.py      the socket side: connections, request dispatch, subscriptions
    queries.py     the queue's queries (resolve, view, list): the daemon's and readonly.py's
    tail.py        following a run directory's metrics/events files
    store.py       the SQLite queue (every SQL statement)
    rebuild.py     rebuilding a lost or damaged queue from the run directories
    readonly.py    the queue read without a daemon (queue ls / logs)
    executor.py    Executor interface; LocalExecutor (subprocesses)
    ray_config.py, ray_head.py, ray_actor.py, ray_executor.py   the Ray executor (docs/cluster.md)
    paths.py       socket, runtime folder, pid/log/db/lock paths; finding the daemon
"""

from tuneterm.runner.paths import RunnerUnavailable

__all__ = ["RunnerUnavailable"]
