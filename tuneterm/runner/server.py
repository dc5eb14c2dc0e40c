"""The daemon's socket side: one asyncio task per connection, each request line decoded once
and answered through a handler table, and the streams of `subscribe` (no torch, no textual).
Requests and answers: docs/protocol.md. The process that runs it is process.py's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any, Callable

from tuneterm import __version__, protocol
from tuneterm.errors import TunetermError, UserError
from tuneterm.runner.paths import log_path
from tuneterm.states import is_finished

log = logging.getLogger("tuneterm.runner")

LINE_LIMIT = 1 << 20


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED: the kernel's
    word, not the client's)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def peer_allowed(uid: int) -> bool:
    return uid == os.getuid()


Handler = Callable[[protocol.Request], Any]  # returns the result, or an awaitable of it


class Server:
    """The socket side of the daemon: one asyncio task per connection, each request line
    decoded once (``protocol.decode`` + ``protocol.Request.parse``) and answered through
    the handler table. The daemon is injected (anything with the methods the table names),
    so this module never imports the daemon's."""

    def __init__(self, daemon: Any, sock_path: Path):
        self.daemon = daemon
        self.sock_path = sock_path
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        d = daemon
        self.handlers: dict[str, Handler] = {
            "hello": lambda r: {"pid": os.getpid(), "version": __version__, "protocol": protocol.VERSION,
                                "workspace": str(d.ws)},
            "status": lambda r: {**d.status(), "socket": str(self.sock_path), "log": str(log_path(d.ws)),
                                 "version": __version__},
            "list": lambda r: d.list(),
            "get": lambda r: d.view(d.resolve(r.ref)),
            "add": lambda r: d.add(r.path, smoke=r.smoke, check=r.check, key=r.key),
            "pause": lambda r: d.pause(r.ref),
            "resume": lambda r: d.resume(r.ref),
            "cancel": lambda r: d.cancel(r.ref),
            "retry": lambda r: d.retry(r.ref),
            "move": lambda r: d.move(r.ref, r.to, r.by),
            "control": lambda r: d.control(r.ref, r.command.to_dict(), r.wait),
            "shutdown": self._shutdown,
        }

    async def _shutdown(self, req: protocol.Request) -> dict:
        await self.daemon.shutdown()
        return {"stopped": True, "pid": os.getpid()}

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_unix_server(self.handle, sock=sock, limit=LINE_LIMIT)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            uid = peer_uid(sock)
        except OSError:
            uid = -1
        if not peer_allowed(uid):
            log.warning("refused a connection from uid %s", uid)
            await self._send(writer, protocol.error(None, "denied",
                                                    f"permission denied: uid {uid} does not own this runner"))
            writer.close()
            return
        self.conns.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, protocol.error(None, "user", f"a request is at most {LINE_LIMIT} bytes"))
                    break
                if not line:
                    break
                try:
                    msg = protocol.decode(line)
                except protocol.ProtocolError as e:
                    await self._send(writer, protocol.error(None, "user", f"bad request: {e}"))
                    continue
                try:
                    req = protocol.Request.parse(msg)
                except protocol.ProtocolError as e:
                    rid = msg.get("id") if isinstance(msg.get("id"), (str, int)) else None
                    await self._send(writer, protocol.error(rid, "user", str(e)))
                    continue
                if req.type == "subscribe":
                    await self.subscribe(req, writer)
                    break
                await self._send(writer, await self.dispatch(req))
                if req.type == "shutdown":
                    break
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            self.conns.discard(writer)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, msg: dict) -> None:
        writer.write(protocol.encode(msg))
        await writer.drain()

    async def dispatch(self, req: protocol.Request | dict) -> dict:
        if isinstance(req, dict):
            try:
                req = protocol.Request.parse(req)
            except protocol.ProtocolError as e:
                return protocol.error(req.get("id"), "user", str(e))
        try:
            result = self.handlers[req.type](req)
            if inspect.isawaitable(result):
                result = await result
        except TunetermError as e:
            return protocol.error(req.id, "user" if isinstance(e, UserError) else "internal", str(e))
        except Exception as e:
            log.exception("request %s failed", req.type)
            return protocol.error(req.id, "internal", f"{type(e).__name__}: {e}")
        return protocol.ok(req.id, result)

    async def subscribe(self, req: protocol.Request, writer: asyncio.StreamWriter) -> None:
        d = self.daemon
        try:
            row = d.resolve(req.ref)
        except UserError as e:
            await self._send(writer, protocol.error(req.id, "user", str(e)))
            return
        q: asyncio.Queue = asyncio.Queue()
        # From here to the registration nothing awaits, and nothing but the refresh right
        # before the history reads the files (the view first: it refreshes too): no row can
        # slip between the history (what the tailer has consumed) and the live stream.
        view = d.view(d.store.get(row["id"]))
        tail = d.refresh(row)
        hist = tail.history()
        while hist is None:  # a file was rewritten under us: catch up and read again
            tail = d.refresh(row)
            hist = tail.history()
        q.put_nowait(protocol.ok(req.id, view))
        if req.history:
            for kind, data in hist:
                q.put_nowait({"v": protocol.VERSION, "type": kind, "data": data, "history": True})
        q.put_nowait({"v": protocol.VERSION, "type": "state", "state": view["state"], "session": view})
        if is_finished(view["state"]) and row["id"] not in d.runs:
            q.put_nowait({"v": protocol.VERSION, "type": "end", "state": view["state"]})
        else:
            d.subs[row["id"]].add(q)
        try:
            while True:
                msg = await q.get()
                writer.write(protocol.encode(msg))
                if q.empty():
                    await writer.drain()
                if msg["type"] == "end":
                    await writer.drain()
                    break
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            d.subs.get(row["id"], set()).discard(q)
