"""The runner: a detached daemon per workspace owning the session queue (SQLite), starting
workers through an executor, forwarding live control and streaming metrics to clients over
a Unix socket. No torch, no textual anywhere in this package.

    client.py    RunnerClient (sync; CLI and TUI), start_daemon
    daemon.py    the daemon's queue requests and views (python -m tuneterm.runner.daemon)
    supervise.py scheduling, worker supervision, recovery
    server.py    the process: detaching, lock, socket, request dispatch
    tail.py      following a run directory's metrics/events files
    store.py     the SQLite queue
    executor.py  Executor interface; LocalExecutor (subprocesses)
    paths.py     socket, runtime folder, pid/log/db paths
"""

from tuneterm.runner.paths import RunnerUnavailable

__all__ = ["RunnerUnavailable"]
