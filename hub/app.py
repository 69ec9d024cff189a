"""One hub process: the gRPC agent link and the admin HTTP API in one asyncio loop.

Start order matters for "nothing lost": the database is opened and unfinished
tasks are loaded (their old leases voided) before any agent can connect; on
SIGTERM/SIGINT the gRPC server stops first (streams end, agents reconnect to the
next hub run and get their tasks re-offered with the resume point), then HTTP
and the background loops, then the database closes.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import grpc

from bupmesh.config import ConfigError
from hub import gc_watch
from hub.accounts.store import AccountStore, load_or_create_key
from hub.agents.link import AgentLinkServicer, add_servicer
from hub.alerts.loop import run_alerts
from hub.api.app import build_http_app, http_auth
from hub.api.audit import AuditLog
from hub.api.server import serve_http
from hub.config import HubConfig
from hub.core.errors import StorageFull
from hub.pipeline import RecordingPipeline
from hub.rooms.book import RoomBook
from hub.rooms.store import RoomStore
from hub.service import HubService
from hub.store.tasks import Store
from protocol.grpc_options import server_options
from protocol.tokens import TokenIssuer, load_or_create_secret

log = logging.getLogger("bupmesh.hub")

DB_FILE = "bupmesh.db"
TOKEN_SECRET_FILE = "token.secret"
KEY_FILE = "secret.key"


@dataclass
class Hub:
    service: HubService
    grpc_server: grpc.aio.Server
    grpc_port: int
    link: AgentLinkServicer


async def build_service(config: HubConfig) -> HubService:
    """Open the data dir (0700), the database and key material; load state."""
    data = config.data_path
    try:
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot use {data}: {exc.strerror or exc}") from None
    cipher = load_or_create_key(data)
    store = Store(data / DB_FILE, cipher)
    accounts = AccountStore(data / DB_FILE, data / KEY_FILE)
    try:
        await store.open()
        await accounts.open()
    except StorageFull as exc:
        # A running hub rides out a full disk; one that cannot even open its database
        # (SQLite needs room for its journal) says so in one line.
        free = "unknown" if exc.free_bytes is None else exc.free_bytes
        raise ConfigError(f"data_dir: {exc.directory} is full ({free} bytes free), too full "
                          "to open the database; free some space and start the hub again"
                          ) from None
    tokens = TokenIssuer(
        load_or_create_secret(data / TOKEN_SECRET_FILE), ttl_seconds=config.token_ttl_seconds
    )
    rooms = RoomBook(config, RoomStore(data / DB_FILE))
    await rooms.open()  # before anything reads a room's settings
    service = HubService(config, store=store, accounts=accounts, tokens=tokens, rooms=rooms)
    service.space.watch(accounts)
    service.space.watch(rooms.store)
    await service.start()
    return service


async def start_grpc(service: HubService, config: HubConfig) -> Hub:
    compression = grpc.Compression.Gzip if config.compression == "gzip" else None
    server = grpc.aio.server(options=server_options(), compression=compression)
    link = AgentLinkServicer(service.auth, service.sessions)
    add_servicer(link, server)
    host, port = config.grpc_address
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if config.tls_enabled:
            key, cert = _read_pem(config.tls.key_file), _read_pem(config.tls.cert_file)
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            bound = server.add_insecure_port(address)
    except OSError as exc:
        raise ConfigError(f"tls: cannot read certificate or key: {exc.strerror or exc}") from None
    except RuntimeError as exc:
        raise ConfigError(f"grpc_listen: cannot listen on {address}: {exc}") from None
    if not bound:
        raise ConfigError(f"grpc_listen: cannot listen on {address}")
    await server.start()
    log.info("gRPC agent link listening on %s (%s)", address,
             "TLS" if config.tls_enabled else "plaintext")
    return Hub(service=service, grpc_server=server, grpc_port=bound, link=link)


def _read_pem(path: str | None) -> bytes:
    return Path(path or "").read_bytes()  # startup only; tiny file


async def run_hub(config: HubConfig) -> None:
    # Watched for the hub's life only: the interpreter's full collection at exit
    # would otherwise log a "pause" after the hub's last line (say, why it did not start).
    gc_watch.install()
    try:
        await _run_hub(config)
    finally:
        gc_watch.uninstall()


async def _run_hub(config: HubConfig) -> None:
    service = await build_service(config)
    audit = AuditLog(service.store)
    await audit.open()
    # Before agents: Hello hooks it. Retention records its actions in the audit log.
    pipeline = await RecordingPipeline.attach(service, audit=audit)
    hub = None
    try:
        hub = await start_grpc(service, config)
        auth = http_auth(service, config)
        app = build_http_app(service, config, auth=auth, extra_routes=pipeline.routes(auth),
                             audit=audit)
        host, port = config.http_address
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(service.run)
                tg.start_soon(pipeline.run)
                tg.start_soon(gc_watch.thaw_periodically)
                await tg.start(partial(run_alerts, recordings=pipeline.recordings), service,
                               config.alerts)
                tg.start_soon(lambda: serve_http(app, host, port, certfile=config.tls.cert_file,
                                                 keyfile=config.tls.key_file))
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("received %s: shutting down", signal.Signals(signum).name)
                        break
                await hub.grpc_server.stop(2.0)
                service.events.close()  # live-view streams end now, not at HTTP's grace limit
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A bad setting found by a child (busy HTTP port, unreadable TLS key) is one
            # clear line from the CLI, not a traceback of the task group.
            config_errors = group.subgroup(ConfigError)
            if config_errors is None:
                raise
            first: BaseException = config_errors
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
    finally:
        if hub is not None:
            with anyio.CancelScope(shield=True):
                await hub.grpc_server.stop(0)
                await hub.link.handlers_done()  # before the store they may still write to closes
        pipeline.close()
        service.close()
        if service.rooms is not None:
            service.rooms.close()
        service.accounts.close()
        service.store.close()
        log.info("hub stopped")
