"""The simulator's upload lines: the probe list and per-line probe delays.

Every test talks plain HTTP to a real simulator process (the `sim` fixture,
reset before each test): real sockets are what connection drops, stalls and
source IPs need (see `uploader.sim.inbound`).
"""

from __future__ import annotations

import time

import httpx

from tests.conftest import SimServer


def test_probe_lists_lines_and_line_delays_pick_the_fastest(sim: SimServer) -> None:
    # A whole second of delay: a loaded CI machine can spend 0.3 s on an undelayed ping.
    sim.config(lines={"cs_bda2": {"delay_seconds": 1.0}, "cs_tx": {"delay_seconds": 0.0}})
    reply = httpx.get(f"{sim.url}/preupload", params={"r": "probe"}).json()
    assert reply["OK"] == 1
    lines = {line["line"]: line for line in reply["lines"]}
    assert {"cs_bda2", "cs_tx", "cs_txa", "cs_alia", "cs_bldsa"} <= set(lines)
    assert lines["cs_tx"]["os"] == "upos"
    assert "upcdn=tx" in lines["cs_tx"]["query"] and "zone=cs" in lines["cs_tx"]["query"]
    costs = {}
    for name in ("cs_bda2", "cs_tx"):
        started = time.perf_counter()
        ping = httpx.post(f"http:{lines[name]['probe_url']}", content=bytes(102400))
        costs[name] = time.perf_counter() - started
        assert ping.status_code == 200
    assert costs["cs_bda2"] >= 1.0 > costs["cs_tx"]
    assert [r["line"] for r in sim.requests() if r["op"] == "probe" and "line" in r] == [
        "cs_bda2",
        "cs_tx",
    ]
