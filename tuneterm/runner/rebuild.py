"""Rebuilding the queue from the run directories (no torch).

The queue database is the daemon's index; each run directory holds what it indexes: the
frozen session (session.toml), the row the daemon queued it as (queue.json, written at
`queue add`), and how far it got (events.jsonl: its end event, checkpoints/). So a database
that lost sessions — a 0-byte file, a kill -9 followed by a lost -wal file, a file truncated
under a live daemon, one moved aside as corrupt — never becomes a shorter queue: every run
directory with a queue.json and no row gets its row back, in its old queue order (the
position `queue move` last gave it).

What a rebuilt row says (docs/runner.md, "What tuneterm promises"):
    ended done / early_stopped / stopped  -> done
    ended failed                          -> failed (with the reason)
    ended paused                          -> paused (a person resumes it)
    started, no end event                 -> running: the start-up recovery then re-adopts
                                             its worker if it still trains, else resumes it
    never started                         -> queued
A session cancelled while queued leaves no trace in its run directory: it comes back
queued; one cancelled while running comes back paused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tuneterm.rundir import RunDir, last_end_event, latest_checkpoint_step, write_atomic
from tuneterm.runner.store import Store
from tuneterm.states import RunEnd
from tuneterm.states import SessionState as S

log = logging.getLogger("tuneterm.runner")

_COPIED = ("id", "name", "model", "data", "created", "client_key", "position")


def write_queue_row(run_dir: Path, row: dict, *, durable: bool = True) -> None:
    """The run directory's copy of its queue row (what a rebuild needs; rewritten, not
    durably, when `queue move` changes its position)."""
    write_atomic(RunDir(run_dir).queue_row, json.dumps({k: row.get(k) for k in _COPIED} | {"run_id": row["run_id"]}) + "\n",
                 durable=durable)


def recovered_row(run_dir: Path, live: dict | None = None, starting: bool = True) -> dict | None:
    """The row to rebuild for ``run_dir`` (None: not a queued run). ``live``: the worker the
    running daemon supervises for it ({"pid", "pid_start"}), when it has one; ``starting``:
    the daemon is starting (its recovery looks for the workers of rows left running)."""
    rd = RunDir(run_dir)
    try:
        saved = json.loads(rd.queue_row.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not rd.session.is_file():
        return None
    row = {k: saved.get(k) for k in _COPIED}
    row["run_id"] = run_dir.name
    row["name"] = str(row.get("name") or run_dir.name)
    row["model"], row["data"] = str(row.get("model") or ""), str(row.get("data") or "")
    if not isinstance(row.get("created"), (int, float)):
        row["created"] = rd.session.stat().st_mtime
    if not isinstance(row.get("id"), int):
        row["id"] = None
    if not isinstance(row.get("position"), int) or isinstance(row.get("position"), bool):
        row.pop("position")  # older queue.json: the store appends it
    started = rd.events.exists() and rd.events.stat().st_size > 0
    end = last_end_event(run_dir) or {}
    st = end.get("state")
    ended = RunEnd.of(st)
    row.update(attempts=1 if started else 0, crashes=0, ckpt_step=latest_checkpoint_step(run_dir),
               error="rebuilt from its run directory (the queue database had lost it)")
    if live:
        row.update(state=S.RUNNING, pid=live.get("pid"), pid_start=live.get("pid_start"))
    elif ended is not None and ended.completed:
        row.update(state=S.DONE, result=st, finished=end.get("time"), error=None)
    elif ended is RunEnd.FAILED:
        row.update(state=S.FAILED, finished=end.get("time"),
                   error=f"training failed: {end.get('reason') or ''}".rstrip(": "))
    elif ended is RunEnd.PAUSED:
        row["state"] = S.PAUSED
    elif started:
        # Starting: the recovery decides (adopt its worker or resume). A live daemon
        # supervises every worker it has: this one is not among them.
        row["state"] = S.RUNNING if starting else S.INTERRUPTED
    else:
        row["state"] = S.QUEUED
    return row


def reconcile(store: Store, runs: Path, live: dict | None = None, why: str = "",
              starting: bool = True) -> str | None:
    """Give every queued run directory without a row its row back. Returns what was
    recovered (also logged and kept in the queue's meta table for `daemon status`)."""
    live = live or {}
    have = store.run_ids()
    rows = []
    try:
        dirs = sorted(d for d in Path(runs).iterdir() if d.is_dir() and d.name not in have)
    except OSError:
        return None
    for d in dirs:
        row = recovered_row(d, live.get(d.name), starting)
        if row is not None:
            rows.append(row)
    if not rows:
        return None
    # the old queue order: positions (kept by `queue move`), then ids, then creation
    rows.sort(key=lambda r: ("position" not in r, r.get("position", 0), r["id"] is None, r["id"] or 0, r["created"]))
    counts: dict[str, int] = {}
    for row in rows:
        store.insert_recovered(row)
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    what = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    msg = (f"{time.strftime('%Y-%m-%d %H:%M:%S')}: rebuilt {len(rows)} sessions from their run directories "
           f"({what}){': ' + why if why else ''}")
    log.warning("queue: %s", msg)
    store.set_meta("recovered", msg)
    return msg
