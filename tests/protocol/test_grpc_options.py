"""The hub's and the agent's gRPC options agree: what one end sends the other accepts,
and the agent never pings more often than the hub permits (else GOAWAY too_many_pings).

Plain data: nothing here runs under an async backend.
"""

from __future__ import annotations

from protocol.chunks import MAX_FRAME, encode_chunk
from protocol.grpc_options import MAX_MESSAGE, channel_options, server_options


def test_both_ends_use_one_message_limit_above_the_largest_frame() -> None:
    hub, agent = dict(server_options()), dict(channel_options())
    for key in ("grpc.max_receive_message_length", "grpc.max_send_message_length"):
        assert hub[key] == agent[key] == MAX_MESSAGE
    largest = encode_chunk("t" * 200, 2**31 - 1, 2**63 - 1, bytes(MAX_FRAME))
    assert len(largest) < MAX_MESSAGE


def test_the_agent_pings_no_more_often_than_the_hub_permits() -> None:
    hub, agent = dict(server_options()), dict(channel_options())
    assert agent["grpc.keepalive_time_ms"] >= hub["grpc.http2.min_recv_ping_interval_without_data_ms"]
    assert hub["grpc.http2.max_ping_strikes"] == 0  # and an early ping is never held against it
    assert agent["grpc.keepalive_permit_without_calls"] == hub["grpc.keepalive_permit_without_calls"] == 1


def test_the_hub_keepalive_interval_is_a_setting() -> None:
    assert dict(server_options(keepalive_seconds=7.5))["grpc.keepalive_time_ms"] == 7500
