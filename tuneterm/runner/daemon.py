"""The runner daemon's brain: queue operations, the scheduler, worker supervision and
recovery (no torch, no textual). The socket side is in ``server.py``; ``python -m
tuneterm.runner.daemon`` starts it (see ``main``).

Everything runs on one asyncio loop, so state changes, tail reads and broadcasts never
interleave: a subscriber registered between two loop steps sees every row exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm import protocol
from tuneterm.errors import UserError
from tuneterm.runner.executor import Executor, WorkerHandle
from tuneterm.runner.store import ACTIVE, TERMINAL, Store
from tuneterm.runner.tail import Tailer, last_end_event, latest_checkpoint_step
from tuneterm.workspace import inside, new_run_id, runs_dir

log = logging.getLogger("tuneterm.runner")

EXIT_OK, EXIT_FAILED, EXIT_BAD, EXIT_LOCKED, EXIT_PAUSED = 0, 1, 2, 73, 75
KILL_AFTER_S = 120.0  # a worker asked to pause/cancel that has not exited by then is killed
MAX_SESSION_BYTES = 1 << 20
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


class Daemon:
    def __init__(self, ws: Path, store: Store, executor: Executor, *, slots: int = 1, max_crashes: int = 3,
                 python: str = sys.executable):
        self.ws = ws
        self.store = store
        self.executor = executor
        self.slots = max(0, slots)
        self.max_crashes = max(1, max_crashes)
        self.python = python
        self.runs: dict[int, Run] = {}
        self.tails: dict[int, Tailer] = {}
        self.subs: dict[int, set[asyncio.Queue]] = defaultdict(set)
        self.backoff: dict[int, float] = {}
        self.wake = asyncio.Event()
        self.stopping = False
        self.stopped = asyncio.Event()
        self.started = time.time()
        self._runs = str(runs_dir(ws))
        self._blank = Tailer(Path(os.devnull))
        self._kicked: set[int] = set()

    # -- lookups and views ---------------------------------------------------------------

    def resolve(self, ref) -> dict:
        if ref is None or ref == "":
            raise UserError("no session given")
        if isinstance(ref, str) and ("/" in ref or ref.endswith(".toml")):
            ref = Path(ref.rstrip("/")).name if "/" in ref else ref
        hits = self.store.find(ref)
        if not hits:
            raise UserError(f"no session {ref!r} in the queue")
        if len(hits) > 1:
            raise UserError(f"session {ref!r} is ambiguous: " + ", ".join(h["run_id"] for h in hits[:5]))
        return hits[0]

    def run_dir(self, row: dict) -> Path:
        return runs_dir(self.ws) / row["run_id"]

    def _run_dir_str(self, row: dict) -> str:
        return f"{self._runs}{os.sep}{row['run_id']}"  # no pathlib: `queue ls` of 1,000 rows

    def tail(self, row: dict) -> Tailer:
        t = self.tails.get(row["id"])
        if t is None:
            t = self.tails[row["id"]] = Tailer(self.run_dir(row))
        return t

    def refresh(self, row: dict) -> Tailer:
        """Read what the run's files gained and send it to the session's subscribers."""
        t = self.tail(row)
        for kind, data in t.refresh():
            self._broadcast(row["id"], {"v": protocol.VERSION, "type": kind, "data": data})
        return t

    def view(self, row: dict, index: int | None = None) -> dict:
        sid = row["id"]
        if row["attempts"] == 0 and sid not in self.runs and sid not in self.subs:
            t = self._blank  # never started: no files to look at
        else:
            t = self.refresh(row)
        if index is None:
            index = self.store.index_of(row["id"])
        running = row["state"] == "running"
        return {
            "id": row["id"], "run_id": row["run_id"], "name": row["name"], "model": row["model"],
            "data": row["data"], "state": row["state"], "position": index + 1, "step": t.step,
            "total_steps": t.total_steps, "epoch": t.epoch, "loss": t.loss,
            "best_metric": dict(t.best) if t.best else None, "eta_s": t.eta_s() if running else None,
            "run_dir": self._run_dir_str(row), "created": row["created"], "started": row["started"],
            "finished": row["finished"], "attempts": row["attempts"], "crashes": row["crashes"],
            "error": row["error"], "result": row["result"], "want": row["want"],
            "pid": row["pid"] if running else None,
        }

    def list(self) -> list[dict]:
        return [self.view(r, i) for i, r in enumerate(self.store.all())]

    def _set(self, sid: int, **fields) -> dict:
        row = self.store.update(sid, **fields)
        if "state" in fields:
            log.info("session %s (%s): %s%s", sid, row["run_id"], row["state"],
                     f" — {row['error']}" if row.get("error") else "")
            self._broadcast(sid, {"v": protocol.VERSION, "type": "state", "state": row["state"],
                                  "session": self.view(row)})
            if row["state"] in TERMINAL:
                for q in self.subs.pop(sid, set()):
                    q.put_nowait({"v": protocol.VERSION, "type": "end", "state": row["state"]})
            self.wake.set()
        return row

    def _broadcast(self, sid: int, msg: dict) -> None:
        for q in self.subs.get(sid, ()):
            q.put_nowait(msg)

    # -- queue requests ---------------------------------------------------------------------

    async def add(self, path: str, *, smoke: bool, check: bool, key: str | None) -> dict:
        if key and (row := self.store.by_key(key)):
            return self.view(row)
        src = inside(self.ws, path, "session file")
        if not src.is_file():
            raise UserError(f"no session file {path}")
        data = src.read_bytes()
        if len(data) > MAX_SESSION_BYTES:
            raise UserError(f"{path}: a session file is at most {MAX_SESSION_BYTES} bytes")
        try:
            doc = tomllib.loads(data.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"{src}: not a TOML file: {e}") from None
        name = str(doc.get("session", {}).get("name") or src.stem)
        if check:
            await self._preflight(src, data, smoke)
        if key and (row := self.store.by_key(key)):  # the same request, answered meanwhile
            return self.view(row)
        for _ in range(100):  # run ids carry a second and 16 random bits: collisions happen
            run_id = new_run_id(name)
            rd = runs_dir(self.ws) / run_id
            try:
                rd.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        else:
            raise UserError(f"could not find a free run id for {name!r}")
        _write_durably(rd / "session.toml", data)
        row = self.store.add(run_id=run_id, name=name, model=str(doc.get("model", {}).get("source", "")),
                             data=str(doc.get("data", {}).get("source", "")), key=key)
        log.info("queued %s (%s) from %s", row["id"], run_id, src)
        self.wake.set()
        return self.view(row)

    async def _preflight(self, src: Path, data: bytes, smoke: bool) -> None:
        """`tuneterm validate` in a subprocess (the daemon never imports the engine) on
        the exact bytes that will be queued."""
        tmpdir = self.ws / ".tuneterm" / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"check-{os.getpid()}-{protocol.new_id()}.toml"
        tmp.write_bytes(data)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "tuneterm", "validate", str(tmp), "--workspace", str(self.ws),
                "--smoke" if smoke else "--deep", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(self.ws))
            out, err = await proc.communicate()
        finally:
            tmp.unlink(missing_ok=True)
        if proc.returncode != 0:
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            msg = lines[0] if lines else f"the check exited with {proc.returncode}"
            raise UserError(msg.replace(str(tmp), str(src)))

    def pause(self, ref) -> dict:
        row = self.resolve(ref)
        st = row["state"]
        if row["id"] in self.runs:  # running, or its worker is being started right now
            row = self.store.update(row["id"], want="pause")
            self._stop_worker(row["id"], "pause")
        elif st in ("queued", "interrupted"):
            row = self._set(row["id"], state="paused")
        elif st == "running":
            row = self.store.update(row["id"], want="pause")
            self._stop_worker(row["id"], "pause")
        elif st != "paused":
            raise UserError(f"session {row['run_id']} is {st}; only queued or running sessions pause")
        return self.view(row)

    def resume(self, ref) -> dict:
        row = self.resolve(ref)
        st = row["state"]
        if st in ("paused", "interrupted"):
            row = self._set(row["id"], state="queued", want=None, crashes=0, error=None)
        elif st == "running" and row["want"] == "pause":
            raise UserError(f"session {row['run_id']} is pausing; resume it once it is paused")
        elif st not in ("queued", "running"):
            raise UserError(f"session {row['run_id']} is {st}; use `queue retry` to run it again")
        return self.view(row)

    def cancel(self, ref) -> dict:
        row = self.resolve(ref)
        st = row["state"]
        if row["id"] in self.runs:  # running, or its worker is being started right now
            row = self.store.update(row["id"], want="cancel")
            self._stop_worker(row["id"], "cancel")
        elif st in ("queued", "paused", "interrupted"):
            row = self._set(row["id"], state="cancelled", finished=time.time())
        elif st == "running":
            row = self.store.update(row["id"], want="cancel")
            self._stop_worker(row["id"], "cancel")
        elif st != "cancelled":
            raise UserError(f"session {row['run_id']} is already {st}")
        return self.view(row)

    def retry(self, ref) -> dict:
        row = self.resolve(ref)
        st = row["state"]
        if st not in ("failed", "cancelled", "interrupted"):
            raise UserError(f"session {row['run_id']} is {st}; only failed, cancelled or interrupted "
                            "sessions can be retried")
        row = self._set(row["id"], state="queued", want=None, crashes=0, error=None, result=None, finished=None)
        return self.view(row)

    def move(self, ref, to: int | None, by: int | None) -> dict:
        row = self.resolve(ref)
        if (to is None) == (by is None):
            raise UserError("move: give exactly one of to or by")
        for v in (to, by):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise UserError("move: to/by must be integers")
        index = (to - 1) if to is not None else self.store.index_of(row["id"]) + by
        self.store.move(row["id"], index)
        self.wake.set()
        return self.view(self.store.get(row["id"]))

    async def control(self, ref, msg: dict, wait: float) -> dict:
        row = self.resolve(ref)
        try:
            msg = protocol.check_control(dict(msg))
        except protocol.ProtocolError as e:
            raise UserError(str(e)) from None
        mid = msg.get("id") or protocol.new_id()
        msg = {**msg, "v": protocol.VERSION, "id": mid}
        run = self.runs.get(row["id"])
        if run is None or run.handle is None or row["state"] != "running":
            return protocol.reject(mid, f"session {row['run_id']} is {row['state']}, not running")
        if run.want in ("pause", "cancel", "shutdown"):
            return protocol.reject(mid, f"session {row['run_id']} is stopping ({run.want})")
        if msg["type"] in ("pause",):
            self.store.update(row["id"], want="pause")
        fut = asyncio.get_running_loop().create_future()
        run.pending[mid] = (msg, fut)
        if run.handle.adopted:
            # No pipe to a re-adopted worker: pause it (SIGTERM) and continue under a new
            # worker that gets the message (docs/runner.md, "Re-adoption").
            if msg["type"] == "pause":
                run.want = "pause"
                run.handle.signal(signal.SIGTERM)
            else:
                run.outbox.append(msg)
                if run.want != "bounce":
                    run.want = "bounce"
                    run.handle.signal(signal.SIGTERM)
        elif not await run.handle.send(msg):
            run.pending.pop(mid, None)
            return protocol.reject(mid, "the worker no longer reads control messages (it is exiting)")
        if msg["type"] == "pause":
            run.want = "pause"
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            return protocol.reject(mid, f"no answer from the worker within {wait:g}s; it may still apply the "
                                        "message (see the run's events)")

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

    def status(self) -> dict:
        counts = {s: 0 for s in ("queued", "running", "paused", "done", "failed", "cancelled", "interrupted")}
        for (state, n) in self.store.db.execute("SELECT state, COUNT(*) FROM sessions GROUP BY state"):
            counts[state] = n
        return {"pid": os.getpid(), "workspace": str(self.ws), "slots": self.slots,
                "max_crashes": self.max_crashes, "uptime_s": round(time.time() - self.started, 1),
                "counts": counts, "active": sum(counts[s] for s in ACTIVE)}


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    from tuneterm.runner.server import main as server_main

    return server_main(argv)


if __name__ == "__main__":
    sys.exit(main())
