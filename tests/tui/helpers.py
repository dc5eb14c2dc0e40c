"""Shared Pilot helpers."""

from __future__ import annotations

import asyncio
import time


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
