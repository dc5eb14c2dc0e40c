"""The daemon's handle on a worker that runs inside a Ray actor (imports ray only inside
its methods; the executor is ray_executor.py, a multi-process session's handle ray_group.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import AsyncIterator

from tuneterm import protocol
from tuneterm.runner.executor import WorkerHandle
from tuneterm.runner.ray_actor import _EVENT, _METRIC, READ_WAIT_S

log = logging.getLogger("tuneterm.runner")


def _ray_errors() -> tuple:
    import ray.exceptions as rx

    return (rx.RayError, ConnectionError)


class RayWorker(WorkerHandle):
    """A worker running inside a Ray actor, reached through actor calls only."""

    def __init__(self, actor, name: str, info: dict):
        self.actor = actor
        self.name = name
        self.pid = info.get("pid")  # the actor's pid on its node (the node may not be this machine)
        self.pid_start = None
        self.node = info.get("node")
        self._drained = asyncio.Event()
        self._killed = False

    async def send(self, msg: dict) -> bool:
        try:
            return bool(await self.actor.send.remote(protocol.encode(msg)))
        except _ray_errors():
            return False

    async def messages(self) -> AsyncIterator[dict]:
        try:
            while True:
                try:
                    lines, eof = await self.actor.read.remote(READ_WAIT_S)
                except _ray_errors():
                    return
                for line in lines:
                    if line == _METRIC:
                        yield {"type": "metric"}
                    elif line == _EVENT:
                        yield {"type": "event"}
                    else:
                        try:
                            yield protocol.decode(line)
                        except protocol.ProtocolError:
                            continue
                if eof:
                    return
        finally:
            self._drained.set()

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.kill()  # the worker dies with its actor
            return
        try:
            self.actor.signal.remote(int(sig))
        except _ray_errors():
            pass

    def kill(self) -> None:
        import ray

        if not self._killed:
            self._killed = True
            try:
                ray.kill(self.actor, no_restart=True)
            except _ray_errors() + (ValueError,):
                pass

    async def wait(self) -> int | None:
        try:
            code = await self.actor.wait.remote()
        except _ray_errors() as e:
            # The actor died (killed, its node lost): the worker died with it.
            log.warning("actor %s died: %s", self.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
            code = -int(signal.SIGKILL)
        else:
            try:  # let the reader take the last lines before the actor goes
                await asyncio.wait_for(self._drained.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
        await asyncio.to_thread(self.kill)
        return code
