"""Scheduling, worker supervision and recovery (no torch, no textual).

``Supervisor`` owns the workers: which sessions have one (``runs``), when the next may
start (``backoff``), the watchdog (wall-clock limit, heartbeat) and the daemon's stop. It
decides nothing itself about states: ``transitions.py`` does, from the exit code, the
run's end event and what was asked of the worker. It reaches the rest of the daemon only
through the four methods of ``Sessions``. Everything runs on the daemon's one asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tuneterm import protocol
from tuneterm.runner import callback
from tuneterm.runner import transitions as tr
from tuneterm.runner.executor import WorkerHandle, proc_state
from tuneterm.runner.limits import Limits, read_limits
from tuneterm.runner.store import Store
from tuneterm.rundir import RunDir, last_end_event, latest_checkpoint_step
from tuneterm.states import RunEnd, Want
from tuneterm.states import SessionState as S

log = logging.getLogger("tuneterm.runner")

KILL_AFTER_S = 120.0  # a worker asked to pause/cancel that has not exited by then is killed
STOP_GRACE_S = 60.0  # `daemon stop`: how long running workers get to checkpoint and exit
STOPPED_KILL_S = 2.0  # `daemon stop`: a worker stopped by SIGSTOP (state T) cannot checkpoint
REFRESH_BATCH_S = 0.02  # streamed rows are at most this much later than the worker's line
WATCH_EVERY_S = 1.0


class Sessions(Protocol):
    """What the supervisor needs from the daemon's session views."""

    def set_state(self, sid: int, **fields) -> dict: ...  # store + log + broadcast
    def follow(self, row: dict): ...  # start following the run's files (a Tailer)
    def refresh(self, row: dict): ...  # read what the files gained, broadcast it
    def run_dir(self, row: dict) -> Path: ...


@dataclass
class Run:
    """A session whose worker the daemon supervises right now."""
    sid: int
    run_dir: Path
    handle: WorkerHandle | None = None
    want: str | None = None  # pause | cancel | shutdown | bounce | wall | hung
    detail: str = ""  # why the daemon stopped it (wall-clock limit, lost heartbeat)
    pending: dict = field(default_factory=dict)  # control id -> (msg, future)
    outbox: list = field(default_factory=list)  # control messages for the next worker (bounce)
    task: asyncio.Task | None = None
    slot: int = 0
    limits: Limits = field(default_factory=Limits)
    began: float = 0.0  # monotonic start of the current attempt
    life: float = 0.0  # monotonic time of the worker's last sign of life


