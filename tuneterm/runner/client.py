"""The synchronous runner client used by the CLI verbs and the TUI (no torch, no textual).

One ``RunnerClient`` is thread-safe: each request takes an idle socket from a small pool
(or opens one), so concurrent requests never wait for each other — a live edit is answered
while an ``add`` waits for its pre-flight check — and each ``subscribe`` stream has its own
socket, so a blocking stream never holds up requests. ``close()`` ends every stream (from
any thread) and the request socket. Starting a daemon when none runs is launch.py's.

Requests and answers are the JSON lines of docs/protocol.md.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from tuneterm import protocol
from tuneterm.errors import UserError
from tuneterm.runner.launch import start_daemon
from tuneterm.runner.paths import RunnerUnavailable, daemon_socket, read_pid
from tuneterm.workspace import Workspace

__all__ = ["RunnerClient", "RunnerUnavailable", "start_daemon"]

# Requests that may take long on the daemon side (pre-flight checks load the model).
_ADD_TIMEOUT = 900.0
_POOL = 4  # idle request connections kept open


class _Conn:
    """One socket speaking JSON lines."""

    def __init__(self, path: Path, timeout: float):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def send(self, msg: dict) -> None:
        self.sock.sendall(protocol.encode(msg))

    def recv(self, timeout: float | None) -> dict | None:
        """The next message, or None at end of stream."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return protocol.decode(line)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RunnerClient:
    """A connection to the workspace's runner daemon."""

    def __init__(self, workspace: Workspace, conn: "_Conn", hello: dict, timeout: float):
        self.workspace = workspace
        self.daemon = hello
        self._idle: list[_Conn] = [conn]  # connections not in use by a request
        self._timeout = timeout
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._streams: set[_Conn] = set()
        self._closed = False

    # -- connecting ---------------------------------------------------------------------

    @classmethod
    def connect(cls, workspace: Workspace | Path, *, start: bool = True, timeout: float = 10.0) -> "RunnerClient":
        """Connect to the daemon of ``workspace`` (a path is resolved here, once; a
        Workspace is used as it is), starting it first when none runs and ``start`` is
        true. Raises RunnerUnavailable when that is not possible."""
        ws = Workspace.resolve(workspace)
        path = daemon_socket(ws)
        for attempt in range(3):
            try:
                conn = _Conn(path, timeout)
            except OSError as e:
                if not start:
                    raise RunnerUnavailable(f"no runner daemon for {ws} ({e.strerror or e}); "
                                            "start one with `tuneterm daemon start`") from None
                start_daemon(ws, timeout=timeout)
                try:
                    conn = _Conn(path, timeout)
                except OSError as e2:
                    if attempt == 2:
                        raise RunnerUnavailable(f"cannot reach the runner daemon at {path}: "
                                                f"{e2.strerror or e2}") from None
                    continue
            try:
                hello = cls._handshake(conn, ws, timeout)
            except RunnerUnavailable:
                # A daemon that died (or is dying) under us: start a fresh one, once or twice.
                if not start or attempt == 2:
                    raise
                time.sleep(0.1)
                continue
            return cls(ws, conn, hello, timeout)
        raise RunnerUnavailable(f"cannot reach the runner daemon at {path}")

    @staticmethod
    def _handshake(conn: "_Conn", ws: Workspace, timeout: float) -> dict:
        try:
            conn.send({"type": "hello", "id": "0", "workspace": str(ws)})
            msg = conn.recv(timeout)
        except (OSError, protocol.ProtocolError) as e:
            conn.close()
            raise RunnerUnavailable(f"runner daemon handshake failed: {e}") from None
        if msg is None or msg.get("type") != "ok":
            conn.close()
            reason = (msg or {}).get("error", "connection closed")
            raise RunnerUnavailable(f"runner daemon refused the connection: {reason}")
        return msg.get("result", {})

    # -- requests -----------------------------------------------------------------------

    def _request(self, type_: str, timeout: float | None = None, **fields: Any) -> Any:
        """One request on an idle connection of the pool (a new one when every connection
        is busy): a slow request (an `add` whose pre-flight check loads the model) never
        holds up another one — a live edit is answered meanwhile."""
        conn = self._checkout()
        rid = str(next(self._ids))
        try:
            conn.send({"type": type_, "id": rid, **fields})
            while True:
                msg = conn.recv(timeout or self._timeout)
                if msg is None:
                    raise ConnectionError("the runner daemon closed the connection")
                if msg.get("id") == rid:
                    break
        except (OSError, protocol.ProtocolError) as e:
            conn.close()
            raise RunnerUnavailable(f"lost the runner daemon: {e}") from None
        self._checkin(conn)
        if msg.get("type") == "error":
            if msg.get("code") == "user":
                raise UserError(msg.get("error", "bad request"))
            raise RunnerUnavailable(f"runner daemon error: {msg.get('error')}")
        return msg.get("result")

    def _checkout(self) -> "_Conn":
        with self._lock:  # held only to take a connection from the pool, never over a request
            if self._closed:
                raise RunnerUnavailable("the runner client is closed; connect again")
            if self._idle:
                return self._idle.pop()
        try:
            conn = _Conn(daemon_socket(self.workspace), self._timeout)
        except OSError as e:
            raise RunnerUnavailable(f"lost the runner daemon: {e.strerror or e}") from None
        self._handshake(conn, self.workspace, self._timeout)
        return conn

    def _checkin(self, conn: "_Conn") -> None:
        with self._lock:
            if not self._closed and len(self._idle) < _POOL:
                self._idle.append(conn)
                return
        conn.close()

    def status(self) -> dict:
        """Daemon facts: pid, version, workspace, slots, counts per state, uptime."""
        return self._request("status")

    def list_sessions(self) -> list[dict]:
        """Every session in queue order (the fields are in docs/protocol.md)."""
        return self._request("list")

    def get(self, ref: str | int) -> dict:
        """One session, by id, run id or a unique prefix of a run id."""
        return self._request("get", ref=ref)

    def add(self, session_path: str | Path, *, smoke: bool = False, check: bool = True) -> dict:
        """Queue a session file (inside the workspace). The daemon checks it first (schema,
        model/tokenizer/data load; one training step with ``smoke``) unless ``check`` is
        false, copies it into a new run directory and returns the queued session."""
        p = Path(session_path)
        p = (p if p.is_absolute() else Path.cwd() / p).resolve()
        # The key makes a repeated request (after a lost answer) idempotent on the daemon.
        return self._request("add", timeout=_ADD_TIMEOUT, path=str(p), smoke=bool(smoke),
                             check=bool(check), key=uuid.uuid4().hex)

    def pause(self, ref: str | int) -> dict:
        return self._request("pause", ref=ref)

    def resume(self, ref: str | int) -> dict:
        return self._request("resume", ref=ref)

    def cancel(self, ref: str | int) -> dict:
        return self._request("cancel", ref=ref)

    def retry(self, ref: str | int) -> dict:
        return self._request("retry", ref=ref)

    def move(self, ref: str | int, *, to: int | None = None, by: int | None = None) -> dict:
        """Reorder: ``to`` a 1-based queue position, or ``by`` places (negative = earlier)."""
        if (to is None) == (by is None):
            raise UserError("move: give exactly one of to= or by=")
        return self._request("move", ref=ref, to=to, by=by)

    def control(self, ref: str | int, msg: dict | protocol.Command, timeout: float = 30.0) -> dict:
        """Forward a control message to the session's worker; returns the worker's ack
        ({"type": "ack", "step": N}) or reject ({"type": "reject", "reason": ...}). A session
        that is not running gets a reject. A malformed message is a UserError here."""
        try:
            cmd = msg if isinstance(msg, protocol.Command) else protocol.Command.parse({"v": protocol.VERSION, **msg})
        except protocol.ProtocolError as e:
            raise UserError(str(e)) from None
        wire = cmd.to_dict()
        wire["id"] = cmd.id or protocol.new_id()
        return self._request("control", timeout=timeout + 10.0, ref=ref, msg=wire, wait=timeout)

    def set(self, ref: str | int, values: dict, timeout: float = 30.0) -> dict:
        """A live edit of knobs (``control`` with a ``set`` message)."""
        return self.control(ref, protocol.Command("set", protocol.new_id(), values=dict(values)), timeout)

    def freeze(self, ref: str | int, layers: list[str], *, unfreeze: bool = False, timeout: float = 30.0) -> dict:
        cmd = protocol.Command("unfreeze" if unfreeze else "freeze", protocol.new_id(), layers=tuple(layers))
        return self.control(ref, cmd, timeout)

    def shutdown(self, timeout: float = 120.0) -> dict:
        """Stop the daemon; running workers are paused at a checkpoint first and resume
        when a daemon starts again."""
        return self._request("shutdown", timeout=timeout)

    def subscribe(self, ref: str | int, *, history: bool = True) -> Iterator[dict]:
        """Metric, event and state messages of one session: first its history from the run
        directory (when ``history``; those carry ``"history": true``), then live ones, without
        gap or duplicate. Blocks; ends when the session ends (done, failed, cancelled) or when
        ``close()`` is called. Raises UserError at once for a bad ref, and RunnerUnavailable
        (while iterating) when the daemon goes away mid-stream."""
        if self._closed:
            raise RunnerUnavailable("the runner client is closed")
        try:
            conn = _Conn(daemon_socket(self.workspace), self._timeout)
        except OSError as e:
            raise RunnerUnavailable(f"cannot reach the runner daemon: {e.strerror or e}") from None
        self._handshake(conn, self.workspace, self._timeout)
        try:
            conn.send({"type": "subscribe", "id": "s", "ref": ref, "history": bool(history)})
            first = conn.recv(self._timeout)
        except (OSError, protocol.ProtocolError) as e:
            conn.close()
            raise RunnerUnavailable(f"lost the runner daemon: {e}") from None
        if first is None or first.get("type") == "error":
            conn.close()
            if first is not None and first.get("code") == "user":
                raise UserError(first.get("error", "bad request"))
            raise RunnerUnavailable(f"runner daemon error: {(first or {}).get('error', 'connection closed')}")
        self._streams.add(conn)
        return self._stream(conn)

    def _stream(self, conn: "_Conn") -> Iterator[dict]:
        try:
            while not self._closed:
                try:
                    msg = conn.recv(None)
                except (OSError, protocol.ProtocolError) as e:
                    if self._closed:
                        return
                    raise RunnerUnavailable(f"lost the runner daemon during the stream: {e}") from None
                if msg is None:
                    if self._closed:
                        return
                    raise RunnerUnavailable("the runner daemon went away during the stream; "
                                            "subscribe again (history fills the gap)")
                if msg.get("type") == "end":
                    return
                yield msg
        finally:
            self._streams.discard(conn)
            conn.close()

    def close(self) -> None:
        """End every stream of this client (safe from any thread) and disconnect."""
        self._closed = True
        for c in list(self._streams):
            c.close()
        self._streams.clear()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> "RunnerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def daemon_pid(self) -> int | None:
        return self.daemon.get("pid") or read_pid(self.workspace)
