"""The daemon process: detaching, the one-per-workspace lock, its configuration and executor,
the socket it binds, and the loop that runs the daemon and its server (no torch, no textual).

    python -m tuneterm.runner --workspace WS [--slots N] [--foreground] [--ready-fd FD]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import socket
import stat
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from tuneterm.errors import UserError
from tuneterm.rundir import write_atomic
from tuneterm.runner.executor import LocalExecutor, gpu_count
from tuneterm.runner.paths import (READY_ERROR, READY_OK, READY_RUNNING, RunnerUnavailable, config_path, db_path,
                                   lock_path, log_path, pid_path, read_pid, record_socket, socket_path)
from tuneterm.runner.daemon import Daemon
from tuneterm.runner.server import Server
from tuneterm.runner.store import CorruptQueue, open_store
from tuneterm.workspace import Workspace

log = logging.getLogger("tuneterm.runner")


def load_config(ws: Path) -> dict:
    """WS/.tuneterm/config.toml, table [runner]: slots, max_crashes, worker, worker_args,
    executor ("local" | "ray") and the table [runner.ray] (parsed into a RayConfig)."""
    path = config_path(ws)
    if not path.exists():
        return {}
    try:
        cfg = tomllib.loads(path.read_text()).get("runner", {})
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: {e}") from None
    known = {"slots", "max_crashes", "worker", "worker_args", "executor", "ray"}
    unknown = set(cfg) - known
    if unknown:
        raise UserError(f"{path}: unknown [runner] keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    for k in ("slots", "max_crashes"):
        if k in cfg and (not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 0):
            raise UserError(f"{path}: [runner] {k} must be a non-negative integer")
    for k in ("worker", "worker_args"):
        if k in cfg and (not isinstance(cfg[k], list) or not all(isinstance(x, str) for x in cfg[k])):
            raise UserError(f"{path}: [runner] {k} must be a list of strings")
    executor = cfg.get("executor", "ray" if "ray" in cfg else "local")
    if executor not in ("local", "ray"):
        raise UserError(f"{path}: [runner] executor must be \"local\" or \"ray\" (got {executor!r})")
    cfg["executor"] = executor
    if executor == "ray":
        from tuneterm.runner.ray_executor import parse_ray_config  # imports no ray

        cfg["ray"] = parse_ray_config(cfg.get("ray", {}), str(path))
    elif "ray" in cfg:
        raise UserError(f"{path}: [runner.ray] is set but [runner] executor = \"local\"")
    return cfg


def make_executor(ws: Path, cfg: dict):
    """The executor the configuration asks for, and the slots to use when none are set."""
    if cfg.get("executor") == "ray":
        from tuneterm.runner.ray_executor import RayExecutor

        ex = RayExecutor(ws, cfg["ray"], cfg.get("worker"), cfg.get("worker_args"))
        return ex, ex.default_slots()
    gpus = gpu_count()
    return LocalExecutor(cfg.get("worker"), cfg.get("worker_args"), gpus=gpus), max(1, gpus)


def _ready(fd: int | None, line: str) -> None:
    if fd is None:
        sys.stderr.write(line + "\n")
        return
    try:
        os.write(fd, (line + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def _detach() -> None:
    """Double fork: a new session without a controlling terminal that can never acquire
    one (the grandchild is not a session leader). stdio to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def bind_socket(path: Path) -> socket.socket:
    """Bind the daemon's socket 0600, replacing a stale one (nobody accepting on it)."""
    if path.exists() or path.is_symlink():
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise RunnerUnavailable(f"{path} exists and is not a socket; remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing the stale socket %s", path)
            path.unlink()
        except OSError as e:
            raise RunnerUnavailable(f"cannot probe {path}: {e}") from None
        else:
            raise RunnerUnavailable(f"another process serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # born 0600: no window in which others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tuneterm-daemon")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--slots", type=int)
    ap.add_argument("--foreground", action="store_true")
    ap.add_argument("--ready-fd", type=int)
    args = ap.parse_args(argv)
    ws = Workspace.resolve(args.workspace)
    ready = args.ready_fd
    if not args.foreground:
        _detach()
    os.umask(0o077)
    os.chdir("/")
    logging.basicConfig(filename=str(log_path(ws)), level=logging.INFO,
                        format="%(asctime)s %(levelname)s [%(process)d] %(message)s")
    # Tracebacks of a crash land in the log too.
    err = os.open(log_path(ws), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if not args.foreground:
        os.dup2(err, 2)
    os.close(err)

    lock_fd = os.open(lock_path(ws), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = read_pid(ws)
        _ready(ready, f"{READY_RUNNING} {pid or 0}")
        return 0
    try:
        cfg = load_config(ws)
        store = open_store(db_path(ws))
        sock_path = socket_path(ws)
        sock = bind_socket(sock_path)
        record_socket(ws, sock_path)  # found from the workspace by shells with another runtime dir
    except (CorruptQueue, RunnerUnavailable, UserError) as e:
        log.error("not starting: %s", e)
        _ready(ready, f"{READY_ERROR} {e}")
        return 1
    write_atomic(pid_path(ws), f"{os.getpid()}\n", durable=False)

    try:
        executor, default_slots = make_executor(ws, cfg)  # Ray: connects (starting a local head)
    except UserError as e:
        log.error("not starting: %s", e)
        _ready(ready, f"{READY_ERROR} {e}")
        pid_path(ws).unlink(missing_ok=True)
        sock_path.unlink(missing_ok=True)
        return 1
    slots = args.slots if args.slots is not None else cfg.get("slots", default_slots)
    log.info("daemon %s starting for %s (slots %s, socket %s)", os.getpid(), ws, slots, sock_path)
    try:
        clean = asyncio.run(_serve(ws, store, executor, slots, cfg.get("max_crashes", 3), sock, sock_path, ready))
        if clean:
            executor.close()
    finally:
        try:
            if read_pid(ws) == os.getpid():
                pid_path(ws).unlink()
            # Still holding the workspace lock: no other daemon can have bound this path.
            sock_path.unlink(missing_ok=True)
        except OSError:
            pass
        log.info("daemon %s stopped", os.getpid())
    return 0


async def _serve(ws, store, executor, slots, max_crashes, sock, sock_path, ready) -> None:
    daemon = Daemon(ws, store, executor, slots=slots, max_crashes=max_crashes)
    server = Server(daemon, sock_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(daemon.shutdown()))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # survives a hang-up
    daemon.recover()
    await server.start(sock)
    sched = asyncio.ensure_future(daemon.scheduler())
    _ready(ready, f"{READY_OK} {os.getpid()}")
    await daemon.stopped.wait()
    server.server.close()
    sched.cancel()
    await asyncio.sleep(0.2)  # let the shutdown answer reach its client
    store.close()
    return not daemon.runs  # every worker stopped: the executor may release its resources
