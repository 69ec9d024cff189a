"""serve_http: uvicorn embedded in our loop, HTTPS with trustme, clean stop on cancel.

uvicorn is asyncio-only (as is the hub process), so these run on asyncio alone.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bupmesh.config import ConfigError
from hub.api.server import serve_http
from tests.conftest import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


async def hello(request: object) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "success", "data": {"status": "ok"}})


APP = Starlette(routes=[Route("/healthz", hello)])


def write_cert(tmp_path: Path) -> tuple[trustme.CA, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, str(certfile), str(keyfile)


async def get_when_up(client: httpx.AsyncClient, url: str) -> httpx.Response:
    with anyio.fail_after(10):
        while True:
            try:
                return await client.get(url)
            except httpx.ConnectError:
                await anyio.sleep(0.05)


def port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_https_with_a_private_ca_and_clean_cancel(tmp_path: Path) -> None:
    ca, certfile, keyfile = write_cert(tmp_path)
    port = free_port()
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_http(APP, "127.0.0.1", port, certfile=certfile, keyfile=keyfile)
            )
            async with httpx.AsyncClient(verify=trusted) as client:
                response = await get_when_up(client, f"https://127.0.0.1:{port}/healthz")
                assert response.json()["data"] == {"status": "ok"}
                # An open keep-alive connection must not hold up the stop.
                tg.cancel_scope.cancel()
    assert port_is_closed(port)


async def test_untrusted_client_and_plain_http_are_refused(tmp_path: Path) -> None:
    _, certfile, keyfile = write_cert(tmp_path)
    port = free_port()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_http(APP, "127.0.0.1", port, certfile=certfile, keyfile=keyfile)
            )
            async with httpx.AsyncClient() as client:  # system trust store only
                with anyio.fail_after(10):
                    while True:
                        try:
                            await client.get(f"https://127.0.0.1:{port}/healthz")
                        except httpx.ConnectError as exc:
                            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                                break
                            await anyio.sleep(0.05)
                        else:
                            pytest.fail("an untrusted certificate was accepted")
                with pytest.raises(httpx.HTTPError):
                    await client.get(f"http://127.0.0.1:{port}/healthz")
            tg.cancel_scope.cancel()
    assert port_is_closed(port)


async def test_plain_http_and_cancel_releases_the_port() -> None:
    port = free_port()
    for _ in range(2):  # the second round proves the first released the port
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_http, APP, "127.0.0.1", port)
                async with httpx.AsyncClient() as client:
                    response = await get_when_up(client, f"http://127.0.0.1:{port}/healthz")
                    assert response.status_code == 200
                    assert "server" not in response.headers
                tg.cancel_scope.cancel()
        assert port_is_closed(port)


async def test_busy_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with anyio.fail_after(10), pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            await serve_http(APP, "127.0.0.1", port)


async def test_tls_misconfiguration_is_a_config_error(tmp_path: Path) -> None:
    _, certfile, keyfile = write_cert(tmp_path)
    port = free_port()
    with anyio.fail_after(10):
        with pytest.raises(ConfigError, match="both"):
            await serve_http(APP, "127.0.0.1", port, certfile=certfile)
        with pytest.raises(ConfigError, match="tls"):
            await serve_http(
                APP, "127.0.0.1", port, certfile=str(tmp_path / "missing.pem"), keyfile=keyfile
            )
        (tmp_path / "junk.pem").write_text("not a certificate")
        with pytest.raises(ConfigError, match="tls"):
            await serve_http(
                APP, "127.0.0.1", port, certfile=str(tmp_path / "junk.pem"), keyfile=keyfile
            )
    assert port_is_closed(port)
