"""Following a run's stream (``client.subscribe``) off the UI thread.

This is a plain daemon thread, not a Textual thread worker, on purpose: the subscription
blocks in a socket read that cannot be interrupted, and thread workers run on asyncio's
default executor, which the event loop joins at exit — a quiet run would then keep the app
from closing. The thread only appends rows to a buffer and posts ``StreamPending`` (thread
safe); the screen drains the buffer on the UI thread.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Iterator

from tuneterm.tui.messages import StreamEnded, StreamPending


class Stream:
    def __init__(self, subscribe: Callable[[], Iterator[dict]], post: Callable[[Any], Any]) -> None:
        self._subscribe = subscribe
        self._post = post
        self.buffer: deque = deque()
        self._stop = threading.Event()
        self._signalled = False
        self._it: Iterator[dict] | None = None
        self._thread = threading.Thread(target=self._run, name="tuneterm-stream", daemon=True)

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop posting; close the subscription when it supports that (a generator that is
        blocked in a read cannot be closed from here: the daemon thread then just ends with
        the process, or at the next row)."""
        self._stop.set()
        it = self._it
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - "generator already executing" and the like
                pass

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        error = None
        try:
            self._it = self._subscribe()
            for msg in self._it:
                if self._stop.is_set():
                    return
                self.buffer.append(msg)
                if not self._signalled:  # one message per batch, not one per row
                    self._signalled = True
                    self._post(StreamPending())
        except Exception as e:  # noqa: BLE001 - shown to the user, never a crash
            error = str(e) or type(e).__name__
        if not self._stop.is_set():
            self._post(StreamEnded(error))

    def drain(self, limit: int) -> list[dict]:
        # clear the flag first: a row appended after this posts again, one before it is ours
        self._signalled = False
        out = []
        buf = self.buffer
        while buf and len(out) < limit:
            out.append(buf.popleft())
        return out

