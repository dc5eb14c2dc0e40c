"""The tuneterm app: built by ``make_app(client)`` so that tests inject a fake or a real
runner client and the CLI injects the socket client.

The app owns the client and its threads: requests run in thread workers that post
``ClientResult`` (side by side: the client is thread-safe, so no lock here — a live edit
never waits behind a slow request); the queue is polled in an exclusive worker that posts
``SessionsUpdated``. Screens never call the client directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tuneterm.tui.messages import ClientResult, RunnerDown, SessionsUpdated


class TuneTermApp(App):
    CSS_PATH = "tuneterm.tcss"
    TITLE = "tuneterm"
    BINDINGS = [
        Binding("question_mark", "help", "Help", id="app.help"),
    ]

    def __init__(self, client: Any, workspace: Path, *, poll_interval: float = 1.0,
                 queue_on_start: list[Path] | None = None) -> None:
        super().__init__()
        self.client = client
        self.workspace = Path(workspace)
        self.poll_interval = poll_interval
        self.queue_on_start = list(queue_on_start or [])
        self.sessions: list[dict] = []
        self._polling = False
        self._poll_again = False
        self.runner_error: str | None = None
        self.sub_title = self.workspace.name

    # -- lifecycle
    def on_mount(self) -> None:
        from tuneterm.tui.queue_screen import QueueScreen

        self.push_screen(QueueScreen())
        self.poll()
        if self.poll_interval > 0:
            self.set_interval(self.poll_interval, self.poll)
        if self.queue_on_start:
            self._queue_files(self.queue_on_start)

    @work(thread=True, group="queue-files", exit_on_error=False)
    def _queue_files(self, paths: list[Path]) -> None:
        """Queue session files in order, off the UI thread (`tuneterm demo`). The files are
        the shipped examples, so the daemon's slow pre-flight check (it loads the model) is
        skipped: the app stays responsive, and a broken file still fails visibly in the queue."""
        for path in paths:
            try:
                s = self.client.add(str(path), check=False)
            except Exception as e:  # noqa: BLE001
                self.post_message(ClientResult(f"queue {path.name}", None, str(e), None, None))
                continue
            name = s.get("name", path.stem) if isinstance(s, dict) else path.stem
            self.post_message(ClientResult("queue", s, None,
                                            lambda _r, n=name: (self.notify(f"queued {n}"), self.poll()), None))

    # -- the runner
    def poll(self) -> None:
        """Ask for the queue unless a request for it is still out: a slow request (a
        pre-flight check holds the client for seconds) must not pile up blocked threads."""
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self._poll()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll(self) -> None:
        try:
            sessions = self.client.list_sessions()
        except Exception as e:  # noqa: BLE001 - the runner may be down; keep polling
            self.post_message(RunnerDown(str(e) or type(e).__name__))
            return
        self.post_message(SessionsUpdated(list(sessions)))

    def request(self, label: str, call: Callable[[Any], Any] | str, *args: Any,
                then: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None,
                **kwargs: Any) -> None:
        """Run ``call(client)`` — or ``client.<call>(*args, **kwargs)`` for a method name —
        off the UI thread; errors become notifications (``label: message``), never a crash.
        Requests run side by side (the client is thread-safe, one socket per request in
        flight): a live edit never waits behind a slow `queue add` pre-flight."""
        fn = call if callable(call) else (lambda c: getattr(c, call)(*args, **kwargs))
        self._request(label, fn, then, on_error)

    @work(thread=True, group="request", exit_on_error=False)
    def _request(self, label, fn, then, on_error) -> None:
        try:
            result = fn(self.client)
        except Exception as e:  # noqa: BLE001 - UserError, RunnerUnavailable, timeouts
            self.post_message(ClientResult(label, None, str(e) or type(e).__name__, then, on_error))
            return
        self.post_message(ClientResult(label, result, None, then, on_error))

    def run_in_thread(self, label: str, fn: Callable[[], Any], then: Callable[[Any], None] | None = None) -> None:
        """Blocking work that is not a client request (reading a large run directory)."""
        self._in_thread(label, fn, then)

    @work(thread=True, group="files", exit_on_error=False)
    def _in_thread(self, label, fn, then) -> None:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001
            self.post_message(ClientResult(label, None, str(e) or type(e).__name__, then, None))
            return
        self.post_message(ClientResult(label, result, None, then, None))

    @on(ClientResult)
    def _client_result(self, msg: ClientResult) -> None:
        if msg.error is not None:
            self.notify(f"{msg.label}: {msg.error}", severity="error", timeout=6)
            if msg.on_error:
                msg.on_error(msg.error)
        elif msg.then is not None:
            msg.then(msg.result)

    def _polled(self) -> None:
        self._polling = False
        if self._poll_again:
            self._poll_again = False
            self.poll()

    @on(SessionsUpdated)
    def _sessions_updated(self, msg: SessionsUpdated) -> None:
        self._polled()
        if self.runner_error is not None:
            self.notify("runner reachable again")
        self.runner_error = None
        self.sessions = msg.sessions
        for screen in self.screen_stack:
            hook = getattr(screen, "sessions_changed", None)
            if hook:
                hook(msg.sessions)

    @on(RunnerDown)
    def _runner_down(self, msg: RunnerDown) -> None:
        self._polled()
        if self.runner_error is None:
            self.notify(f"runner: {msg.reason}", severity="error", timeout=8)
        self.runner_error = msg.reason
        for screen in self.screen_stack:
            hook = getattr(screen, "runner_down", None)
            if hook:
                hook(msg.reason)

    def session_by_id(self, sid: Any) -> dict | None:
        for s in self.sessions:
            if s.get("id") == sid:
                return s
        return None

    def run_dir_of(self, s: dict) -> Path | None:
        rd = s.get("run_dir")
        if not rd:
            return None
        p = Path(rd)
        return p if p.is_absolute() else self.workspace / p

    # -- help and the palette
    def action_help(self) -> None:
        from tuneterm.tui.help_screen import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("app: Help", "Keys and screens", self.action_help)
        palette = getattr(screen, "palette", None)
        if palette is not None:
            for title, help_, callback in palette():
                yield SystemCommand(title, help_, callback)


def make_app(client: Any, workspace: Path | None = None, **kwargs: Any) -> TuneTermApp:
    """The app on ``client`` (a RunnerClient or a test double with the same API).
    ``workspace`` defaults to ``client.workspace``."""
    ws = workspace if workspace is not None else getattr(client, "workspace", None)
    if ws is None:
        raise ValueError("make_app: no workspace (pass workspace= or use a client that has one)")
    return TuneTermApp(client, Path(ws), **kwargs)
