"""Serve an ASGI app with uvicorn inside the hub's own event loop.

The hub process owns signals, logging and lifetime, so uvicorn is embedded
rather than run: no signal handlers (the hub's task group cancels us), no
logging configuration and no access log (URLs and headers stay out of logs),
no lifespan (the hub starts its services itself). We bind the listening
socket ourselves so a busy port is a clear ``ConfigError`` instead of
uvicorn's ``sys.exit``. uvicorn runs on asyncio only, like the rest of the hub.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import anyio
import uvicorn

from bupmesh.config import ConfigError

log = logging.getLogger("bupmesh.hub.http")

# Time given to requests in flight when the server is cancelled.
SHUTDOWN_GRACE_SECONDS = 5.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling: the hub process decides when HTTP stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


async def serve_http(
    app: Any,
    host: str,
    port: int,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` (HTTPS with ``certfile``/``keyfile``) until cancelled."""
    if bool(certfile) != bool(keyfile):
        raise ConfigError("tls: give both cert_file and key_file, or neither")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"tls: cannot load certificate or key: {detail}") from None
    sock = _listen(host, port)
    server = _EmbeddedServer(config)
    scheme = "https" if certfile else "http"
    log.info("HTTP API listening on %s://%s:%d", scheme, host, sock.getsockname()[1])
    finished = False
    try:
        await server.serve(sockets=[sock])
        finished = True
    finally:
        if not finished and server.started:
            # Cancelled: stop listening and let requests in flight finish briefly.
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE_SECONDS * 2):
                await server.shutdown(sockets=[sock])
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, *_, address = infos[0]
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as exc:
        detail = exc.strerror or exc
        raise ConfigError(f"http_listen: cannot listen on {host}:{port}: {detail}") from None
