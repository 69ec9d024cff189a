"""``bupmesh hub``: its flags, layered over env, YAML and defaults (docs/reference.md)."""

from __future__ import annotations

import argparse

import anyio

from bupmesh.logs import register_secret_url, setup_logging
from hub.config import load_hub_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    parser.add_argument("--data-dir", metavar="DIR", help="SQLite database and key material "
                        "(default ./data; env BUPMESH_DATA_DIR)")
    parser.add_argument("--http-listen", metavar="H:P", help="admin HTTP API (default 0.0.0.0:12380)")
    parser.add_argument("--grpc-listen", metavar="H:P", help="agent link (default 0.0.0.0:12382)")
    parser.add_argument("--psk", metavar="S", help="pre-shared key agents register with "
                        "(env BUPMESH_PSK)")
    parser.add_argument("--admin-token", metavar="S", help="bearer token of the admin API "
                        "(env BUPMESH_ADMIN_TOKEN)")
    parser.add_argument("--tls-cert", metavar="F", help="TLS certificate (PEM) for gRPC and HTTP")
    parser.add_argument("--tls-key", metavar="F", help="TLS private key (PEM)")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="serve plaintext (no --tls-cert/--tls-key)")
    parser.add_argument("--bili-member-url", metavar="URL",
                        help="Bilibili member API base (env BUPMESH_BILI_MEMBER_URL)")
    parser.add_argument("--compression", choices=["none", "gzip"],
                        help="gRPC compression of the agent link (default none: video "
                        "does not compress)")
    parser.add_argument("--heartbeat-interval", metavar="SECONDS", type=float,
                        help="agent heartbeat interval sent in Welcome (default 30)")
    parser.add_argument("--offline-after", metavar="SECONDS", type=float,
                        help="mark an agent offline after this long without a heartbeat "
                        "(default 90)")
    from bupmesh.logs import add_arguments as add_log_arguments

    add_log_arguments(parser)
    # `bupmesh hub gen-cert`: the one hub subcommand; plain `bupmesh hub` runs the hub.
    commands = parser.add_subparsers(dest="hub_command", metavar="{gen-cert}")
    from hub import certs

    certs.configure(commands.add_parser(
        "gen-cert", help="create a CA and a TLS server certificate for the hub",
        description="Create a private CA (ca.pem, ca.key) and a hub server certificate "
        "(hub.crt, hub.key) signed by it; agents get ca.pem as --ca-file."))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "hub_command", None) == "gen-cert":
        from hub import certs

        return certs.run(args)
    config = load_hub_config(
        file=args.config,
        flags={
            "data_dir": args.data_dir,
            "http_listen": args.http_listen,
            "grpc_listen": args.grpc_listen,
            "psk": args.psk,
            "admin_token": args.admin_token,
            "tls.cert_file": args.tls_cert,
            "tls.key_file": args.tls_key,
            "insecure": args.insecure,
            "bilibili.member_url": args.bili_member_url,
            "compression": args.compression,
            "heartbeat.interval_seconds": args.heartbeat_interval,
            "heartbeat.offline_after_seconds": args.offline_after,
        },
    )
    # Every secret the hub knows from its settings is scrubbed from every log line
    # (bupmesh.logs); noisy library loggers are kept to warnings there too.
    setup_logging(args.log_level, args.log_format,
                  secrets=[config.psk, config.admin_token, config.ingest.webhook_secret])
    register_secret_url(config.alerts.webhook_url)
    from hub.app import run_hub

    anyio.run(run_hub, config, backend="asyncio")
    return 0
