"""Typed messages that workers and stream threads post; handlers update the widgets."""

from __future__ import annotations

from typing import Any, Callable

from textual.message import Message


class SessionsUpdated(Message):
    """The queue as the runner reported it (queue order)."""

    def __init__(self, sessions: list[dict]) -> None:
        super().__init__()
        self.sessions = sessions

    def can_replace(self, message: Message) -> bool:
        # a newer snapshot of the queue makes an unprocessed older one worthless
        return isinstance(message, SessionsUpdated)


class RunnerDown(Message):
    """list_sessions failed: the runner is unreachable (the app keeps polling)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunnerDown)


class ClientResult(Message):
    """A request to the runner finished: ``then(result)`` runs on the UI thread, or the
    error becomes a notification."""

    def __init__(self, label: str, result: Any, error: str | None,
                 then: Callable[[Any], None] | None, on_error: Callable[[str], None] | None) -> None:
        super().__init__()
        self.label = label
        self.result = result
        self.error = error
        self.then = then
        self.on_error = on_error


class StreamPending(Message):
    """Rows arrived in a stream buffer. Per-step metrics come at up to hundreds a second;
    the rows wait in the buffer and a burst of these collapses into one repaint."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StreamPending)


class StreamEnded(Message):
    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


class LogLines(Message):
    def __init__(self, lines: list[str], reset: bool = False) -> None:
        super().__init__()
        self.lines = lines
        self.reset = reset
