"""The gRPC channel options of the link, for both ends in one place.

The two lists must agree: an agent that pings more often than the hub permits
gets ``GOAWAY too_many_pings`` and loses its stream, and a message limit one end
accepts but the other refuses turns into RESOURCE_EXHAUSTED in the middle of a
transfer. Plain data (no gRPC import), so either end and the load generator can
use it.
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE = 4 << 20
"""Largest message either end sends or accepts (4 MiB, gRPC's default receive limit).

The largest message on the link is a ``Chunk`` of at most 1 MiB of data plus a few
dozen bytes of fields; an Offer with credentials, a Hello listing held tasks or a
Submit with its archive description stay in kilobytes. Four times the largest
frame is ample headroom; a higher limit would only let a broken peer make the
other end buffer more before the message is refused (RESOURCE_EXHAUSTED)."""

MAX_SUBMIT_COVER = 768 << 10
"""Largest cover image one ``Submit`` carries (768 KiB).

A cover travels inside its Submit rather than in chunks of its own: live covers
and cover art are JPEGs of a few hundred KiB (Bilibili shows them at 1146x717),
and one message keeps a Submit one request with one answer. The cap keeps the
Submit (cover, archive JSON with up to 100 parts, credentials) within the 1 MiB
a Chunk may be, so no message on the link is larger than a frame of data."""

KEEPALIVE_SECONDS = 20.0
"""The agent pings this often so that a half-open link (NAT state dropped, a peer
gone without a FIN) is noticed within ``KEEPALIVE_SECONDS + PING_TIMEOUT_MS``; the
hub pings its side as often."""

PING_TIMEOUT_MS = 10_000
"""An unanswered ping ends the link after this long (gRPC's default is 60 s)."""

MIN_PING_INTERVAL_MS = 5_000
"""The most frequent pings without data the hub permits; well below the agent's
:data:`KEEPALIVE_SECONDS`, so an agent never collects a ping strike."""

_MESSAGE_LIMITS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


def server_options(*, keepalive_seconds: float = KEEPALIVE_SECONDS) -> list[tuple[str, Any]]:
    """The hub's server: keepalive both ways, agents' pings permitted, the message limits."""
    return [
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept pings on an idle link (no data frames) as often as every 5 s and never
        # count strikes: an agent between tasks sends nothing but pings and heartbeats.
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.max_ping_strikes", 0),
        *_MESSAGE_LIMITS,
    ]


def channel_options() -> list[tuple[str, Any]]:
    """The agent's channel: keepalive pings the hub permits, the same message limits."""
    return [
        ("grpc.keepalive_time_ms", int(KEEPALIVE_SECONDS * 1000)),
        ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Any unanswered ping (also the flow-control BDP probe, which otherwise keeps the
        # keepalive ping from being sent) ends a dead link within 10 s, not the 60 s default.
        ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
        *_MESSAGE_LIMITS,
        # The agent's own backoff decides when to dial again.
        ("grpc.enable_retries", 0),
    ]
