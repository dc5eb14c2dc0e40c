"""A multi-process session on Ray (``[distributed] processes`` > 1, docs/cluster.md): one
placement group with one bundle per rank, one actor per rank placed in its bundle, each
running the rank program with the environment torchrun gives its workers.

  bundle r = {CPU: cpus_per_session, GPU: gpus_per_session, **resources}   (per rank)
  actor  r = tt-<workspace hash>-<run id>-<nonce>-r<r>, in bundle r
  rank   r = python -m tuneterm.engine.rank RUN_DIR [--resume] ..., with RANK, LOCAL_RANK,
             WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK,
             ROLE_WORLD_SIZE, MASTER_ADDR (rank 0's node) and MASTER_PORT (free there)

The rank program is the worker; with WORLD_SIZE set it does not become an elastic agent
again (the group is already made), it joins it with ``env://``. Rank 0's actor is the relay
the daemon talks to, exactly as a one-process session's actor; the other actors relay
nothing. The placement group (named ``tt-<workspace hash>-<run id>-<nonce>``, detached like
the actors) outlives the daemon, so a restarted daemon finds the whole group by its names.

When any rank's process or actor dies, the others' next collective fails and rank 0 exits 70
(the group was lost: a crash, resumed from the last checkpoint); if it has not within
``GRACE_S`` it is killed. At every end the handle kills every rank's actor (their processes
die with them) and removes the placement group. Imports ray only inside functions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from pathlib import Path

from tuneterm.errors import ExitCode
from tuneterm.runner.ray_actor import WorkerActor
from tuneterm.runner.ray_config import NAMESPACE
from tuneterm.runner.ray_worker import RayWorker

log = logging.getLogger("tuneterm.runner")

RANK_MODULE = "tuneterm.engine.rank"  # the worker under another name (never taken for a run's worker)
GRACE_S = 15.0  # a lost rank: rank 0's time to see its collective fail and exit 70 by itself
FOLLOWERS_S = 5.0  # a clean end (done, paused): the other ranks' time to leave on their own
_CLEAN = (int(ExitCode.OK), int(ExitCode.PAUSED))


def _errors() -> tuple:
    import ray.exceptions as rx

    return (rx.RayError, ConnectionError, ValueError)


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def bundles(n: int, cpus: float, gpus: float, resources: dict) -> list[dict]:
    """One bundle per rank; a rank that asks for nothing still needs a non-empty bundle."""
    one = {k: v for k, v in {"CPU": cpus, "GPU": gpus, **resources}.items() if v > 0} or {"CPU": 0.01}
    return [dict(one) for _ in range(n)]


def rank_envs(where: list[dict]) -> list[dict]:
    """torchrun's variables for each rank, from where each rank's actor was placed (ranks on
    one node are numbered in rank order; nodes in the order of their first rank)."""
    nodes = list(dict.fromkeys(w["node_id"] for w in where))
    n, out = len(where), []
    for r, w in enumerate(where):
        same = [i for i, x in enumerate(where) if x["node_id"] == w["node_id"]]
        env = {"RANK": r, "LOCAL_RANK": same.index(r), "WORLD_SIZE": n, "LOCAL_WORLD_SIZE": len(same),
               "GROUP_RANK": nodes.index(w["node_id"]), "GROUP_WORLD_SIZE": len(nodes), "ROLE_RANK": r,
               "ROLE_WORLD_SIZE": n, "MASTER_ADDR": where[0]["ip"], "MASTER_PORT": where[0]["port"]}
        out.append({k: str(v) for k, v in env.items()})
    return out


def _kill(actors: list, pg) -> None:
    import ray
    from ray.util import remove_placement_group

    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except _errors():
            pass
    if pg is not None:
        try:
            remove_placement_group(pg)
        except _errors():
            pass


class RayGroup(RayWorker):
    """Rank 0's actor is the worker the daemon talks to; every rank's end is watched."""

    def __init__(self, actors: list, names: list[str], pg, info: dict):
        super().__init__(actors[0], names[0], info)
        self.ranks, self.names, self.pg = actors, names, pg

    def kill(self) -> None:
        if not self._killed:
            self._killed = True
            _kill(self.ranks, self.pg)

    async def _code(self, actor) -> int | None:
        try:
            return await actor.wait.remote()
        except _errors() as e:  # the actor died (killed, its node lost): its rank with it
            log.warning("actor of %s died: %s", self.name, _first_line(e))
            return -9

    async def wait(self) -> int | None:
        lead = asyncio.ensure_future(self._code(self.actor))
        rest = [asyncio.ensure_future(self._code(a)) for a in self.ranks[1:]]
        watch = set(rest)
        while not lead.done():
            done, _ = await asyncio.wait({lead, *watch}, return_when=asyncio.FIRST_COMPLETED)
            watch -= done
            lost = [t for t in done if t is not lead and t.result() not in _CLEAN]
            if lost:  # rank 0's next collective fails: give it the time to say so (70)
                log.warning("%s: a rank ended with %s; ending the group", self.name, lost[0].result())
                await asyncio.wait({lead}, timeout=GRACE_S)
                break
            if not watch and not lead.done():
                await asyncio.wait({lead})
        code = lead.result() if lead.done() else int(ExitCode.GROUP_LOST)
        if code in _CLEAN:
            await asyncio.wait(rest, timeout=FOLLOWERS_S)
        try:  # let the reader take the last lines before the actors go
            await asyncio.wait_for(self._drained.wait(), 5.0)
        except asyncio.TimeoutError:
            pass
        for t in (lead, *rest):
            t.cancel()
        await asyncio.to_thread(self.kill)
        return code


async def start_group(ex, run_dir: Path, resume: bool, n: int):
    """Start ``n`` ranks of ``run_dir`` on the cluster of RayExecutor ``ex``; the group's
    handle, or OSError (the cluster cannot hold it, a rank did not start)."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    cfg, gpus = ex.cfg, ex.gpus_for(run_dir)
    total = await asyncio.to_thread(ray.cluster_resources)
    need = {"CPU": cfg.cpus_per_session * n, "GPU": gpus * n}
    short = [f"{need[k]:g} {k}s" for k in need if need[k] > total.get(k, 0.0)]
    if short:
        raise OSError(f"{n} processes need {' and '.join(short)} ({cfg.cpus_per_session:g} CPUs and {gpus:g} GPUs "
                      f"per process), but the Ray cluster has {total.get('CPU', 0):g} CPUs and "
                      f"{total.get('GPU', 0):g} GPUs")
    name = f"{ex.prefix}{Path(run_dir).name}-{uuid.uuid4().hex[:8]}"
    pg = await asyncio.to_thread(placement_group, bundles(n, cfg.cpus_per_session, gpus, cfg.resources),
                                 strategy="PACK", name=name, lifetime="detached")
    actors: list = []
    try:
        await pg.ready()  # waits while the cluster has no room, as a one-actor session does
        command = ex.command or [sys.executable, "-m", RANK_MODULE]
        for r in range(n):
            actors.append(ray.remote(WorkerActor).options(
                name=f"{name}-r{r}", namespace=NAMESPACE, lifetime="detached", max_restarts=0,
                max_concurrency=16, num_cpus=cfg.cpus_per_session, num_gpus=gpus, resources=cfg.resources or None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r),
            ).remote(command, ex.extra_args, str(run_dir)))
        where = await asyncio.gather(*(a.where.remote() for a in actors))
        infos = await asyncio.gather(*(a.start.remote(resume, env) for a, env in zip(actors, rank_envs(where))))
    except BaseException as e:
        await asyncio.to_thread(_kill, actors, pg)
        if isinstance(e, _errors()):
            raise OSError(f"the Ray actors did not start: {_first_line(e)}") from None
        raise
    bad = next((i["error"] for i in infos if "error" in i), None)
    if bad:
        await asyncio.to_thread(_kill, actors, pg)
        raise OSError(bad)
    log.info("run %s: %d ranks in placement group %s on nodes %s (rank 0: pid %s, %s:%s)", Path(run_dir).name, n,
             name, sorted({i.get("node") for i in infos}), infos[0].get("pid"), where[0]["ip"], where[0]["port"])
    return RayGroup(actors, [f"{name}-r{r}" for r in range(n)], pg, infos[0])


