"""A command run at each session's end (pueue's ``callback``), so that a person hears when a
night's run ends or fails (no torch, no textual).

    # WS/.tuneterm/config.toml
    [callback]
    command = "notify-send \"$TUNETERM_NAME: $TUNETERM_STATE\""   # a shell command line
    timeout_s = 30          # killed (its whole process group) after this long; default 30
    states = ["done", "failed", "cancelled"]                      # the end states it runs for

The command gets the environment of the daemon plus TUNETERM_RUN_ID, TUNETERM_NAME,
TUNETERM_STATE (done | failed | cancelled), TUNETERM_RESULT (how it ended: done,
early_stopped or stopped for a done session, else failed or cancelled), TUNETERM_STEPS,
TUNETERM_BEST_METRIC and TUNETERM_BEST_VALUE (empty when the run never evaluated),
TUNETERM_ERROR (failures) and TUNETERM_RUN_DIR. Its output (the first OUTPUT_CAP bytes of
each call) and exit status go to WS/.tuneterm/callback.log. A callback that fails, hangs or
cannot start is logged and changes nothing else: the queue goes on. None outlives the
daemon: at its stop, one still running is killed with its process group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tuneterm.states import COMPLETED_ENDS, FINISHED_STATES, RunEnd, SessionState
from tuneterm.workspace import Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("tuneterm.runner")

END_STATES = FINISHED_STATES  # the session states a callback may run at: done, failed, cancelled
FINISHED = COMPLETED_ENDS  # how a done session's run ended
# every TUNETERM_RESULT (docs/results.md lists them)
RESULTS = FINISHED + (SessionState.FAILED.value, SessionState.CANCELLED.value)
KNOWN = {"command", "timeout_s", "states"}
OUTPUT_CAP = 64 * 1024  # bytes of one call's output kept in callback.log; the rest is dropped
LOG_CAP = 1 << 20  # callback.log past this size is moved to callback.log.1 (one old file kept)
STOP_GRACE_S = 3.0  # at the daemon's stop, how long a running callback may still take


@dataclass
class CallbackConfig:
    command: str
    timeout_s: float = 30.0
    states: tuple = END_STATES


def config_problem(table: object, where: str) -> str | None:
    """Why a [callback] table is unusable (None: it is fine)."""
    if not isinstance(table, dict):
        return f"{where}: [callback] must be a table"
    unknown = set(table) - KNOWN
    if unknown:
        return f"{where}: unknown [callback] keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(KNOWN))})"
    if not isinstance(table.get("command"), str) or not table["command"].strip():
        return f"{where}: [callback] command must be a non-empty string (a shell command line)"
    t = table.get("timeout_s", 30.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        return f"{where}: [callback] timeout_s must be a positive number of seconds"
    states = table.get("states", list(END_STATES))
    if not isinstance(states, list) or not states or any(s not in END_STATES for s in states):
        return f"{where}: [callback] states must be a list of {', '.join(END_STATES)}"
    return None


def load_config(ws: Path) -> CallbackConfig | None:
    """The [callback] table of WS/.tuneterm/config.toml, None when there is none. A broken
    table is logged (and ignored) rather than stopping the daemon: the callback is a notice."""
    path = Workspace.resolve(ws).config
    try:
        table = tomllib.loads(path.read_text()).get("callback")
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        log.warning("callback: cannot read %s: %s", path, e)
        return None
    if table is None:
        return None
    problem = config_problem(table, str(path))
    if problem:
        log.warning("callback: %s; not run", problem)
        return None
    return CallbackConfig(table["command"], float(table.get("timeout_s", 30.0)),
                          tuple(table.get("states", END_STATES)))


def environment(row: dict, run_dir: Path) -> dict:
    """The TUNETERM_* variables for a session that just ended."""
    from tuneterm.compare import run_summary

    try:
        s = run_summary(run_dir)
    except Exception:  # noqa: BLE001 - a damaged run directory still gets its notice
        s = {"steps": 0, "best": None}
    best = s.get("best") or {}
    return {
        "TUNETERM_RUN_ID": str(row.get("run_id") or Path(run_dir).name),
        "TUNETERM_NAME": str(row.get("name") or ""),
        "TUNETERM_STATE": str(row.get("state") or ""),
        "TUNETERM_RESULT": result(row, s),
        "TUNETERM_STEPS": str(s.get("steps") or 0),
        "TUNETERM_BEST_METRIC": str(best.get("metric") or ""),
        "TUNETERM_BEST_VALUE": repr(best["value"]) if best.get("value") is not None else "",
        "TUNETERM_ERROR": str(row.get("error") or ""),
        "TUNETERM_RUN_DIR": str(run_dir),
    }


def result(row: dict, summary: dict) -> str:
    """TUNETERM_RESULT: how the session ended. The run's own end row tells a done session's
    finish apart; a failed or cancelled one is what the queue says (a cancel pauses the
    worker at a checkpoint, so the run's last row reads paused)."""
    if row.get("state") != SessionState.DONE:
        return str(row.get("state") or "")
    for end in (row.get("result"), summary.get("state")):
        if end in FINISHED:
            return end
    return RunEnd.DONE.value


def _rotate(log_path: Path) -> None:
    """Keep callback.log bounded across many sessions: past LOG_CAP it becomes callback.log.1."""
    try:
        if log_path.stat().st_size > LOG_CAP:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
    except OSError:
        pass


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and whatever it started
    except ProcessLookupError:
        pass


async def _copy_output(proc, out) -> int:
    """The command's output into the log, its first OUTPUT_CAP bytes; the rest is read and
    dropped (a chatty command neither blocks on a full pipe nor fills the disk). Returns
    the exit status once the output has ended and the command has exited."""
    kept = dropped = 0
    while chunk := await proc.stdout.read(1 << 16):
        keep = chunk[:max(0, OUTPUT_CAP - kept)]
        out.write(keep)
        kept += len(keep)
        dropped += len(chunk) - len(keep)
    if dropped:
        out.write(f"\n[output cut at {OUTPUT_CAP} bytes: {dropped} more dropped]\n".encode())
    return await proc.wait()


async def run_callback(cfg: CallbackConfig, env: dict, log_path: Path) -> int | None:
    """Run the command once; its exit status, or None when it timed out or could not start.
    Cancelled (the daemon stops), it kills the command's process group first."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log_path)
    name = env.get("TUNETERM_NAME", "")
    with open(log_path, "ab") as fh:
        fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {env.get('TUNETERM_RUN_ID')} "
                 f"{env.get('TUNETERM_STATE')}\n".encode())
        fh.flush()
        try:
            proc = await asyncio.create_subprocess_shell(
                cfg.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
        except OSError as e:
            log.warning("callback for %s: cannot start: %s", name, e)
            fh.write(f"cannot start: {e}\n".encode())
            return None
        try:
            code = await asyncio.wait_for(_copy_output(proc, fh), cfg.timeout_s)
        except asyncio.TimeoutError:
            _kill_group(proc)
            await proc.wait()
            log.warning("callback for %s: killed after %ss", name, cfg.timeout_s)
            fh.write(f"killed after {cfg.timeout_s}s\n".encode())
            return None
        except asyncio.CancelledError:
            _kill_group(proc)  # the daemon stops: nothing of the callback outlives it
            log.warning("callback for %s: killed: the daemon stopped", name)
            fh.write(b"killed: the daemon stopped\n")
            raise
    if code != 0:
        log.warning("callback for %s: exit status %s (see %s)", name, code, log_path)
    else:
        log.info("callback for %s: ok", name)
    return code


_tasks: set = set()


def fire(ws: Path, row: dict, run_dir: Path) -> None:
    """At a session's end: start the configured callback in the background (never raises,
    never waits: the daemon's loop and the queue go on)."""
    try:
        if row.get("state") not in END_STATES:
            return
        cfg = load_config(ws)
        if cfg is None or row.get("state") not in cfg.states:
            return
        log_path = Workspace.resolve(ws).callback_log
        task = asyncio.ensure_future(run_callback(cfg, environment(row, run_dir), log_path))
        _tasks.add(task)  # keep a reference until it ends
        task.add_done_callback(_done)
    except Exception:  # noqa: BLE001
        log.exception("callback: not started")


def _done(task: asyncio.Task) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("callback failed: %s", task.exception())


async def drain(timeout: float) -> None:
    """Wait (bounded) for callbacks still running."""
    if _tasks:
        await asyncio.wait(list(_tasks), timeout=timeout)


async def stop(grace: float = STOP_GRACE_S) -> None:
    """At the daemon's stop: callbacks still running get ``grace`` seconds, then each is
    killed with its process group (its own timeout would never fire once the loop ends)."""
    await drain(grace)
    for task in list(_tasks):
        task.cancel()
    await drain(5.0)
