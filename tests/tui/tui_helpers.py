"""Shared Pilot helpers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path


async def wait_until(pilot, cond, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until ``cond()`` holds (workers and threads post back)."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause()
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - a widget that is not mounted yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def cell_texts(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def aio(fn):
    """Run an async test on a fresh event loop (no pytest-asyncio in the test extras)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def pids_of(ws: Path) -> list[int]:
    """Processes started for this (temporary) workspace: its daemon and workers."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(ws) in cmd and "tuneterm" in cmd:
                out.append(int(d.name))
    return out


def kill_processes_of(ws: Path) -> None:
    """SIGKILL, by pid, every process this test started for ``ws``."""
    for _ in range(3):
        pids = pids_of(ws)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
