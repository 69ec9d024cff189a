"""Keep gRPC's C core from writing credentials to stderr.

The C core logs to stderr by itself, outside Python logging and so outside the
scrubbing every bupmesh log line gets (``bupmesh.logs``). By default it writes
only errors, and no message body (the PSK in ``RegisterRequest``, cookies in an
``Offer``) is ever traced. But its tracers, switched on with ``GRPC_TRACE``
(``all``, ``chttp2_hpack_parser``, ...), print every request header, and the
agent's JWT travels in the ``authorization`` header of each stream: with
``GRPC_TRACE=all`` it appears in clear on both ends' stderr, whatever
``GRPC_VERBOSITY`` says. ``GRPC_VERBOSITY`` alone adds no header.

So the hub and the agent drop ``GRPC_TRACE`` before gRPC is loaded, unless
``BUPMESH_UNSAFE_GRPC_TRACE=1`` says the operator wants traces anyway (to debug
the link, knowing the output holds live tokens). Plain data, no gRPC import:
it must run before ``grpc`` is imported, when the core reads its environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

TRACE = "GRPC_TRACE"
OPT_IN = "BUPMESH_UNSAFE_GRPC_TRACE"


def quiet_grpc_core(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Drop ``GRPC_TRACE`` unless opted in; returns a warning to log, or None."""
    env = os.environ if environ is None else environ
    tracers = env.get(TRACE, "").strip()
    if not tracers:
        return None
    if env.get(OPT_IN) == "1":
        return (f"{TRACE}={tracers} with {OPT_IN}=1: gRPC traces on stderr may show agent "
                "tokens (request headers) in clear")
    del env[TRACE]
    late = " (gRPC was loaded already: it may still trace)" if "grpc" in sys.modules else ""
    return (f"ignoring {TRACE}={tracers}: gRPC's tracers print request headers, agent "
            f"tokens included, to stderr in clear; set {OPT_IN}=1 to trace anyway{late}")
