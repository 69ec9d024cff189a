"""`bupmesh sim-bili`: serve the Bilibili simulator (member + upos on one port)."""

from __future__ import annotations

import argparse

from bupmesh.config import ConfigError, load_config, parse_host_port
from uploader.sim.config import SimConfig, SimFileConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", metavar="H:P", help="address to serve on (default 127.0.0.1:12390)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML or JSON simulator config (the /_sim/config shape)"
    )
    parser.add_argument(
        "--chunk-size", type=int, metavar="BYTES", help="chunk_size preupload hands out"
    )
    parser.add_argument("--threads", type=int, metavar="N", help="threads preupload hands out")
    parser.add_argument("--seed", type=int, metavar="N", help="seed for fault rates and ids")
    from bupmesh.logs import add_arguments as log_arguments

    log_arguments(parser)


def settings(args: argparse.Namespace) -> tuple[str, int, SimConfig]:
    loaded = load_config(
        SimFileConfig,
        file=args.config,
        env_keys={"BUPMESH_SIM_LISTEN": "listen"},
        flags={
            "listen": args.listen,
            "chunk_size": args.chunk_size,
            "threads": args.threads,
            "seed": args.seed,
        },
    )
    host, port = parse_host_port(loaded.listen, key="listen")
    fields = {name: getattr(loaded, name) for name in SimConfig.__struct_fields__}
    return host, port, SimConfig(**fields)


def run(args: argparse.Namespace) -> int:
    host, port, config = settings(args)
    from bupmesh.logs import setup_logging

    # The simulator's built-in account is fake, but its log is scrubbed the same way.
    setup_logging(getattr(args, "log_level", "WARNING"), getattr(args, "log_format", "human"))
    import uvicorn  # imported here so `bupmesh --help` stays fast

    from uploader.sim.app import build_app

    server = uvicorn.Server(
        uvicorn.Config(
            build_app(config),
            host=host,
            port=port,
            http="httptools",
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            log_config=None,  # keep bupmesh.logs' handler (scrubbing, --log-format)
            access_log=False,
            # Source IPs matter (risk model): never take them from X-Forwarded-For.
            proxy_headers=False,
            # Idle keep-alive like a real front end, so pooled client
            # connections are not closed under a client between chunks.
            timeout_keep_alive=75,
            timeout_graceful_shutdown=2,
            ws="none",
        )
    )
    print(f"bupmesh sim-bili: serving on http://{host}:{port}", flush=True)
    try:
        server.run()
    except OSError as exc:  # e.g. address in use
        raise ConfigError(f"listen: cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return 0 if server.started else 1
