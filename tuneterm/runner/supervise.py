"""Scheduling, worker supervision and recovery: the half of the daemon that deals with
workers (no torch, no textual). ``Daemon`` (daemon.py) mixes this in; everything runs on
the daemon's one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm import protocol
from tuneterm.runner.executor import WorkerHandle
from tuneterm.runner.tail import last_end_event, latest_checkpoint_step

log = logging.getLogger("tuneterm.runner")

EXIT_OK, EXIT_FAILED, EXIT_BAD, EXIT_LOCKED, EXIT_PAUSED = 0, 1, 2, 73, 75
KILL_AFTER_S = 120.0  # a worker asked to pause/cancel that has not exited by then is killed
REFRESH_BATCH_S = 0.02  # streamed rows are at most this much later than the worker's line


@dataclass
class Run:
    """A session whose worker the daemon supervises right now."""
    sid: int
    run_dir: Path
    handle: WorkerHandle | None = None
    want: str | None = None  # pause | cancel | shutdown | bounce
    pending: dict = field(default_factory=dict)  # control id -> (msg, future)
    outbox: list = field(default_factory=list)  # control messages for the next worker (bounce)
    task: asyncio.Task | None = None
    slot: int = 0


def _signame(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Supervision:
    """Mixed into Daemon: uses its store, executor, runs, tails, subs, backoff, wake,
    stopping/stopped, slots, max_crashes and its _set/_broadcast/refresh/tail/run_dir."""

    def _stop_worker(self, sid: int, why: str) -> None:
        run = self.runs.get(sid)
        if run is None:
            return
        run.want = why
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

    # -- scheduling and supervision -----------------------------------------------------------

    async def scheduler(self) -> None:
        while not self.stopping:
            try:
                self.schedule()
                for sid in list(self.runs) + [s for s in self.subs if s not in self.runs]:
                    row = self.store.get(sid)
                    if row:
                        self.refresh(row)
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
        for row in self.store.db.execute(
                "SELECT * FROM sessions WHERE state IN ('queued', 'interrupted') ORDER BY position, id"):
            row = dict(row)
            if row["id"] in self.runs or self.backoff.get(row["id"], 0) > now:
                continue
            self.launch(row)
            free -= 1
            if free <= 0:
                break

    def launch(self, row: dict, adopted: WorkerHandle | None = None) -> None:
        used = {r.slot for r in self.runs.values()}
        slot = next(i for i in range(len(self.runs) + 1) if i not in used)
        run = Run(row["id"], self.run_dir(row), slot=slot)
        self.runs[row["id"]] = run
        run.task = asyncio.ensure_future(self._supervise(run, adopted))

    async def _supervise(self, run: Run, adopted: WorkerHandle | None) -> None:
        sid = run.sid
        try:
            while True:
                row = self.store.get(sid)
                ckpt = latest_checkpoint_step(run.run_dir)
                if adopted is not None:
                    handle, adopted = adopted, None
                    log.info("session %s: re-adopted worker pid %s", sid, handle.pid)
                    if row["want"] in ("pause", "cancel"):
                        run.want = row["want"]
                        handle.signal(signal.SIGTERM)
                else:
                    self.tail(row)  # follow the files from before the worker writes
                    resume = (run.run_dir / "events.jsonl").exists() or ckpt is not None
                    try:
                        handle = await self.executor.start(run.run_dir, resume=resume, slot=run.slot)
                    except OSError as e:
                        self._set(sid, state="failed", error=f"cannot start a worker: {e}",
                                  finished=time.time())
                        return
                    self.store.update(sid, attempts=row["attempts"] + 1, pid=handle.pid, pid_start=handle.pid_start,
                                      ckpt_step=ckpt, started=row["started"] or time.time())
                    log.info("session %s: worker pid %s started%s", sid, handle.pid, " (resume)" if resume else "")
                run.handle = handle
                if row["state"] != "running":
                    self._set(sid, state="running", error=None)
                if run.want in ("pause", "cancel", "shutdown") and not handle.adopted:
                    self._stop_worker(sid, run.want)  # asked while the worker was starting
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
            self._set(sid, state="interrupted", error="internal error in the runner; see daemon.log")
        finally:
            for _, fut in run.pending.values():
                if not fut.done():
                    fut.set_result(protocol.reject(None, "the worker exited before answering"))
            self.runs.pop(sid, None)
            self.wake.set()

    async def _read(self, run: Run, handle: WorkerHandle) -> None:
        async for msg in handle.messages():
            t = msg.get("type")
            if t in ("ack", "reject"):
                entry = run.pending.pop(msg.get("id"), None)
                if isinstance(msg.get("total_steps"), int) and run.sid in self.tails:
                    self.tails[run.sid].total_steps = msg["total_steps"]
                if entry and not entry[1].done():
                    entry[1].set_result(msg)
            elif t in ("metric", "event") and run.sid not in self._kicked:
                # The files are the truth; stdout only says when to look. Rows that arrive
                # within REFRESH_BATCH_S are read in one go (fast training: many per batch).
                self._kicked.add(run.sid)
                asyncio.get_running_loop().call_later(REFRESH_BATCH_S, self._kick, run.sid)

    def _kick(self, sid: int) -> None:
        self._kicked.discard(sid)
        tail = self.tails.get(sid)
        if tail is not None:
            for kind, data in tail.refresh():
                self._broadcast(sid, {"v": protocol.VERSION, "type": kind, "data": data})

    async def _finish_attempt(self, run: Run, code: int | None) -> "bool | WorkerHandle":
        """Decide the session's state after a worker exited: False when the supervision
        ends, True to start another worker now, or a worker to follow instead."""
        sid = run.sid
        row = self.store.get(sid)
        t = self.refresh(row)
        end = last_end_event(run.run_dir)
        end_state = end.get("state") if end else None
        want = run.want or row["want"]
        reason = (end or {}).get("reason") or (t.last_event or {}).get("reason") or (t.last_event or {}).get("message")
        run.handle = None
        if code is None:  # an adopted worker: its end row is all there is
            code = {"done": 0, "early_stopped": 0, "stopped": 0, "paused": EXIT_PAUSED,
                    "failed": EXIT_FAILED}.get(end_state, -9)
        log.info("session %s: worker exited %s (end: %s, want: %s)", sid, code, end_state, want)
        self._settle_pending(run, end)
        now = time.time()
        if code == EXIT_OK:
            self._set(sid, state="done", result=end_state or "done", want=None, crashes=0, finished=now, pid=None)
        elif code == EXIT_PAUSED or (code < 0 and want in ("pause", "cancel", "shutdown")):
            if want == "bounce":
                run.want = None
                self.store.update(sid, want=None)
                return True
            if want == "cancel":
                self._set(sid, state="cancelled", want=None, finished=now, pid=None)
            elif want == "shutdown":
                self._set(sid, state="interrupted", want=None, pid=None, error="the daemon stopped; resumes on start")
            else:
                self._set(sid, state="paused", want=None, pid=None, crashes=0)
        elif code == EXIT_LOCKED:
            # Another worker holds the run: one a dead daemon started whose pid we never
            # recorded. Follow it when we can find it; else wait and try again.
            other = self.executor.adopt(run.run_dir, None, None)
            if other is not None:
                log.info("session %s: another worker (pid %s) holds the run; following it", sid, other.pid)
                self.store.update(sid, pid=other.pid, pid_start=other.pid_start)
                return other
            self.backoff[sid] = time.monotonic() + 5.0
            self._set(sid, state="interrupted", pid=None, error="another worker holds the run; retrying")
        elif code in (EXIT_FAILED, EXIT_BAD):
            what = "training failed" if code == EXIT_FAILED else "bad session or run directory"
            self._set(sid, state="failed", want=None, pid=None, finished=now,
                      error=f"{what}: {reason}" if reason else what)
        else:
            how = f"killed by {_signame(code)}" if code < 0 else f"exit code {code}"
            progress = (latest_checkpoint_step(run.run_dir) or -1) > (row["ckpt_step"] if row["ckpt_step"] is not None else -1)
            crashes = 1 if progress else row["crashes"] + 1
            if want == "cancel":
                self._set(sid, state="cancelled", want=None, finished=now, pid=None)
            elif crashes >= self.max_crashes:
                self._set(sid, state="failed", crashes=crashes, want=None, pid=None, finished=now,
                          error=f"the worker crashed {crashes} times in a row (last: {how})")
            else:
                self.backoff[sid] = time.monotonic() + 0.5
                self._set(sid, state="interrupted", crashes=crashes, pid=None,
                          error=f"the worker crashed ({how}); resuming from the last checkpoint")
        return False

    def _settle_pending(self, run: Run, end: dict | None) -> None:
        queued = {m["id"] for m in run.outbox}
        for mid, (msg, fut) in list(run.pending.items()):
            if mid in queued:
                continue
            if not fut.done():
                if msg["type"] == "pause" and end and end.get("state") == "paused":
                    fut.set_result(protocol.ack(mid, int(end.get("step", 0))))
                else:
                    fut.set_result(protocol.reject(mid, "the worker exited before answering"))
            run.pending.pop(mid, None)

    # -- start-up and shut-down -------------------------------------------------------------------

    def recover(self) -> None:
        """After a start (perhaps after a crash of the previous daemon): re-adopt workers
        that still run, settle sessions whose worker ended meanwhile."""
        for row in self.store.all():
            if row["state"] != "running":
                continue
            rd = self.run_dir(row)
            handle = self.executor.adopt(rd, row["pid"], row["pid_start"])
            if handle is not None:
                self.launch(row, adopted=handle)
                continue
            end = last_end_event(rd)
            st = end.get("state") if end else None
            if st in ("done", "early_stopped", "stopped"):
                self._set(row["id"], state="done", result=st, want=None, pid=None, finished=time.time())
            elif st == "failed":
                self._set(row["id"], state="failed", want=None, pid=None, finished=time.time(),
                          error=f"training failed: {end.get('reason', '')}".rstrip(": "))
            elif st == "paused" and row["want"] in ("pause", "cancel"):
                self._set(row["id"], state="paused" if row["want"] == "pause" else "cancelled", want=None, pid=None)
            elif row["want"] == "cancel":
                self._set(row["id"], state="cancelled", want=None, pid=None, finished=time.time())
            else:
                self._set(row["id"], state="interrupted", pid=None,
                          error="the worker ended while no daemon ran; resuming from the last checkpoint")

    async def shutdown(self, timeout: float = 60.0) -> None:
        """Pause every running worker at a checkpoint (they resume on the next start)."""
        self.stopping = True
        for sid in list(self.runs):
            self._stop_worker(sid, "shutdown")
        tasks = [r.task for r in self.runs.values() if r.task]
        if tasks:
            done, left = await asyncio.wait(tasks, timeout=timeout)
            if left:
                log.warning("%d workers did not pause within %ss; they keep running and will be re-adopted",
                            len(left), timeout)
        self.stopped.set()

