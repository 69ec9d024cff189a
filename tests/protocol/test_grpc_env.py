"""protocol/grpc_env.py: GRPC_TRACE is dropped (its tracers print request headers, agent
JWTs included, to stderr) unless the operator opts in; nothing else is touched.
The real processes are checked in tests/e2e/test_identity.py."""

from __future__ import annotations

from protocol.grpc_env import OPT_IN, TRACE, quiet_grpc_core


def test_trace_is_dropped_unless_opted_in() -> None:
    env = {TRACE: "all", "GRPC_VERBOSITY": "debug", "OTHER": "x"}
    warning = quiet_grpc_core(env)
    assert env == {"GRPC_VERBOSITY": "debug", "OTHER": "x"}
    assert warning is not None and "ignoring GRPC_TRACE=all" in warning and OPT_IN in warning
    kept = {TRACE: "http,chttp2_hpack_parser", OPT_IN: "1"}
    assert "may show agent tokens" in (quiet_grpc_core(kept) or "")
    assert kept[TRACE] == "http,chttp2_hpack_parser"
    assert quiet_grpc_core({"GRPC_VERBOSITY": "debug"}) is None
    assert quiet_grpc_core({TRACE: " "}) is None
