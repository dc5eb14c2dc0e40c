"""Per-rank health of a multi-process run (no torch, no textual): each rank's heartbeat file
(rundir.read_rank_beats, written by engine/heartbeat.py after every step) judged by one rule,
and the line the CLI and the TUI print.

The stall rule, while the session runs: a rank is *stalled* when its heartbeat is older than
max(30 s, 10 x its median step time). There is no "steps behind the others" rule: the ranks
of a DDP step meet in collectives, so a live rank is never more than one step behind
another, and a rank that hangs holds the others in their next collective — every rank's
heartbeat then ages, and each is named stalled at the step it last finished. Comparing the
steps of beats written up to a second apart (engine/heartbeat.py throttles them) would
only add false alarms.

A heartbeat from before the current attempt (written before the attempt's start event, or by
a process on this host that is gone: a paused or crashed attempt's rank) is not judged: the
rank is *starting* until its first step of this attempt.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tuneterm.rundir import RunDir, read_rank_beats

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

STALL_FLOOR_S = 30.0   # no rank is stalled sooner: a checkpoint or an evaluation takes a while
STALL_FACTOR = 10.0    # ... or sooner than 10 of its usual steps
OK, STALLED, STARTING = "ok", "stalled", "starting"
NO_STEP = "no step yet"  # a multi-process run before any rank finished a step

_HOST = socket.gethostname()


def stall_limit_s(median_s) -> float:
    """Seconds without a heartbeat after which a rank is stalled."""
    m = median_s if isinstance(median_s, (int, float)) and median_s > 0 else 0.0
    return max(STALL_FLOOR_S, STALL_FACTOR * m)


def judge(beats: list[dict], *, running: bool, now: float, since: float | None = None,
          alive=None) -> list[dict]:
    """Each rank's health from its heartbeat row: ``{"rank", "world", "step", "seconds",
    "median_s", "age_s", "host", "pid", "health"}`` with health "ok" | "stalled" |
    "starting". ``since``: the current attempt's start (a beat older is a previous
    attempt's); ``alive(beat)``: whether its process may still run (default: a pid on this
    host that no longer exists is gone)."""
    alive = alive or _alive
    current = {id(b) for b in beats if (since is None or b["time"] >= since) and alive(b)}
    out = []
    for b in beats:
        age = round(max(0.0, now - b["time"]), 1)
        health = OK
        if running and id(b) not in current:
            health = STARTING
        elif running and age > stall_limit_s(b.get("median_s")):
            health = STALLED
        out.append({"rank": b["rank"], "world": b["world"], "step": b["step"], "seconds": _num(b.get("seconds")),
                    "median_s": _num(b.get("median_s")), "age_s": age, "host": b.get("host"),
                    "pid": b.get("pid"), "health": health})
    return out


def run_health(run_dir: str | os.PathLike | Path, *, running: bool, since: float | None = None,
               now: float | None = None) -> tuple[int | None, list[dict]]:
    """(processes, ranks) of a run directory: the process count the heartbeats give (None
    when there are none: a single-process run, or one that has not finished a step) and
    each rank's health (``judge``)."""
    beats = read_rank_beats(run_dir)
    if not beats:
        return None, []
    world = max(b["world"] for b in beats)
    beats = [b for b in beats if b["rank"] < world]
    return world, judge(beats, running=running, now=time.time() if now is None else now, since=since)


def health_line(processes: int | None, ranks: list[dict]) -> str:
    """``processes 2 · rank 0 step 17 0.41 s · rank 1 stalled 42 s at step 17``; "" for a
    single-process run."""
    if not processes or processes < 2:
        return ""
    return " · ".join([f"processes {processes}"] + ([rank_text(r) for r in ranks] or [NO_STEP]))


def rank_text(r: dict) -> str:
    if r["health"] == STALLED:
        return f"rank {r['rank']} stalled {r['age_s']:.0f} s at step {r['step']}"
    if r["health"] == STARTING:
        return f"rank {r['rank']} starting"
    secs = f" {r['seconds']:.2f} s" if isinstance(r.get("seconds"), (int, float)) else ""
    return f"rank {r['rank']} step {r['step']}{secs}"


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _alive(beat: dict) -> bool:
    """False when the beat's process ran on this host and is gone (a finished, paused or
    crashed attempt's rank); True otherwise (another host's process cannot be checked)."""
    pid = beat.get("pid")
    if beat.get("host") != _HOST or not isinstance(pid, int) or pid <= 0:
        return True
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie is gone for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True

def session_processes(run_dir: str | os.PathLike | Path) -> int | None:
    """``[distributed] processes`` of a run's frozen session.toml (the count before any rank
    has finished a step); None when unreadable."""
    try:
        with open(RunDir(run_dir).session, "rb") as fh:
            n = (tomllib.load(fh).get("distributed") or {}).get("processes")
    except (OSError, ValueError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) else None
