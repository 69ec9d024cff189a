"""The loopback HTTP proxy: both proxy forms reach the simulator from the proxy's egress."""

from __future__ import annotations

import socket

import httpx

from tests.conftest import SimServer
from tests.support.httpproxy import HttpProxy


def test_forwarded_requests_leave_from_the_egress(sim: SimServer) -> None:
    with HttpProxy(egress="127.0.0.42") as proxy, httpx.Client(proxy=proxy.url) as client:
        for _ in range(3):  # one connection per request: each is closed after its reply
            zone = client.get(f"{sim.url}/x/web-interface/zone").json()
            assert zone["data"]["addr"] == "127.0.0.42"
        big = client.post(f"{sim.url}/upcdn/cs_tx/OK", content=bytes(300_000))
        assert big.status_code == 200
    assert proxy.requests[0] == f"GET {sim.url}/x/web-interface/zone"


def test_connect_tunnels_leave_from_the_egress(sim: SimServer) -> None:
    host, port = sim.url.removeprefix("http://").split(":")
    with HttpProxy(egress="127.0.0.43") as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            sock.sendall(
                f"GET /x/web-interface/zone HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                .encode()
            )
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
    assert b'"addr":"127.0.0.43"' in reply
    assert proxy.requests == [f"CONNECT {host}:{port}"]
