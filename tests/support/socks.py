"""A SOCKS5 proxy on loopback whose outgoing connections leave from one source address.

What a shared HTTP/SOCKS proxy does to a mesh: agents on different machines whose
Bilibili traffic all leaves through it, so Bilibili sees one address (the
proxy's ``source``) whatever address each agent reports. CONNECT only, no
authentication; a thread per direction per connection (tests open a handful).
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress


class Socks5Proxy:
    def __init__(self, source: str, host: str = "127.0.0.1") -> None:
        self.source = source  # the address the proxy's outgoing connections leave from
        self._listener = socket.create_server((host, 0))
        self.address = f"{host}:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"socks5://{self.address}"

    def start(self) -> Socks5Proxy:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._closed.set()
        with suppress(OSError):
            self._listener.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self._handshake(client)
        except (OSError, ValueError):
            client.close()
            return
        self._spawn(_pipe, client, upstream)
        _pipe(upstream, client)

    def _handshake(self, client: socket.socket) -> socket.socket:
        version, count = _read(client, 2)
        if version != 5:
            raise ValueError("not SOCKS5")
        _read(client, count)  # offered methods: we take "no authentication"
        client.sendall(b"\x05\x00")
        version, command, _, kind = _read(client, 4)
        if version != 5 or command != 1:  # CONNECT only
            client.sendall(b"\x05\x07\x00\x01" + bytes(6))
            raise ValueError("only CONNECT")
        if kind == 1:
            host = socket.inet_ntoa(_read(client, 4))
        elif kind == 3:
            host = _read(client, _read(client, 1)[0]).decode()
        else:
            client.sendall(b"\x05\x08\x00\x01" + bytes(6))
            raise ValueError("address type")
        (port,) = struct.unpack("!H", _read(client, 2))
        try:
            upstream = socket.create_connection((host, port), timeout=10,
                                                source_address=(self.source, 0))
        except OSError:
            client.sendall(b"\x05\x05\x00\x01" + bytes(6))
            raise
        upstream.settimeout(None)
        bound_host, bound_port = upstream.getsockname()[:2]
        client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(bound_host)
                       + struct.pack("!H", bound_port))
        return upstream


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("closed during the handshake")
        data += chunk
    return data


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()
