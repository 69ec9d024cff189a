"""``bupmesh agent``: run one agent (flags/env/agent.yml) or every agent of a multi-agent file.

Runs anyio on the asyncio backend (grpc.aio needs it). SIGTERM or SIGINT
drains gracefully: no new offers, running uploads get the grace period, the
rest are handed back, the stream is closed, exit 0.
"""

from __future__ import annotations

import argparse
import signal

import anyio

from bupmesh.logs import add_arguments as log_arguments
from bupmesh.logs import setup_logging
from spoke.config import AgentSettings, load_agents, parse_tags
from spoke.memory import tune_malloc


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", metavar="FILE", help="agent.yml (single agent) or a multi-agent file")
    add("--server-url", metavar="H:P", help="hub gRPC address (env SERVER_URL)")
    add("--agent-id", metavar="ID", help="this agent's id (env AGENT_ID)")
    add("--agent-name", metavar="N", help="display name (env AGENT_NAME)")
    add("--token", metavar="PSK", help="pre-shared key to register with (env AGENT_TOKEN)")
    add("--max-concurrent", type=int, metavar="N", help="parallel uploads (default 2)")
    add("--buffer-size-mb", type=int, metavar="MB", help="credit budget for all tasks (default 64)")
    add("--source-ip", metavar="IP", help="bind outgoing Bilibili connections to this address")
    add("--ip-address", metavar="IP", help="egress IP reported to the hub")
    add("--proxy", metavar="URL", help="http(s)/socks5 proxy for Bilibili traffic")
    add("--tag", action="append", metavar="K=V", help="tag reported to the hub (repeatable)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--ca-file", metavar="F", help="CA certificate that signed the hub's cert")
    tls.add_argument(
        "--insecure", action="store_true", default=None, help="plaintext gRPC (no TLS)"
    )
    add("--compression", choices=["none", "gzip"], help="gRPC message compression (default none)")
    add("--bandwidth-mbps", type=int, metavar="N", help="advertised upload bandwidth")
    add("--storage-type", choices=["network", "local", "hybrid"], help="advertised storage type")
    add(
        "--local-root",
        action="append",
        metavar="DIR",
        help="local/hybrid: a directory of the hub's files readable here at the same path "
        "(repeatable); parts found there are uploaded from disk, not streamed",
    )
    add(
        "--bili-api-url",
        metavar="URL",
        help="Bilibili web API base, asked which address it sees this agent at "
        "(default https://api.bilibili.com; env BUPMESH_BILI_API_URL)",
    )
    add(
        "--egress-check-interval",
        metavar="DUR",
        help="how often to ask Bilibili for this agent's egress address (default 300s; 0: never)",
    )
    log_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> list[AgentSettings]:
    flags = {
        "server.url": args.server_url,
        "agent.id": args.agent_id,
        "agent.name": args.agent_name,
        "agent.token": args.token,
        "agent.max_concurrent_uploads": args.max_concurrent,
        "agent.buffer_size_mb": args.buffer_size_mb,
        "agent.source_ip": args.source_ip,
        "agent.ip_address": args.ip_address,
        "agent.proxy": args.proxy,
        "tags": parse_tags(args.tag),
        "server.cert_file": args.ca_file,
        "server.insecure": args.insecure,
        "agent.compression": args.compression,
        "agent.bandwidth_mbps": args.bandwidth_mbps,
        "agent.storage_type": args.storage_type,
        "agent.local_roots": args.local_root,
        "bilibili.api_url": args.bili_api_url,
        "agent.egress_check_interval": args.egress_check_interval,
    }
    if args.ca_file:
        flags["server.tls"] = True
    return load_agents(file=args.config, flags=flags)


def run(args: argparse.Namespace) -> int:
    agents = settings_from_args(args)
    tune_malloc()
    # The PSK of every agent in this process is scrubbed from every log line; JWTs
    # and cookie-shaped values are recognised by shape (bupmesh.logs).
    setup_logging(args.log_level, args.log_format, secrets=[s.token for s in agents])
    anyio.run(_main, agents, backend="asyncio")
    return 0


async def _main(settings: list[AgentSettings]) -> None:
    from spoke.agent import Agent  # grpc import only once settings are valid

    agents = [Agent(s) for s in settings]
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    for agent in agents:
                        agent.stop()

        async def run_all() -> None:
            async with anyio.create_task_group() as inner:
                for agent in agents:
                    inner.start_soon(agent.run)
            tg.cancel_scope.cancel()  # every agent has drained: stop watching signals

        tg.start_soon(watch_signals)
        tg.start_soon(run_all)