async def adopt_group(run_dir: Path, members: dict, n: int):
    """The group a previous daemon started (``members``: rank -> actor name), when every
    rank's actor answers and their count is the session's; else None, the group ended."""
    import ray
    from ray.util import get_placement_group

    names = [members[r] for r in sorted(members)]
    pg_name = names[0].rsplit("-r", 1)[0]
    try:
        pg = await asyncio.to_thread(get_placement_group, pg_name)
    except _errors():
        pg = None
    actors: list = []
    try:
        if sorted(members) != list(range(n)) or pg is None:
            raise ValueError(f"ranks {sorted(members)} of {n}")
        for nm in names:
            actors.append(await asyncio.to_thread(ray.get_actor, nm, namespace=NAMESPACE))
        infos = await asyncio.wait_for(asyncio.gather(*(a.info.remote() for a in actors)), 30)
    except (_errors() + (asyncio.TimeoutError,)) as e:
        log.warning("run %s: the group %s cannot be followed (%s); ending it", Path(run_dir).name, pg_name,
                    _first_line(e))
        found = []
        for nm in names:
            try:
                found.append(await asyncio.to_thread(ray.get_actor, nm, namespace=NAMESPACE))
            except _errors():
                pass
        await asyncio.to_thread(_kill, found, pg)
        return None
    return RayGroup(actors, names, pg, infos[0])
