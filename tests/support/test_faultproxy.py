"""The fault proxy itself, against a plain echo server: each fault does what it claims.

The end-to-end failure tests trust the proxy to reset, stall and slow a link;
if it silently forwarded everything those tests would pass without testing
anything, so every control is checked here with bytes on real sockets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bupmesh.localmesh import wait_for
from tests.support.faultproxy import FaultProxy


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A threaded echo server on loopback; stops with the test."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    clients: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)  # idle is normal (blackhole tests); teardown closes it
            clients.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    stop.set()
    thread.join(5)
    server.close()
    for conn in clients:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)  # wakes the serving thread's recv
        conn.close()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(echo, lifetime=60) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += data
    return bytes(out)


def test_forwards_both_ways_byte_exact(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with connect(proxy) as sock:
        threading.Thread(target=sock.sendall, args=(payload,), daemon=True).start()
        assert recv_exactly(sock, len(payload)) == payload
    assert proxy.accepted == 1
    # The proxy counts a chunk once its write has drained, which may be just after the
    # echo reached us: wait for the counts to reach the payload, then check them exactly.
    wait_for(
        lambda: min(proxy.bytes_up, proxy.bytes_down) >= len(payload), 5, "the byte counts"
    )
    assert proxy.bytes_up == proxy.bytes_down == len(payload)
    wait_for(lambda: proxy.active == 0, 5, "the closed connection to be forgotten")


def test_cut_resets_open_connections_and_accepts_new_ones(proxy: FaultProxy) -> None:
    sock = connect(proxy)
    sock.sendall(b"hello")
    assert recv_exactly(sock, 5) == b"hello"
    assert proxy.cut() == 1
    with pytest.raises((ConnectionResetError, EOFError, BrokenPipeError)):
        # A reset shows on recv (ECONNRESET); at worst as EOF, never as data.
        for _ in range(3):
            sock.sendall(b"more")
            recv_exactly(sock, 4)
            time.sleep(0.05)
    sock.close()
    with connect(proxy) as again:
        again.sendall(b"after")
        assert recv_exactly(again, 5) == b"after"
    assert proxy.cuts == 1 and proxy.accepted == 2


def test_blackhole_stalls_without_closing_and_heal_delivers(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        proxy.blackhole()
        assert proxy.blackholed
        sock.sendall(b"stalled")
        sock.settimeout(0.7)
        with pytest.raises(TimeoutError):  # not EOF, not reset: silence
            sock.recv(16)
        # a connection opened meanwhile is accepted but stalled too
        late = connect(proxy)
        late.sendall(b"late")
        late.settimeout(0.5)
        with pytest.raises(TimeoutError):
            late.recv(16)
        proxy.heal()
        sock.settimeout(5)
        late.settimeout(5)
        assert recv_exactly(sock, 7) == b"stalled"
        assert recv_exactly(late, 4) == b"late"
        late.close()


def test_blackhole_hides_a_close_until_heal(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        proxy.blackhole()
        # Our FIN reaches the proxy (its reader was waiting in read()); it must not
        # end the connection, and so close the far side, while the route is dead.
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.7)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(16) == b""  # now the close goes through


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.set_latency(0.2)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0, elapsed


def test_bandwidth_cap_slows_a_transfer(proxy: FaultProxy) -> None:
    proxy.set_bandwidth(2 * 1024 * 1024)
    payload = b"z" * (1024 * 1024)
    with connect(proxy, timeout=10) as sock:
        started = time.monotonic()
        threading.Thread(target=sock.sendall, args=(payload,), daemon=True).start()
        assert recv_exactly(sock, len(payload)) == payload
        elapsed = time.monotonic() - started
    # 1 MiB through two 2 MiB/s hops (up and down pipelined): at least ~0.5 s
    assert elapsed >= 0.4, elapsed


def test_stop_closes_the_listener_and_is_idempotent(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(echo, lifetime=60).start()
    sock = connect(proxy)
    proxy.stop()
    proxy.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    sock.settimeout(2)
    with pytest.raises((ConnectionResetError, EOFError)):
        recv_exactly(sock, 1)
    sock.close()


def test_lifetime_bounds_a_forgotten_proxy(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(echo, lifetime=0.5).start()
    assert proxy._thread is not None
    proxy._thread.join(5)
    assert not proxy._thread.is_alive()
