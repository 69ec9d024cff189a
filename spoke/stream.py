"""One connected stream to the hub: its writer, reader, heartbeats and credit pump.

Everything on one stream runs as children of one task group, and the stream
ends by cancelling that group: gRPC awaits live only in those children, because
an anyio scope placed around a ``grpc.aio`` await does not take effect (this
module, like every user of ``grpc.aio``, needs the asyncio backend).

* The writer drains one unbounded outgoing queue, so nothing that sends (the
  reader's dispatch, task runners, the heartbeat) ever waits for the network.
  Unbounded is safe: what the agent sends is small and paced by its own tasks.
* The reader dispatches each hub message without blocking: file bytes go to
  the task's own queue (its :class:`~spoke.source.StreamSource`), bounded by the
  credit this agent granted, so a slow upload never holds up another's frames.
* The credit pump grants the budget's free bytes to running attempts whenever
  space frees up (:class:`protocol.credit.CreditBudget` decides how much).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import grpc.aio

from protocol import mesh_pb2 as pb
from protocol.chunks import WireChunk
from protocol.credit import CreditBudget

Dispatch = Callable[["Stream", "pb.HubMessage | WireChunk"], None]


class Stream:
    """The agent's side of one ``Connect`` call, from the hub's ``Welcome`` to its end."""

    def __init__(
        self,
        call: Any,
        tg: anyio.abc.TaskGroup,
        *,
        session_id: str,
        heartbeat_interval: float,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.call = call
        self.session_id = session_id
        self.heartbeat_interval = heartbeat_interval
        self._tg = tg
        self._log = log
        self._out, self._queue = anyio.create_memory_object_stream[Any](math.inf)
        self.closed = anyio.Event()  # the reader saw the stream end

    def serve(self, dispatch: Dispatch, heartbeat: Callable[[], pb.Heartbeat],
              stopping: Callable[[], bool]) -> None:
        """Start the writer, the reader (``dispatch`` per message) and the heartbeats."""
        self._tg.start_soon(self._writer)
        self._tg.start_soon(self._reader, dispatch, stopping)
        self._tg.start_soon(self._heartbeats, heartbeat)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn`` for as long as this stream lives (cancelled when it ends)."""
        self._tg.start_soon(fn, *args)

    def send(self, message: pb.AgentMessage) -> None:
        """Queue ``message``; dropped once the stream is gone (the hub learns of that anyway)."""
        try:
            self._out.send_nowait(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def flush(self, limit: float = 5.0) -> None:
        """Wait (at most ``limit`` s) until everything queued so far is written."""
        marker = anyio.Event()
        try:
            self._out.send_nowait(marker)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        with anyio.move_on_after(limit):
            await marker.wait()

    async def done_writing(self) -> None:
        """Half-close: the hub sees the end of our messages and ends the call."""
        try:
            await self.call.done_writing()
        except grpc.aio.AioRpcError:
            pass

    def close(self) -> None:
        """End the stream now: cancels every child, and with them every gRPC await."""
        self._tg.cancel_scope.cancel()

    # -- children --------------------------------------------------------------------------------

    async def _writer(self) -> None:
        async with self._queue:
            async for item in self._queue:
                if isinstance(item, anyio.Event):  # flush marker
                    item.set()
                    continue
                await self.call.write(item)

    async def _reader(self, dispatch: Dispatch, stopping: Callable[[], bool]) -> None:
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    self._log.warning("hub closed the stream")
                    break
                dispatch(self, message)
        except grpc.aio.AioRpcError as exc:
            if not stopping():
                self._log.warning("stream lost: %s: %s", exc.code().name, exc.details() or "")
        self.closed.set()
        self.close()

    async def _heartbeats(self, heartbeat: Callable[[], pb.Heartbeat]) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            self.send(pb.AgentMessage(heartbeat=heartbeat()))


class CreditPump:
    """Grants the agent's free buffer to its running attempts whenever space frees up.

    ``attempt_of(task_id)`` names the attempt a grant is for (None: the task is gone,
    its grant is dropped); a Credit always carries the attempt, so a late grant can
    never be applied to a newer one.
    """

    def __init__(self, budget: CreditBudget, attempt_of: Callable[[str], int | None]) -> None:
        self._budget = budget
        self._attempt_of = attempt_of
        self._space = anyio.Event()

    def wake(self) -> None:
        """Space was freed or a task admitted: grant again."""
        self._space.set()

    async def run(self, stream: Stream) -> None:
        while True:
            for task_id, n in self._budget.grants():
                attempt = self._attempt_of(task_id)
                if attempt is None:
                    continue
                stream.send(pb.AgentMessage(
                    credit=pb.Credit(task_id=task_id, attempt=attempt, bytes=n)))
            await self._space.wait()
            self._space = anyio.Event()
