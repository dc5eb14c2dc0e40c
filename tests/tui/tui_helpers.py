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


async def edit_learning_rate(pilot, screen, value: str) -> int:
    """On the session screen: `e` on the Knobs tab, type ``value``, enter; the step the
    run's acknowledgement names."""
    from textual.widgets import DataTable, Input

    app = pilot.app
    screen.query_one("#knobs-table", DataTable).focus()
    await pilot.press("e")
    await wait_until(pilot, lambda: app.screen.query_one("#edit-input", Input), what="the edit dialog")
    app.screen.query_one("#edit-input", Input).value = value
    await pilot.press("enter")
    knobs = screen.query_one("#knobs")
    await wait_until(pilot, lambda: "applied at step" in knobs.edit_status.get("learning_rate", ("",))[0],
                     timeout=60, what="the learning-rate ack")
    return int(knobs.edit_status["learning_rate"][0].rsplit(" ", 1)[1])


async def freeze_layer0(pilot, screen) -> None:
    """On the session screen: the Layers tab, down to layer.0, space; until it is acknowledged."""
    from textual.widgets import DataTable

    await pilot.press("right_square_bracket")
    screen.query_one("#layers-table", DataTable).focus()
    await pilot.press("down", "space")
    await wait_until(pilot, lambda: screen.view.layers[1]["frozen"], timeout=60, what="the freeze ack")


async def queue_the_session_file(pilot) -> None:
    """On the queue: `a`, then enter on the only file of sessions/, as a person would; until
    the queue lists it."""
    from tuneterm.tui.queue_screen import QueueScreen

    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen), what="the queue")
    await pilot.press("a")
    await pilot.pause()
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(app.sessions) == 1, timeout=120, what="the session in the queue")
