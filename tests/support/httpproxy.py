"""A loopback HTTP proxy whose outgoing connections leave from an address of its own.

Agents behind a proxy reach Bilibili from the proxy's address, not theirs;
that is what tests of the egress an agent reports need. The proxy listens on
``host:port`` and dials every upstream connection from ``egress`` (another
127.0.0.N), so the simulator sees ``egress`` as the caller.

Both ways an HTTP client uses a proxy are served:

* ``CONNECT host:port``: a tunnel (what clients do for https);
* an absolute-form request (``GET http://host:port/path HTTP/1.1``, what
  clients do for plain http): rewritten to origin form with
  ``Connection: close`` and forwarded on a connection of its own, so the
  reply and the closed connection end the exchange (no request parsing past
  the first head; bodies pass through untouched).

Runs its own asyncio loop in a daemon thread; :meth:`HttpProxy.stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from typing import Any

HEAD_LIMIT = 64 * 1024
CONTROL_TIMEOUT = 10.0


class HttpProxy:
    def __init__(self, *, egress: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.egress = egress
        self.host = host
        self.port = port
        self.requests: list[str] = []  # "CONNECT host:port" or "GET http://..." as received
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=main, name="httpproxy", daemon=True)
        self._thread.start()
        if not ready.wait(CONTROL_TIMEOUT) or failure:
            raise RuntimeError(f"http proxy did not start: {failure[:1]}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._stopped.set)  # type: ignore[union-attr]
        thread.join(CONTROL_TIMEOUT)

    def __enter__(self) -> HttpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > HEAD_LIMIT:
                return
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.decode("latin-1").split(" ", 2)
            self.requests.append(f"{method} {target}")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, upstream = await self._dial(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                url = urllib.parse.urlsplit(target)
                up_reader, upstream = await self._dial(url.hostname or "", url.port or 80)
                origin = url.path or "/"
                if url.query:
                    origin += "?" + url.query
                headers = [
                    h for h in rest.split(b"\r\n")
                    if h and not h.lower().startswith((b"connection:", b"proxy-"))
                ]  # fmt: skip
                upstream.write(
                    f"{method} {origin} {version}\r\n".encode("latin-1")
                    + b"\r\n".join([*headers, b"Connection: close"])
                    + b"\r\n\r\n"
                )
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for end in (upstream, writer):
                if end is not None:
                    with contextlib.suppress(Exception):
                        end.close()

    async def _dial(self, host: str, port: int) -> tuple[asyncio.StreamReader, Any]:
        return await asyncio.open_connection(host, port, local_addr=(self.egress, 0))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(64 * 1024):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(Exception):
            if sink.can_write_eof():
                sink.write_eof()
