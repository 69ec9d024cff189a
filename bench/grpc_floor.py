"""The floor under the mesh's link: grpcio alone streaming the same bytes, on loopback.

Two processes, as hub and agent are: a ``grpc.aio`` server streams ``--size-mb``
of bytes in ``--frame-kb`` messages to a ``grpc.aio`` client over one call, with
the link's own channel options (:mod:`protocol.grpc_options`) and pass-through
(de)serializers, so no Python code of ours touches a byte: the sender yields one
prebuilt ``bytes`` object again and again, the receiver only counts what it
gets. What this costs per GiB is what grpcio itself costs the hub (send) and the
agent (receive); the mesh's figures from ``bench/mesh.py`` sit on top of it.

    .venv/bin/python bench/grpc_floor.py [--size-mb 1024] [--frame-kb 1024] [--runs 3]

Prints, per run and as medians: MB/s, sender and receiver CPU seconds per GiB
(user + system, from /proc/PID/stat).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import cpu_seconds, median  # noqa: E402

SERVICE = "bupmesh.bench.Floor"
METHOD = f"/{SERVICE}/Stream"


def _passthrough(data: bytes) -> bytes:
    return data


async def serve(port: int) -> None:
    import grpc

    from protocol.grpc_options import server_options

    async def stream(request: bytes, context: object):  # noqa: ANN202 - an async generator
        size, frame = (int(x) for x in request.decode().split(","))
        payload = b"\xa5" * frame
        sent = 0
        while sent < size:
            n = min(frame, size - sent)
            yield payload if n == frame else payload[:n]
            sent += n

    server = grpc.aio.server(options=server_options())
    handler = grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=_passthrough, response_serializer=_passthrough)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Stream": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def receive(port: int, size: int, frame: int) -> None:
    """Print ``seconds cpu_seconds`` of the stream alone (start-up and imports excluded)."""
    import grpc

    from protocol.grpc_options import channel_options

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as ch:
        await ch.channel_ready()
        cpu0, t0 = _own_cpu(), time.monotonic()
        call = ch.unary_stream(METHOD, request_serializer=_passthrough,
                               response_deserializer=_passthrough)(f"{size},{frame}".encode())
        got = 0
        async for message in call:
            got += len(message)
        print(time.monotonic() - t0, _own_cpu() - cpu0, flush=True)
    if got != size:
        raise SystemExit(f"received {got} bytes, expected {size}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--frame-kb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size, frame = args.size_mb << 20, args.frame_kb << 10
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if args.receive:
        asyncio.run(receive(args.receive, size, frame))
        return 0

    from bupmesh.localmesh import free_port

    port = free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen([*me, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        gib = size / 2**30
        rates, send_cpu, recv_cpu = [], [], []
        for run in range(args.runs):
            before = cpu_seconds(server.pid)
            client = subprocess.run([*me, "--receive", str(port), "--size-mb", str(args.size_mb),
                                     "--frame-kb", str(args.frame_kb)],
                                    capture_output=True, text=True, timeout=1800)
            if client.returncode != 0:
                raise SystemExit(f"receiver failed: {client.stderr.strip()}")
            elapsed, cpu = (float(x) for x in client.stdout.split())
            rates.append(size / elapsed / 1e6)
            send_cpu.append((cpu_seconds(server.pid) - before) / gib)  # idle between runs
            recv_cpu.append(cpu / gib)
            print(f"run {run + 1}: {rates[-1]:.1f} MB/s; CPU s/GiB sender {send_cpu[-1]:.2f}, "
                  f"receiver {recv_cpu[-1]:.2f}", flush=True)
        print(f"\n{args.size_mb} MiB in {args.frame_kb} KiB messages, medians of {args.runs}:")
        print(f"throughput                {median(rates):8.1f} MB/s")
        print(f"sender CPU s/GiB          {median(send_cpu):8.2f}   (grpcio's send path)")
        print(f"receiver CPU s/GiB        {median(recv_cpu):8.2f}   (grpcio's receive path)")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
