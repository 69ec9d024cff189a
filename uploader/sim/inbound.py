"""Reading a request as Bilibili would: who sent it, lenient numbers, the body, the connection.

The source address is the one the socket shows, never a forwarded header:
the risk model is about the IP Bilibili sees.

Backend-neutral (anyio) except :func:`abort_connection`: resetting a TCP
connection needs the server's transport, which only uvicorn's asyncio
protocol exposes. Elsewhere (an in-process ASGI client, another server) it
raises instead, so a test that wants a real reset serves the simulator with
``bupmesh sim-bili``.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
from starlette.requests import ClientDisconnect, Request

STALL_FOREVER = 3600.0


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def session_cookie(request: Request) -> str | None:
    """The ``SESSDATA`` cookie: what web routes know an account by."""
    return request.cookies.get("SESSDATA")


def host_of(request: Request) -> str:
    """The ``host:port`` the client reached us at; upos endpoints and probe URLs point there."""
    return request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"


def query_int(value: str | None) -> int | None:
    """An integer query value, or None when absent or not a number (checked by the caller)."""
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def clamped_int(value: str | None, default: int, low: int, high: int) -> int:
    """Paging values are forgiving, as the real API is: junk means the default."""
    try:
        return max(low, min(high, int(value))) if value else default
    except ValueError:
        return default


async def drain(request: Request) -> None:
    async for _ in request.stream():
        pass


async def stall_until_disconnect(request: Request) -> None:
    """Answer nothing: read and discard the rest of the body, wait for the client to go."""
    with anyio.move_on_after(STALL_FOREVER):
        try:
            async for _ in request.stream():
                pass
        except (ClientDisconnect, RuntimeError):  # gone, or the body was read already
            pass
        while (await request.receive())["type"] != "http.disconnect":
            pass


async def abort_connection(request: Request) -> None:
    """Reset the TCP connection under this request (uvicorn: no response is sent)."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # not uvicorn's protocol: the best we can do is an exception
        raise ConnectionAbortedError("simulated connection drop")
    transport.abort()
    # Let connection_lost run so uvicorn knows the client is gone and sends nothing.
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()
