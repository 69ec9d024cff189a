"""The one command, ``bupmesh``, and its subcommands.

Each subcommand lives in the package it belongs to (``hub/command.py``,
``spoke/command.py``, ...) and exposes ``configure(parser)`` and
``run(args) -> int``. They are imported only when chosen, so ``bupmesh
sim-bili`` never pays for gRPC and ``bupmesh --help`` stays instant.

A few commands are filed under another's name but live elsewhere (``NESTED``):
``bupmesh hub agent-token`` manages a hub's tokens, but as a client of its admin
API, so it lives in ``client/`` (which never imports the hub).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from bupmesh.config import ConfigError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("hub.command", "run the hub: files, database, schedule, admin HTTP API"),
    "agent": ("spoke.command", "run one or more agents that dial the hub and upload"),
    "sim-bili": ("uploader.sim.command", "run the Bilibili simulator (member + upos)"),
    "upload": ("client.upload", "ask a hub to upload a file"),
    "recordings": ("client.recordings", "list a hub's recordings (and submit one)"),
    "tasks": ("client.tasks", "list a hub's tasks, newest first, with filters"),
    "upload-direct": ("uploader.command", "upload a file straight from this machine, no mesh"),
    "account": ("client.account", "add, list, check or delete the hub's Bilibili accounts"),
    "risk": ("client.risk", "the hub's risk ledgers: IPs, accounts, learned limits, captchas"),
    "demo": ("bupmesh.demo", "simulator + hub + three agents uploading a recording"),
}
# (command, subcommand) -> (module, one-line help), routed before SUBCOMMANDS.
NESTED: dict[tuple[str, str], tuple[str, str]] = {
    ("hub", "agent-token"): ("client.agent_tokens",
                             "create, list or revoke per-agent tokens (over the hub's admin API)"),
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
    nested = NESTED.get((argv[0], argv[1])) if len(argv) >= 2 else None
    if nested is not None:
        module_name, help_text = nested
        command = f"{argv[0]} {argv[1]}"
        sub_parser = argparse.ArgumentParser(prog=f"bupmesh {command}", description=help_text)
        module = importlib.import_module(module_name)
        module.configure(sub_parser)
        return _run(module, sub_parser.parse_args(argv[2:]), command)
    parser = build_parser()
    # Two passes: the first only finds the subcommand, so that only its module
    # is imported to add its own flags.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    sub_parser = parser._subparsers._group_actions[0].choices[known.command]  # type: ignore[union-attr]
    module.configure(sub_parser)
    return _run(module, parser.parse_args(argv), known.command)


def _run(module: Any, args: argparse.Namespace, command: str) -> int:
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"bupmesh {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
