"""A fault-injecting TCP proxy for tests: put it between an agent and the hub, then break the link.

The failures the mesh must survive are failures of the *path*, not of either
end: a NAT box that resets every connection, a route that silently stops
carrying packets (a half-open link only keepalive can detect), a slow or thin
line. Killing a process cannot show those, so tests dial the hub through this
proxy (``--server-url proxy.address``) and drive it from plain synchronous code:

* :meth:`FaultProxy.cut` resets every open connection (RST, not FIN), like a
  NAT table flush; new connections are accepted as before.
* :meth:`FaultProxy.blackhole` stops carrying bytes in both directions but keeps
  every socket open, so neither end sees an error: only a keepalive or a
  heartbeat timeout can tell. Connections opened meanwhile are accepted and
  stalled too (the upstream is not dialled until :meth:`heal`).
* :meth:`FaultProxy.heal` carries bytes again, including on the stalled
  connections (a partition that ends): whatever an end closed meanwhile is
  closed on the other side as soon as the proxy reads that end again.
* ``latency`` delays each direction by that many seconds; ``bandwidth_bps``
  caps each direction of each connection.

The proxy runs its own asyncio loop in a daemon thread, buffers at most
``QUEUE_CHUNKS`` reads per direction (bounded memory), and shuts itself down
after ``lifetime`` seconds even if a test forgets to (fixtures call
:meth:`stop`). It accepts on its own listening socket rather than through an
``asyncio.Server``, so it owns each connection from the moment ``accept()``
returns: stopping resets every one of them. (Since Python 3.12 closing a server
no longer closes its connections, and a connection the loop accepted just before
the close is left to the garbage collector, its handler never run.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

READ_SIZE = 64 * 1024
QUEUE_CHUNKS = 64  # per direction: at most 4 MiB in flight inside the proxy
CONTROL_TIMEOUT = 10.0


@dataclass(eq=False)  # identity, so connections can live in a set
class _Conn:
    """One proxied connection: the two transports and the tasks that pump between them."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST: SO_LINGER 0 makes close() drop the connection instead of a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """TCP proxy ``host:port`` -> ``upstream`` with cut / blackhole / heal / latency / bandwidth."""

    def __init__(
        self,
        upstream: str | tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        bandwidth_bps: int = 0,
        lifetime: float = 600.0,
    ) -> None:
        if isinstance(upstream, str):
            up_host, _, up_port = upstream.rpartition(":")
            upstream = (up_host, int(up_port))
        self.upstream = upstream
        self.host = host
        self.port = port
        self.latency = latency
        self.bandwidth_bps = bandwidth_bps
        self.lifetime = lifetime
        self.accepted = 0  # connections accepted since start (tests wait on reconnects with it)
        self.cuts = 0
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0
        self._conns: set[_Conn] = set()
        self._closing = False
        self._serving: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flowing: asyncio.Event | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # -- sync control (any thread) --------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def active(self) -> int:
        return len(self._conns)

    @property
    def blackholed(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:  # surfaced to start() if it happens before ready
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=main, name=f"faultproxy-{self.upstream}", daemon=True)
        self._thread.start()
        if not ready.wait(CONTROL_TIMEOUT) or failure:
            raise RuntimeError(f"fault proxy did not start: {failure[:1]}")
        return self

    def stop(self) -> None:
        """Reset every connection, close the listener and end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(self._request_stop)
        thread.join(CONTROL_TIMEOUT)

    def cut(self) -> int:
        """RST every open connection now; returns how many were cut."""
        return self._call(self._cut())

    def blackhole(self) -> None:
        """Stop carrying bytes, keep sockets open (half-open link)."""
        self._call(self._set_flowing(False))

    def heal(self) -> None:
        """Carry bytes again on every connection, stalled ones included."""
        self._call(self._set_flowing(True))

    def set_latency(self, seconds: float) -> None:
        self.latency = seconds

    def set_bandwidth(self, bps: int) -> None:
        self.bandwidth_bps = bps

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("fault proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT)

    # -- the loop -------------------------------------------------------------------------------

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stopped = asyncio.Event()
        self._listener = socket.create_server((self.host, self.port))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        accepting = asyncio.create_task(self._accept_loop(self._listener))
        ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.lifetime)
        finally:
            await self._shutdown(accepting)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError:
                return  # the listener closed
            task = asyncio.create_task(self._serve(sock))
            self._serving.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._serving.discard)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            return
        await self._accept(reader, writer)

    async def _shutdown(self, accepting: asyncio.Task[None]) -> None:
        """Close the listener, then reset every connection accepted before it closed."""
        assert self._listener is not None
        self._closing = True  # a handler that starts from now on resets its own connection
        accepting.cancel()
        self._listener.close()  # the kernel resets connections still queued for accept()
        await self._cut()
        # A connection accepted just before the close has a handler that has not run
        # yet: once every other task has ended, each one has been reset, by _cut or
        # by its handler (bounded, as a stuck task must not hang stop()).
        me = asyncio.current_task()
        deadline = time.monotonic() + CONTROL_TIMEOUT / 2
        while others := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.wait(others, timeout=remaining)
        # A reset closes its socket in a callback it has already queued: let that run
        # before the loop ends, so no socket outlives stop().
        await asyncio.sleep(0)

    def _request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _cut(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            _reset(conn.client)
            _reset(conn.upstream)
            for task in conn.tasks:
                task.cancel()
        self._conns.difference_update(conns)
        self.cuts += len(conns)
        return len(conns)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.accepted += 1
        if self._closing:  # accepted just before the listener closed
            _reset(writer)
            return
        conn = _Conn(client=writer)
        self._conns.add(conn)
        conn.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await self._flowing.wait()  # a blackholed route does not reach the upstream either
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            conn.upstream = up_writer
            if conn not in self._conns:  # cut while dialling
                _reset(up_writer)
                return
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, "up")),
                asyncio.create_task(self._pump(up_reader, writer, "down")),
            ]
            conn.tasks.extend(pumps)
            # Either direction ending (EOF, error) ends the connection, like a real peer would.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if conn in self._conns:
                self._conns.discard(conn)
                for w in (conn.client, conn.upstream):
                    if w is not None:
                        w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        """Read -> queue (stamped with its due time) -> write, so latency does not cut throughput."""
        assert self._flowing is not None
        flowing = self._flowing
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def read_side() -> None:
            try:
                while True:
                    await flowing.wait()
                    data = await reader.read(READ_SIZE)
                    if not data:
                        break
                    await queue.put((time.monotonic() + self.latency, data))
            except OSError:
                pass
            await queue.put(None)  # EOF or error: the writer flushes what is queued, then ends

        reading = asyncio.create_task(read_side())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    # An EOF (or reset) is news too: a blackhole carries no FIN either.
                    await flowing.wait()
                    break
                due, data = item
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await flowing.wait()
                writer.write(data)
                await writer.drain()
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                if self.bandwidth_bps > 0:
                    await asyncio.sleep(len(data) / self.bandwidth_bps)
        except OSError:
            pass
        finally:
            reading.cancel()
