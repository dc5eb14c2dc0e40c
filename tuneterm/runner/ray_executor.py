"""The Ray executor: queued sessions run as Ray actors on a cluster (docs/cluster.md).

One actor per worker attempt, named ``tt-<workspace hash>-<run id>-<nonce>`` in the Ray
namespace ``tuneterm`` and detached from the daemon (a daemon restart finds it again by
name). It asks for ``gpus_per_session`` GPUs and ``cpus_per_session`` CPUs; Ray sets
``CUDA_VISIBLE_DEVICES`` in it. The actor is a thin relay around the same worker program
the local executor runs (``python -m tuneterm.engine.worker RUN_DIR [--resume]``), started
as its child:

  daemon --actor call send(line)--> actor --stdin--> worker      (control messages)
  daemon <--actor call read()------ actor <--stdout-- worker      (acks, rejects, "look now")

Rows (metrics, events) and checkpoints are written by the worker straight into the run
directory, which must be on a filesystem every node mounts at the same path (NFS, a
cluster filesystem); the daemon follows those files as it does for local workers. An actor
that cannot see its run directory refuses to start, naming its node.

The worker dies with its actor (``PR_SET_PDEATHSIG``): killing the actor, or losing its
node, ends the attempt like a kill -9 of a local worker — the session is ``interrupted``
and a new actor, wherever Ray places it, resumes from the last checkpoint.

``address = "local"`` starts a single-node Ray for the workspace (``ray start --head``,
its files under ``temp_dir``) or reuses the one a previous daemon started; ``daemon stop``
stops it. This module imports ray only when a RayExecutor is made (never torch).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from tuneterm import protocol
from tuneterm.errors import UserError
from tuneterm.runner.executor import _ROW_PREFIXES, WORKER_MODULE, Executor, WorkerHandle

log = logging.getLogger("tuneterm.runner")

NAMESPACE = "tuneterm"
READ_WAIT_S = 1.0  # how long one read() call waits for the worker's next line
_METRIC, _EVENT = b"\x00metric", b"\x00event"  # "look now" markers (rows travel by the files)

# The worker's launcher inside the actor: ask the kernel for SIGKILL when the actor (our
# parent) dies, give up if it already has, then become the worker program.
_CHILD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(os.environ['TUNETERM_ACTOR_PID']):\n"
    "    os._exit(75)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


# -- configuration ------------------------------------------------------------------------------


@dataclass
class RayConfig:
    """``[runner.ray]`` in WS/.tuneterm/config.toml."""

    address: str = "local"  # "local" | "auto" | "HOST:PORT" | "ray://HOST:PORT"
    gpus_per_session: float = 1.0
    cpus_per_session: float = 1.0
    resources: dict = field(default_factory=dict)  # custom Ray resources per session
    temp_dir: str | None = None  # the local head's files (address = "local" only)


RAY_KEYS = ("address", "gpus_per_session", "cpus_per_session", "resources", "temp_dir")


def parse_ray_config(raw: object, where: str) -> RayConfig:
    """Check ``[runner.ray]``; a bad value is one UserError line naming the key."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: [runner.ray] must be a table")
    unknown = sorted(set(raw) - set(RAY_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown [runner.ray] keys {', '.join(unknown)} (known: {', '.join(RAY_KEYS)})")
    cfg = RayConfig()
    if "address" in raw:
        a = raw["address"]
        if not isinstance(a, str) or not a.strip() or (a not in ("local", "auto") and ":" not in a):
            raise UserError(f"{where}: [runner.ray] address must be \"local\", \"auto\", \"HOST:PORT\" or "
                            f"\"ray://HOST:PORT\" (got {a!r})")
        cfg.address = a.strip()
    for k in ("gpus_per_session", "cpus_per_session"):
        if k in raw:
            v = raw[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v:
                raise UserError(f"{where}: [runner.ray] {k} must be a number >= 0 (got {v!r})")
            setattr(cfg, k, float(v))
    if "resources" in raw:
        r = raw["resources"]
        if not isinstance(r, dict) or not all(isinstance(k, str) and not isinstance(v, bool)
                                              and isinstance(v, (int, float)) and v > 0 for k, v in r.items()):
            raise UserError(f"{where}: [runner.ray] resources must map names to positive numbers (got {r!r})")
        cfg.resources = {k: float(v) for k, v in r.items()}
    if "temp_dir" in raw:
        t = raw["temp_dir"]
        if not isinstance(t, str) or not t.startswith("/"):
            raise UserError(f"{where}: [runner.ray] temp_dir must be an absolute path (got {t!r})")
        if len(t) > 40:  # Ray puts sockets ~60 characters below it; Unix sockets stop at 107
            raise UserError(f"{where}: [runner.ray] temp_dir must be at most 40 characters (Ray's socket paths "
                            f"live under it): {t!r}")
        cfg.temp_dir = t
    return cfg


def workspace_tag(ws: Path) -> str:
    return hashlib.sha256(str(Path(ws).resolve()).encode()).hexdigest()[:8]


# -- a local head for the workspace ---------------------------------------------------------------


def _head_state_path(ws: Path) -> Path:
    return Path(ws) / ".tuneterm" / "ray-head.json"


def _pids_under(temp_dir: str, *, head_only: bool = False) -> list[int]:
    """Processes of this user that belong to the Ray instance whose files are under
    ``temp_dir``: its command line names the folder, or (Ray's agents and workers retitle
    themselves) one of its open files lies there. ``head_only``: the GCS server alone,
    whose presence means the instance is up."""
    out = []
    root = temp_dir.rstrip("/")
    for d in os.scandir("/proc"):
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if os.stat(d.path).st_uid != os.getuid():
                continue
            cmd = Path(d.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        named = root + "/" in cmd or cmd.rstrip().endswith(root)
        if head_only:
            if named and "gcs_server" in cmd:
                out.append(int(d.name))
            continue
        if not named:
            try:
                named = any(os.readlink(f.path).startswith(root + "/") for f in os.scandir(Path(d.path, "fd")))
            except OSError:
                named = False
        if named:
            out.append(int(d.name))
    return out


def _kill_all(pids_of, wait_s: float = 10.0) -> None:
    pids = pids_of()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (pids := pids_of()):
            time.sleep(0.1)
        if not pids:
            return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_head(ws: Path, cfg: RayConfig) -> str:
    """The address of this workspace's single-node Ray, started now unless a previous
    daemon's still runs. Its files go under ``temp_dir`` (default
    /tmp/tuneterm-ray-UID-WSHASH); usage statistics are off."""
    state_path = _head_state_path(ws)
    temp_dir = cfg.temp_dir or f"/tmp/tuneterm-ray-{os.getuid()}-{workspace_tag(ws)}"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = None
    if state and state.get("temp_dir") == temp_dir and _pids_under(temp_dir, head_only=True):
        return state["address"]
    # None runs (or only leftovers of one whose GCS died): start afresh.
    _kill_all(lambda: _pids_under(temp_dir), 5.0)
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
            f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
            "--object-store-memory=100000000"]
    log.info("starting a local Ray head: %s", " ".join(argv[3:]))
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"[runner.ray] address = \"local\": cannot start Ray ({e})") from None
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or f"exit code {r.returncode}").splitlines()[-1]
        raise UserError(f"[runner.ray] address = \"local\": `ray start --head` failed: {last}")
    address = f"127.0.0.1:{port}"
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": address, "temp_dir": temp_dir}) + "\n")
    os.replace(tmp, state_path)
    return address


def stop_local_head(ws: Path) -> bool:
    """Stop the single-node Ray that ``start_local_head`` started for ``ws`` (only its own
    processes: other Ray instances of this user are left alone)."""
    path = _head_state_path(ws)
    try:
        temp_dir = json.loads(path.read_text())["temp_dir"]
    except (OSError, ValueError, KeyError):
        return False
    _kill_all(lambda: _pids_under(temp_dir))
    path.unlink(missing_ok=True)
    return True


# -- the actor (runs on a cluster node) ---------------------------------------------------------------


class WorkerActor:
    """One worker attempt on some node: the engine's worker as a child process, its stdin
    and stdout relayed through actor calls. An async actor: a ``read`` that waits for the
    next line never blocks a ``send``."""

    def __init__(self, command: list[str] | None, extra_args: list[str], run_dir: str):
        self.command = list(command) if command else [sys.executable, "-m", WORKER_MODULE]
        self.extra_args = list(extra_args)
        self.run_dir = run_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: collections.deque = collections.deque()
        self.more: asyncio.Event | None = None
        self.eof: asyncio.Event | None = None
        self.node = socket.gethostname()

    async def start(self, resume: bool) -> dict:
        rd = Path(self.run_dir)
        if not (rd / "session.toml").is_file():
            return {"error": f"run directory {rd} is not visible on Ray node {self.node}: the workspace must be "
                             "on a filesystem every node mounts at the same path (docs/cluster.md)"}
        self.more, self.eof = asyncio.Event(), asyncio.Event()
        env = {**os.environ, "TUNETERM_ACTOR_PID": str(os.getpid())}
        argv = [*self.command, str(rd), *(["--resume"] if resume else []), *self.extra_args]
        err = open(rd / "worker.stderr", "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CHILD, *argv, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, cwd=str(rd), env=env,
                start_new_session=True, limit=1 << 24)
        finally:
            err.close()
        asyncio.ensure_future(self._pump())
        return self.info()

    def info(self) -> dict:
        return {"pid": os.getpid(), "worker_pid": self.proc.pid if self.proc else None, "node": self.node,
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    async def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                break
            if line.startswith(_ROW_PREFIXES):
                # A row only means "look at the run directory now": keep one marker per kind.
                line = _METRIC if b'"metric"' in line[:24] else _EVENT
                if line in self.lines:
                    continue
            self.lines.append(line)
            self.more.set()
        self.eof.set()
        self.more.set()

    async def read(self, wait_s: float = READ_WAIT_S) -> tuple[list[bytes], bool]:
        """The lines since the last call (waiting up to ``wait_s`` for one), and whether
        the worker has closed its stdout."""
        if self.more is None:
            return [], True
        if not self.lines and not self.eof.is_set():
            self.more.clear()
            try:
                await asyncio.wait_for(self.more.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        out = list(self.lines)
        self.lines.clear()
        return out, self.eof.is_set() and not self.lines

    async def send(self, line: bytes) -> bool:
        p = self.proc
        if p is None or p.stdin is None or p.stdin.is_closing() or p.returncode is not None:
            return False
        try:
            p.stdin.write(line)
            await p.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    async def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def wait(self) -> int | None:
        if self.proc is None:
            return None
        code = await self.proc.wait()
        try:
            await asyncio.wait_for(self.eof.wait(), 5.0)
        except asyncio.TimeoutError:
            pass
        return code


# -- the daemon's side ---------------------------------------------------------------------------------


def _ray_errors() -> tuple:
    import ray.exceptions as rx

    return (rx.RayError, ConnectionError)


class RayWorker(WorkerHandle):
    """A worker running inside a Ray actor, reached through actor calls only."""

    def __init__(self, actor, name: str, info: dict):
        self.actor = actor
        self.name = name
        self.pid = info.get("pid")  # the actor's pid on its node (the node may not be this machine)
        self.pid_start = None
        self.node = info.get("node")
        self._drained = asyncio.Event()
        self._killed = False

    async def send(self, msg: dict) -> bool:
        try:
            return bool(await self.actor.send.remote(protocol.encode(msg)))
        except _ray_errors():
            return False

    async def messages(self) -> AsyncIterator[dict]:
        try:
            while True:
                try:
                    lines, eof = await self.actor.read.remote(READ_WAIT_S)
                except _ray_errors():
                    return
                for line in lines:
                    if line == _METRIC:
                        yield {"type": "metric"}
                    elif line == _EVENT:
                        yield {"type": "event"}
                    else:
                        try:
                            yield protocol.decode(line)
                        except protocol.ProtocolError:
                            continue
                if eof:
                    return
        finally:
            self._drained.set()

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.kill()  # the worker dies with its actor
            return
        try:
            self.actor.signal.remote(int(sig))
        except _ray_errors():
            pass

    def kill(self) -> None:
        import ray

        if not self._killed:
            self._killed = True
            try:
                ray.kill(self.actor, no_restart=True)
            except _ray_errors() + (ValueError,):
                pass

    async def wait(self) -> int | None:
        try:
            code = await self.actor.wait.remote()
        except _ray_errors() as e:
            # The actor died (killed, its node lost): the worker died with it.
            log.warning("actor %s died: %s", self.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
            code = -int(signal.SIGKILL)
        else:
            try:  # let the reader take the last lines before the actor goes
                await asyncio.wait_for(self._drained.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
        await asyncio.to_thread(self.kill)
        return code


class RayExecutor(Executor):
    """Start workers as Ray actors (see the module docstring)."""

    def __init__(self, ws: Path, cfg: RayConfig, command: list[str] | None = None,
                 extra_args: list[str] | None = None):
        try:
            import ray
        except ImportError:
            raise UserError('[runner] executor = "ray" needs the ray package (pip install "tuneterm[cluster]")') \
                from None
        self.ws = Path(ws)
        self.cfg = cfg
        self.command = list(command) if command else None
        self.extra_args = list(extra_args or [])
        self.local = cfg.address == "local"
        self.address = start_local_head(self.ws, cfg) if self.local else cfg.address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False,
                     logging_level=logging.WARNING, ignore_reinit_error=True)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: all one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"[runner.ray] address = {cfg.address!r}: cannot connect to Ray ({msg})") from None
        total = ray.cluster_resources()
        self.cluster = {k: total.get(k, 0.0) for k in ("CPU", "GPU")}
        if cfg.gpus_per_session > self.cluster["GPU"]:
            raise UserError(f"[runner.ray] gpus_per_session = {cfg.gpus_per_session:g}, but the Ray cluster at "
                            f"{self.address} has {self.cluster['GPU']:g} GPUs (set gpus_per_session = 0 to "
                            "train on CPUs)")
        self.prefix = f"tt-{workspace_tag(self.ws)}-"
        log.info("Ray executor: %s (%g CPUs, %g GPUs); per session %g GPUs, %g CPUs", self.address,
                 self.cluster["CPU"], self.cluster["GPU"], cfg.gpus_per_session, cfg.cpus_per_session)

    def default_slots(self) -> int:
        """Sessions at once when [runner] slots is unset: what the cluster can hold."""
        c = self.cfg
        if c.gpus_per_session > 0:
            return max(1, int(self.cluster["GPU"] // c.gpus_per_session))
        return max(1, int(self.cluster["CPU"] // c.cpus_per_session)) if c.cpus_per_session > 0 else 1

    def describe(self) -> dict:
        return {"executor": "ray", "address": self.address, "local_head": self.local,
                "cluster": self.cluster, "gpus_per_session": self.cfg.gpus_per_session,
                "cpus_per_session": self.cfg.cpus_per_session}

    def gpus_for(self, run_dir: Path) -> float:
        """A session that trains on the CPU (``[runtime] device = "cpu"``) asks for no GPU."""
        try:
            with open(Path(run_dir) / "session.toml", "rb") as fh:
                device = tomllib.load(fh).get("runtime", {}).get("device", "auto")
        except (OSError, tomllib.TOMLDecodeError, AttributeError):
            device = "auto"
        return 0.0 if device == "cpu" else self.cfg.gpus_per_session

    def _names(self, run_dir: Path) -> list[str]:
        import ray.util

        stem = f"{self.prefix}{Path(run_dir).name}-"
        return sorted(n for n in ray.util.list_named_actors() if isinstance(n, str) and n.startswith(stem))

    def _kill_stale(self, run_dir: Path) -> None:
        for stale in self._names(run_dir):
            self._kill_named(stale)

    def _kill_named(self, name: str) -> None:
        import ray

        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except _ray_errors() + (ValueError,):
            pass

    async def start(self, run_dir: Path, *, resume: bool, slot: int) -> WorkerHandle:
        import ray

        # An earlier attempt's actor that outlived its worker. These calls block on the
        # cluster (up to a minute when its head is gone): keep them off the daemon's loop.
        await asyncio.to_thread(self._kill_stale, run_dir)
        name = f"{self.prefix}{Path(run_dir).name}-{uuid.uuid4().hex[:8]}"
        actor_cls = ray.remote(WorkerActor).options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=0, max_concurrency=16,
            num_cpus=self.cfg.cpus_per_session, num_gpus=self.gpus_for(run_dir),
            resources=self.cfg.resources or None)
        # The worker program on the node: the configured one, else the node's own Python
        # running tuneterm's worker; extra_args go after the run directory, as locally.
        actor = actor_cls.remote(self.command, self.extra_args, str(run_dir))
        try:
            info = await actor.start.remote(resume)
        except _ray_errors() as e:
            await asyncio.to_thread(self._kill_named, name)
            raise OSError(f"the Ray actor did not start: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
                from None
        if "error" in info:
            await asyncio.to_thread(self._kill_named, name)
            raise OSError(info["error"])
        log.info("run %s: actor %s on node %s (pid %s, CUDA_VISIBLE_DEVICES %r)", Path(run_dir).name, name,
                 info.get("node"), info.get("pid"), info.get("gpus"))
        return RayWorker(actor, name, info)

    def adopt(self, run_dir: Path, pid: int | None, pid_start: str | None) -> WorkerHandle | None:
        import ray

        names = self._names(run_dir)
        for stale in names[:-1]:
            self._kill_named(stale)
        if not names:
            return None
        try:
            actor = ray.get_actor(names[-1], namespace=NAMESPACE)
            info = ray.get(actor.info.remote(), timeout=30)
        except (_ray_errors() + (ValueError,)) as e:
            log.warning("run %s: actor %s is unreachable (%s)", Path(run_dir).name, names[-1], e)
            self._kill_named(names[-1])
            return None
        return RayWorker(actor, names[-1], info)

    def close(self) -> None:
        import ray

        try:
            ray.shutdown()
        except Exception:
            pass
        if self.local:
            stop_local_head(self.ws)
