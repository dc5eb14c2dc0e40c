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

Modules: ``ray_config`` ([runner.ray] settings), ``ray_head`` (the workspace's local
single-node Ray), ``ray_actor`` (the actor that runs on a node), ``ray_worker`` (the daemon's
handle on one actor, RayWorker), ``ray_group`` (a session of ``[distributed] processes`` > 1:
a placement group with one actor per rank) and this one, the daemon's side (RayExecutor).
None of them imports ray at import time; every call that may
block on the cluster is awaited (actor calls) or runs in a thread, never on the daemon's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from tuneterm.errors import UserError
from tuneterm.rundir import RunDir
from tuneterm.runner.ray_actor import WorkerActor
from tuneterm.runner.ray_config import NAMESPACE, RAY_KEYS, RayConfig, parse_ray_config, workspace_tag  # noqa: F401
from tuneterm.runner.ray_head import _pids_under, start_local_head, stop_local_head  # noqa: F401
from tuneterm.runner.executor import Executor, WorkerHandle
from tuneterm.runner.ray_worker import RayWorker, _ray_errors

log = logging.getLogger("tuneterm.runner")


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
        log.info("Ray executor: %s (%g CPUs, %g GPUs); per session (per rank) %g GPUs, %g CPUs", self.address,
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

    def _session(self, run_dir: Path) -> dict:
        try:
            with open(RunDir(run_dir).session, "rb") as fh:
                return tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            return {}

    def gpus_for(self, run_dir: Path) -> float:
        """A session that trains on the CPU (``[runtime] device = "cpu"``) asks for no GPU."""
        try:
            device = self._session(run_dir).get("runtime", {}).get("device", "auto")
        except AttributeError:
            device = "auto"
        return 0.0 if device == "cpu" else self.cfg.gpus_per_session

    def processes_for(self, run_dir: Path) -> int:
        """The session's ``[distributed] processes`` (1 when unset or unreadable)."""
        try:
            n = self._session(run_dir).get("distributed", {}).get("processes", 1)
        except AttributeError:
            n = 1
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1

    def _names(self, run_dir: Path) -> list[str]:
        import ray.util

        stem = f"{self.prefix}{Path(run_dir).name}-"
        return sorted(n for n in ray.util.list_named_actors() if isinstance(n, str) and n.startswith(stem))

    def _kill_stale(self, run_dir: Path, keep: str | None = None) -> None:
        """Every actor and placement group of ``run_dir``'s earlier attempts (but ``keep``'s)."""
        import ray.util

        stem = f"{self.prefix}{Path(run_dir).name}-"
        for stale in self._names(run_dir):
            if keep is None or not stale.startswith(keep):
                self._kill_named(stale)
        for row in ray.util.placement_group_table().values():
            name = row.get("name") or ""
            if name.startswith(stem) and name != keep and row.get("state") != "REMOVED":
                try:
                    ray.util.remove_placement_group(ray.util.get_placement_group(name))
                except _ray_errors() + (ValueError,):
                    pass

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
        processes = self.processes_for(run_dir)
        if processes > 1:  # a placement group, one actor per rank
            from tuneterm.runner.ray_group import start_group

            return await start_group(self, run_dir, resume, processes)
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

    async def adopt(self, run_dir: Path, pid: int | None, pid_start: str | None) -> WorkerHandle | None:
        import ray

        # Listing and looking up actors block on the cluster: in a thread. The info call is
        # an actor call: awaited, with the same 30 s bound ray.get had.
        # An attempt's actors: tt-...-<run>-<nonce> alone, or tt-...-<run>-<nonce>-r<rank>
        # for each rank of a group. The newest attempt is followed; any other one is ended.
        stem = f"{self.prefix}{Path(run_dir).name}-"
        attempts: dict[str, dict] = {}
        for n in await asyncio.to_thread(self._names, run_dir):
            nonce, _, rank = n[len(stem):].partition("-r")
            attempts.setdefault(nonce, {})[int(rank) if rank.isdigit() else None] = n
        keep = f"{stem}{max(attempts)}" if attempts else None
        await asyncio.to_thread(self._kill_stale, run_dir, keep)
        if keep is None:
            return None
        members = attempts[max(attempts)]
        if None not in members:
            from tuneterm.runner.ray_group import adopt_group

            return await adopt_group(run_dir, members, self.processes_for(run_dir))
        names = [members[None]]
        try:
            actor = await asyncio.to_thread(ray.get_actor, names[-1], namespace=NAMESPACE)
            info = await asyncio.wait_for(actor.info.remote(), 30)
        except (_ray_errors() + (ValueError, asyncio.TimeoutError)) as e:
            log.warning("run %s: actor %s is unreachable (%s)", Path(run_dir).name, names[-1], e)
            await asyncio.to_thread(self._kill_named, names[-1])
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
