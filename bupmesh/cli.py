"""The one command, ``bupmesh``, and its subcommands.

Each subcommand lives in the package it belongs to (``hub/command.py``,
``spoke/command.py``, ...) and exposes ``configure(parser)`` and
``run(args) -> int``. They are imported only when chosen, so ``bupmesh
sim-bili`` never pays for gRPC and ``bupmesh --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bupmesh.config import ConfigError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("hub.command", "run the hub: files, database, schedule, admin HTTP API"),
    "agent": ("spoke.command", "run one or more agents that dial the hub and upload"),
    "sim-bili": ("uploader.sim.command", "run the Bilibili simulator (member + upos)"),
    "upload": ("client.upload", "ask a hub to upload a file"),
    "recordings": ("client.recordings", "list a hub's recordings (and submit one)"),
    "upload-direct": ("uploader.command", "upload a file straight from this machine, no mesh"),
    "account": ("client.account", "add, list, check or delete the hub's Bilibili accounts"),
    "risk": ("client.risk", "the hub's risk ledgers: IPs, accounts, learned limits, captchas"),
    "demo": ("bupmesh.demo", "simulator + hub + three agents uploading a recording"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bupmesh",
        description="Upload live-stream recordings to Bilibili through a mesh of agents.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Two passes: the first only finds the subcommand, so that only its module
    # is imported to add its own flags.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    sub_parser = parser._subparsers._group_actions[0].choices[known.command]  # type: ignore[union-attr]
    module.configure(sub_parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"bupmesh {known.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
