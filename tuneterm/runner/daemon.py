"""The runner daemon's brain: queue requests and the session views (no torch, no
textual). Workers are the ``Supervisor``'s (supervise.py), states change only as
``transitions.py`` says; the socket side is in ``server.py``; ``python -m tuneterm.runner``
starts the process.

Everything runs on one asyncio loop, so state changes, tail reads and broadcasts never
interleave: a subscriber registered between two loop steps sees every row exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from tuneterm import protocol
from tuneterm.errors import UserError
from tuneterm.rundir import RunDir, append_rejection, write_atomic
from tuneterm.runner.executor import Executor
from tuneterm.runner import transitions
from tuneterm.runner.queries import Queue
from tuneterm.runner.rebuild import reconcile, write_queue_row
from tuneterm.runner.store import Store
from tuneterm.runner.supervise import StopReport, Supervisor
from tuneterm.runner.tail import Tailer
from tuneterm.session.problems import Problem
from tuneterm.states import ACTIVE_STATES, SessionState, Want, is_finished
from tuneterm.workspace import Workspace, inside, new_run_id

log = logging.getLogger("tuneterm.runner")
HANDLE_WAIT_S = 30.0  # a control message to a session whose worker is starting waits this long

MAX_SESSION_BYTES = 1 << 20


def check_failure(out: bytes, err: bytes, code: int | None) -> str:
    """Why `validate --json` refused a session: its first problem. Whatever else it wrote
    on stderr (a library's warning) is not the reason; a check that crashed is its own
    `tuneterm: error:` line, else the last line of its stderr (a traceback's exception)."""
    try:
        problems = [p for f in json.loads(out)["files"] for p in f["problems"]]
        return str(Problem(**problems[0]))
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    own = [ln.removeprefix("tuneterm: error: ") for ln in lines if ln.startswith("tuneterm: ")]
    return (own or lines or [f"the check exited with {code}"])[-1]


class Daemon:
    """Queue requests and session views; workers are the Supervisor's (``self.sup``)."""

    def __init__(self, ws: Workspace, store: Store, executor: Executor, *, slots: int = 1, max_crashes: int = 3,
                 python: str = sys.executable):
        self.ws = Workspace.resolve(ws)
        self.store = store
        self.executor = executor
        self.python = python
        self.sup = Supervisor(store, executor, self, slots=slots, max_crashes=max_crashes)
        self.tails: dict[int, Tailer] = {}
        self.subs: dict[int, set[asyncio.Queue]] = defaultdict(set)
        self.started = time.time()
        self.recovery: asyncio.Future | None = None
        self.last_stop: StopReport | None = None
        self.queue = Queue(store, self.ws.runs, self._live_tail)
        store.on_damage = self._refill

    def _refill(self, store: Store, reason: str, aside: Path | None) -> None:
        """The database was damaged under us (store.heal replaced it): rebuild its rows from
        the run directories and the workers this daemon supervises."""
        live = {r.run_dir.name: {"pid": r.handle.pid, "pid_start": r.handle.pid_start}
                for r in self.sup.runs.values() if r.handle is not None}
        reconcile(store, self.ws.runs, live, starting=False,
                  why=f"the database was damaged under the running daemon ({reason}); the damaged file is "
                      f"{aside.name if aside else 'gone'}")

    # -- the supervisor's side, as the server sees it -------------------------------------------

    @property
    def runs(self) -> dict:
        return self.sup.runs

    @property
    def stopped(self) -> asyncio.Event:
        return self.sup.stopped

    def recover(self) -> None:
        """Give back their rows to run directories the database lost, then start
        re-adopting the workers of a previous daemon (the scheduler waits for it)."""
        reconcile(self.store, self.ws.runs, why="the queue database did not have them (a 0-byte or "
                  "lost file, a lost -wal, or one moved aside as corrupt)")
        self.recovery = asyncio.ensure_future(self.sup.recover())

    async def scheduler(self) -> None:
        if self.recovery is not None:
            try:
                await self.recovery
            except Exception:
                log.exception("recovery failed")
        await self.sup.scheduler()

    async def shutdown(self, timeout: float | None = None) -> StopReport:
        if self.recovery is not None and not self.recovery.done():
            await asyncio.wait([self.recovery], timeout=30)
        summary = await self.sup.shutdown(**({"grace": timeout} if timeout is not None else {}))
        log.info("daemon stop: paused %s, killed %s, still alive %s",
                 summary.paused, summary.killed, summary.alive)
        self.last_stop = summary
        return summary

    # -- lookups and views ---------------------------------------------------------------

    def resolve(self, ref) -> dict:
        return self.queue.resolve(ref)

    def view(self, row: dict, index: int | None = None) -> dict:
        return self.queue.view(row, index)

    def list(self) -> list[dict]:
        return self.queue.list()

    def _live_tail(self, row: dict) -> Tailer | None:
        """A view's figures: the session's live tail, refreshed (and what it gained sent to
        its subscribers); None for one never started, which has no files to look at."""
        sid = row["id"]
        if row["attempts"] == 0 and sid not in self.runs and sid not in self.subs:
            return None
        return self.refresh(row)

    def run_dir(self, row: dict) -> Path:
        return self.ws.run_dir(row["run_id"])

    def follow(self, row: dict) -> Tailer:
        t = self.tails.get(row["id"])
        if t is None:
            t = self.tails[row["id"]] = Tailer(self.run_dir(row))
        return t

    def refresh(self, row: dict) -> Tailer:
        """Read what the run's files gained and send it to the session's subscribers."""
        t = self.follow(row)
        for kind, data in t.refresh():
            self._broadcast(row["id"], {"v": protocol.VERSION, "type": kind, "data": data})
        return t

    def set_state(self, sid: int, **fields) -> dict:
        row = self.store.update(sid, **fields)
        if "state" in fields:
            log.info("session %s (%s): %s%s", sid, row["run_id"], row["state"],
                     f" — {row['error']}" if row.get("error") else "")
            self._broadcast(sid, {"v": protocol.VERSION, "type": "state", "state": row["state"],
                                  "session": self.view(row)})
            if is_finished(row["state"]):
                for q in self.subs.pop(sid, set()):
                    q.put_nowait({"v": protocol.VERSION, "type": "end", "state": row["state"]})
            self.sup.wake.set()
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
            rd = self.ws.run_dir(run_id)
            try:
                rd.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        else:
            raise UserError(f"could not find a free run id for {name!r}")
        write_atomic(RunDir(rd).session, data)
        row = self.store.add(run_id=run_id, name=name, model=str(doc.get("model", {}).get("source", "")),
                             data=str(doc.get("data", {}).get("source", "")), key=key)
        write_queue_row(rd, row)  # what a rebuild of a lost queue needs
        log.info("queued %s (%s) from %s", row["id"], run_id, src)
        self.sup.wake.set()
        return self.view(row)

    async def _preflight(self, src: Path, data: bytes, smoke: bool) -> None:
        """`tuneterm validate` in a subprocess (the daemon never imports the engine) on
        the exact bytes that will be queued."""
        tmpdir = self.ws.tmp
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"check-{os.getpid()}-{protocol.new_id()}.toml"
        tmp.write_bytes(data)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "tuneterm", "validate", str(tmp), "--workspace", str(self.ws),
                "--smoke" if smoke else "--deep", "--json", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(self.ws))
            out, err = await proc.communicate()
        finally:
            tmp.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise UserError(check_failure(out, err, proc.returncode).replace(str(tmp), str(src)))

    def pause(self, ref) -> dict:
        return self._request("pause", ref)

    def resume(self, ref) -> dict:
        return self._request("resume", ref)

    def cancel(self, ref) -> dict:
        return self._request("cancel", ref)

    def retry(self, ref) -> dict:
        return self._request("retry", ref)

    def _request(self, verb: str, ref) -> dict:
        row = self.resolve(ref)
        try:
            out = transitions.on_request(verb, row["state"], row["want"], self.sup.supervised(row["id"]))
        except UserError as e:
            raise UserError(f"session {row['run_id']} {e}") from None
        fields = out.fields(time.time())
        if "state" in fields:
            row = self.set_state(row["id"], **fields)
        elif fields:
            row = self.store.update(row["id"], **fields)
        if out.action == "stop":  # out.want says why (pause or cancel)
            self.sup.stop_worker(row["id"], out.want)
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
        for r in self.store.all():  # the run directories' copies keep the order for a rebuild
            rd = self.ws.run_dir(r["run_id"])
            if RunDir(rd).queue_row.is_file():
                write_queue_row(rd, r, durable=False)
        self.sup.wake.set()
        return self.view(self.store.get(row["id"]))

    async def control(self, ref, msg: dict, wait: float) -> dict:
        if self.recovery is not None and not self.recovery.done():
            # Just started: the workers of the previous daemon are being re-adopted.
            await asyncio.wait([self.recovery], timeout=wait)
            await asyncio.sleep(0)  # each adopted run's supervision takes its handle
        row = self.resolve(ref)
        try:
            protocol.Command.parse(msg)
        except protocol.ProtocolError as e:
            raise UserError(str(e)) from None
        mid = msg.get("id") or protocol.new_id()
        msg = {**msg, "v": protocol.VERSION, "id": mid}
        run = self.runs.get(row["id"])
        # A running session whose worker is starting or being re-adopted (a Ray group is
        # found again by asking its actors) gets its control channel in a moment: wait for it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, HANDLE_WAIT_S)
        while row["state"] == SessionState.RUNNING and (run is None or run.handle is None) \
                and loop.time() < deadline:
            await asyncio.sleep(0.05)
            row, run = self.resolve(ref), self.runs.get(row["id"])
        if row["state"] != SessionState.RUNNING:
            return self._refuse(row, msg, f"session {row['run_id']} is {row['state']}, not running")
        if run is None or run.handle is None:
            return self._refuse(row, msg, f"session {row['run_id']} is starting: its worker does not read "
                                          "control messages yet; try again in a moment")
        if run.want in transitions.STOPPING:
            return self._refuse(row, msg, f"session {row['run_id']} is stopping ({run.want})")
        if msg["type"] in ("pause",):
            self.store.update(row["id"], want=Want.PAUSE)
        fut = asyncio.get_running_loop().create_future()
        run.pending[mid] = (msg, fut)
        if run.handle.adopted:
            # No pipe to a re-adopted worker: pause it (SIGTERM) and continue under a new
            # worker that gets the message (docs/runner.md, "Re-adoption").
            if msg["type"] == "pause":
                run.want = Want.PAUSE
                run.handle.signal(signal.SIGTERM)
            else:
                run.outbox.append(msg)
                if run.want != Want.BOUNCE:
                    run.want = Want.BOUNCE
                    run.handle.signal(signal.SIGTERM)
        elif not await run.handle.send(msg):
            run.pending.pop(mid, None)
            return self._refuse(row, msg, "the worker no longer reads control messages (it is exiting)")
        if msg["type"] == "pause":
            run.want = Want.PAUSE
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            return protocol.reject(mid, f"no answer from the worker within {wait:g}s; it may still apply the "
                                        "message (see the run's events)")

    def _refuse(self, row: dict, msg: dict, reason: str) -> dict:
        """A live edit refused here, before any worker saw it: logged in the run's events
        (while an attempt is in progress) as the worker logs its own refusals."""
        if msg["type"] in ("set", "freeze", "unfreeze"):
            request = {k: v for k, v in msg.items() if k != "v"}
            try:
                append_rejection(self.ws.run_dir(row["run_id"]), request, reason, "daemon")
            except OSError:
                log.warning("could not log the refusal of %s in %s", msg.get("id"), row["run_id"])
        return protocol.reject(msg["id"], reason)

    def status(self) -> dict:
        counts = self.store.counts()
        return {"pid": os.getpid(), "workspace": str(self.ws), "slots": self.sup.slots,
                "max_crashes": self.sup.max_crashes, "uptime_s": round(time.time() - self.started, 1),
                "counts": counts, "active": sum(counts[s] for s in ACTIVE_STATES),
                "recovered": self.store.meta("recovered"), **self.executor.describe()}


if __name__ == "__main__":
    # The old entry point (`python -m tuneterm.runner.daemon`) forwards to the new one,
    # `python -m tuneterm.runner`, without importing the server (which imports this module).
    import runpy

    runpy.run_module("tuneterm.runner", run_name="__main__")