class Supervisor:
    def __init__(self, store: Store, executor, sessions: Sessions, *, slots: int = 1, max_crashes: int = 3):
        self.store = store
        self.executor = executor
        self.sessions = sessions
        self.slots = max(0, slots)
        self.max_crashes = max(1, max_crashes)
        self.runs: dict[int, Run] = {}
        self.backoff: dict[int, float] = {}
        self.wake = asyncio.Event()
        self.stopping = False
        self.stopped = asyncio.Event()
        self.kicked: set[int] = set()
        self._watched = 0.0

    def supervised(self, sid: int) -> bool:
        return sid in self.runs

    # -- stopping workers ---------------------------------------------------------------------

    def stop_worker(self, sid: int, why: Want, detail: str = "") -> None:
        run = self.runs.get(sid)
        if run is None:
            return
        run.want = why
        run.detail = detail or run.detail
        if run.handle is None:  # still starting: _supervise stops it once it has a handle
            return
        if run.handle.adopted:
            run.handle.signal(signal.SIGTERM)
        else:
            asyncio.ensure_future(run.handle.send(protocol.control("pause")))
            # A worker still importing torch has no signal handler yet; the stdin message
            # waits for it. One that never exits is killed after KILL_AFTER_S.
        asyncio.get_running_loop().call_later(KILL_AFTER_S, self._kill_if_still, sid, run.handle)

    def _kill_if_still(self, sid: int, handle: WorkerHandle) -> None:
        run = self.runs.get(sid)
        if run is not None and run.handle is handle:
            log.warning("session %s: worker did not stop within %ss; killing it", sid, KILL_AFTER_S)
            handle.signal(signal.SIGKILL)

    # -- scheduling ---------------------------------------------------------------------------

    async def scheduler(self) -> None:
        while not self.stopping:
            try:
                self.schedule()
                self.watch(time.monotonic())
            except Exception:
                log.exception("scheduler step failed")
            try:
                await asyncio.wait_for(self.wake.wait(), 0.25)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    def schedule(self) -> None:
        if self.stopping:
            return
        free = self.slots - len(self.runs)
        if free <= 0:
            return
        now = time.monotonic()
        for row in self.store.schedulable():
            if row["id"] in self.runs or self.backoff.get(row["id"], 0) > now:
                continue
            self.launch(row)
            free -= 1
            if free <= 0:
                break

    def launch(self, row: dict, adopted: WorkerHandle | None = None) -> None:
        used = {r.slot for r in self.runs.values()}
        slot = next(i for i in range(len(self.runs) + 1) if i not in used)
        rd = self.sessions.run_dir(row)
        run = Run(row["id"], rd, slot=slot, limits=read_limits(rd))
        self.runs[row["id"]] = run
        run.task = asyncio.ensure_future(self._supervise(run, adopted))

    # -- the watchdog: wall-clock limit and heartbeat ----------------------------------------------

    def watch(self, now: float) -> None:
        if now - self._watched < WATCH_EVERY_S:
            return
        self._watched = now
        for run in list(self.runs.values()):
            if run.handle is None or run.want in tr.STOPPING:
                continue
            lim = run.limits
            if lim.max_wall_s and now - run.began > lim.max_wall_s:
                why = f"wall-clock limit reached ([runtime] max_wall_s = {lim.max_wall_s:g})"
                log.warning("session %s: %s; pausing it", run.sid, why)
                self.stop_worker(run.sid, Want.WALL, why)
                continue
            if lim.heartbeat_s:
                run.life = max(run.life, _files_life(run.run_dir, now))
                silent = now - run.life
                if silent > lim.heartbeat_s:
                    why = (f"no heartbeat for {silent:.0f}s ([runtime] heartbeat_s = {lim.heartbeat_s:g}): "
                           f"the worker hung{' (stopped, state T)' if _is_stopped(run.handle) else ''}; killed it")
                    log.warning("session %s: %s", run.sid, why)
                    run.want, run.detail = Want.HUNG, why
                    run.handle.signal(signal.SIGKILL)

    # -- one session's workers --------------------------------------------------------------------

    async def _supervise(self, run: Run, adopted: WorkerHandle | None) -> None:
        sid = run.sid
        try:
            while True:
                row = self.store.get(sid)
                ckpt = latest_checkpoint_step(run.run_dir)
                if adopted is not None:
                    handle, adopted = adopted, None
                    log.info("session %s: re-adopted worker pid %s", sid, handle.pid)
                    if (row["pid"], row["pid_start"]) != (handle.pid, handle.pid_start):
                        row = self.store.update(sid, pid=handle.pid, pid_start=handle.pid_start)
                    if row["want"] in (Want.PAUSE, Want.CANCEL):
                        run.want = row["want"]
                        handle.signal(signal.SIGTERM)
                else:
                    self.sessions.follow(row)  # follow the files from before the worker writes
                    resume = RunDir(run.run_dir).events.exists() or ckpt is not None
                    try:
                        handle = await self.executor.start(run.run_dir, resume=resume, slot=run.slot)
                    except OSError as e:
                        self.sessions.set_state(sid, state=S.FAILED, error=f"cannot start a worker: {e}",
                                                finished=time.time())
                        return
                    self.store.update(sid, attempts=row["attempts"] + 1, pid=handle.pid, pid_start=handle.pid_start,
                                      ckpt_step=ckpt, started=row["started"] or time.time())
                    log.info("session %s: worker pid %s started%s", sid, handle.pid, " (resume)" if resume else "")
                run.handle = handle
                run.began = run.life = time.monotonic()
                if row["state"] != S.RUNNING:
                    self.sessions.set_state(sid, state=S.RUNNING, error=None)
                if run.want in (Want.PAUSE, Want.CANCEL, Want.SHUTDOWN) and not handle.adopted:
                    self.stop_worker(sid, run.want)  # asked while the worker was starting
                for msg in run.outbox:
                    await handle.send(msg)
                run.outbox = []
                reader = asyncio.ensure_future(self._read(run, handle))
                code = await handle.wait()
                try:
                    await asyncio.wait_for(reader, 5.0)
                except asyncio.TimeoutError:
                    reader.cancel()
                nxt = await self._finish_attempt(run, code)
                if not nxt:
                    return
                if isinstance(nxt, WorkerHandle):
                    adopted = nxt
        except Exception:
            log.exception("session %s: supervision failed", sid)
            self.sessions.set_state(sid, state=S.INTERRUPTED, error="internal error in the runner; see daemon.log")
        finally:
            for _, fut in run.pending.values():
                if not fut.done():
                    fut.set_result(protocol.reject(None, "the worker exited before answering"))
            self.runs.pop(sid, None)
            self.wake.set()

    async def _read(self, run: Run, handle: WorkerHandle) -> None:
        async for msg in handle.messages():
            run.life = time.monotonic()  # any line is a heartbeat
            t = msg.get("type")
            if t in ("ack", "reject"):
                entry = run.pending.pop(msg.get("id"), None)
                if isinstance(msg.get("total_steps"), int):
                    self.sessions.follow(self.store.get(run.sid)).total_steps = msg["total_steps"]
                if entry and not entry[1].done():
                    entry[1].set_result(msg)
            elif t in ("metric", "event") and run.sid not in self.kicked:
                # The files are the truth; stdout only says when to look. Rows that arrive
                # within REFRESH_BATCH_S are read in one go (fast training: many per batch).
                self.kicked.add(run.sid)
                asyncio.get_running_loop().call_later(REFRESH_BATCH_S, self._kick, run.sid)

    def _kick(self, sid: int) -> None:
        self.kicked.discard(sid)
        row = self.store.get(sid)
        if row is not None:
            self.sessions.refresh(row)

    async def _finish_attempt(self, run: Run, code: int | None) -> "bool | WorkerHandle":
        """Apply the transition after a worker exited: False when the supervision ends,
        True to start another worker now, or a worker to follow instead."""
        sid = run.sid
        row = self.store.get(sid)
        t = self.sessions.refresh(row)
        end = last_end_event(run.run_dir)
        want = run.want or row["want"]
        last = t.last_event or {}
        reason = (end or {}).get("reason") or last.get("reason") or last.get("message")
        run.handle = None
        log.info("session %s: worker exited %s (end: %s, want: %s)", sid, code, (end or {}).get("state"), want)
        self._settle_pending(run, end)
        progress = (latest_checkpoint_step(run.run_dir) or -1) > (row["ckpt_step"] if row["ckpt_step"] is not None else -1)
        out = tr.on_exit(code=code, want=want, end_state=(end or {}).get("state"), reason=reason,
                         crashes=row["crashes"], max_crashes=self.max_crashes, progress=progress, detail=run.detail)
        if out.action == "restart":
            run.want = None
            self.store.update(sid, want=None)
            return True
        if out.action == "find_holder":
            other = await self.executor.adopt(run.run_dir, None, None)
            if other is not None:
                log.info("session %s: another worker (pid %s) holds the run; following it", sid, other.pid)
                self.store.update(sid, pid=other.pid, pid_start=other.pid_start)
                return other
        if out.backoff_s:
            self.backoff[sid] = time.monotonic() + out.backoff_s
        run.want, run.detail = None, ""
        self.sessions.set_state(sid, **out.fields(time.time()))
        callback.fire(getattr(self.sessions, "ws", run.run_dir.parent.parent), self.store.get(sid) or {},
                      run.run_dir)  # at a session's end: the [callback] command, in the background
        return False

    def _settle_pending(self, run: Run, end: dict | None) -> None:
        queued = {m["id"] for m in run.outbox}
        for mid, (msg, fut) in list(run.pending.items()):
            if mid in queued:
                continue
            if not fut.done():
                if msg["type"] == "pause" and end and end.get("state") == RunEnd.PAUSED:
                    fut.set_result(protocol.ack(mid, int(end.get("step", 0))))
                else:
                    fut.set_result(protocol.reject(mid, "the worker exited before answering"))
            run.pending.pop(mid, None)

    # -- start-up and shut-down -------------------------------------------------------------------

    async def recover(self) -> None:
        """After a start (perhaps after a crash of the previous daemon): re-adopt workers
        that still run, settle sessions whose worker ended meanwhile."""
        for row in self.store.by_state(S.RUNNING):
            rd = self.sessions.run_dir(row)
            handle = await self.executor.adopt(rd, row["pid"], row["pid_start"])
            if handle is not None:
                self.launch(row, adopted=handle)
                continue
            end = last_end_event(rd) or {}
            out = tr.on_recover(row["want"], end.get("state"), end.get("reason"))
            self.sessions.set_state(row["id"], **out.fields(time.time()))

    async def shutdown(self, grace: float = STOP_GRACE_S) -> "StopReport":
        """Pause every running worker at a checkpoint; kill the ones that have not exited
        after ``grace`` seconds (at once for a worker stopped by SIGSTOP, which cannot). The
        sessions end ``paused`` (marked for `daemon start`). Says which were killed and
        which, if any, are still alive."""
        self.stopping = True
        sids = list(self.runs)
        for sid in sids:
            self.stop_worker(sid, Want.SHUTDOWN)
        killed: list[int] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.runs and loop.time() < deadline:
            for run in list(self.runs.values()):
                if run.handle is not None and run.sid not in killed and _is_stopped(run.handle) \
                        and loop.time() > deadline - grace + STOPPED_KILL_S:
                    log.warning("session %s: worker pid %s is stopped (SIGSTOP) and cannot checkpoint; killing it",
                                run.sid, run.handle.pid)
                    killed.append(run.sid)
                    run.handle.signal(signal.SIGKILL)
            await asyncio.sleep(0.1)
        for run in list(self.runs.values()):
            if run.handle is not None and run.sid not in killed:
                log.warning("session %s: worker pid %s did not stop within %ss; killing it", run.sid,
                            run.handle.pid, grace)
                killed.append(run.sid)
                run.handle.signal(signal.SIGKILL)
        tasks = [r.task for r in self.runs.values() if r.task]
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)
        alive = sorted(self.runs)
        if alive:
            log.error("%d workers are still alive after SIGKILL: sessions %s", len(alive), alive)
        await callback.stop()  # before the loop ends: a callback never outlives its daemon
        self.stopped.set()
        return StopReport(paused=[s for s in sids if s not in killed], killed=killed, alive=alive)


@dataclass(frozen=True)
class StopReport:
    """What `daemon stop` did to the sessions that were running (their ids)."""
    paused: list  # checkpointed and exited
    killed: list  # did not stop in time (or could not: SIGSTOP)
    alive: list  # still alive after SIGKILL


def _is_stopped(handle: WorkerHandle) -> bool:
    pid = getattr(handle, "local_pid", None)
    return bool(pid) and proc_state(pid) == "T"


def _files_life(run_dir: Path, now: float) -> float:
    """The monotonic time of the newest write to the run's files (0 when none)."""
    wall = time.time()
    newest = 0.0
    rd = RunDir(run_dir)
    for path in (rd.metrics, rd.events, rd.log):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            pass
    return now - (wall - newest) if newest else 0.0
