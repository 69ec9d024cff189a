"""The simulator's faults: random 5xx and delays, dropped and stalled requests, fail_next
rules, bandwidth caps.

Every test talks plain HTTP to a real simulator process (the `sim` fixture,
reset before each test): real sockets are what connection drops, stalls and
source IPs need (see `uploader.sim.inbound`).
"""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.flow import COOKIES, Flow, client, submit_body


def test_random_5xx(sim: SimServer) -> None:
    sim.config(faults={"status_5xx_rate": 1.0})
    reply = Flow(sim, 10).preupload()
    assert reply.status_code in (500, 502, 503, 504)
    sim.config(faults={"status_5xx_rate": 0.0})
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"status_5xx_rate": 1.0})
    assert flow.put(1, data).status_code >= 500
    assert flow.complete().status_code >= 500


def test_5xx_rate_is_seeded(sim: SimServer) -> None:
    def outcomes() -> list[int]:
        sim.reset()
        sim.config(seed=7, faults={"status_5xx_rate": 0.5})
        return [Flow(sim, 10).preupload().status_code for _ in range(12)]

    first = outcomes()
    assert first == outcomes()
    assert 200 in first and any(status >= 500 for status in first)


def test_delay(sim: SimServer) -> None:
    sim.config(faults={"delay_seconds": 0.3})
    started = time.perf_counter()
    assert Flow(sim, 10).preupload().status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_drop_put_resets_the_connection(sim: SimServer) -> None:
    sim.config(chunk_size=4 * 1024 * 1024, faults={"drop_put_rate": 1.0})
    data = os.urandom(4 * 1024 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        flow.put(1, data)
    assert [r["status"] for r in sim.requests() if r["op"] == "put"] == [0]
    sim.config(faults={"drop_put_rate": 0.0})
    assert flow.put(1, data).status_code == 200  # the sim keeps serving


def test_fail_next_status_code_drop_and_ip_filter(sim: SimServer) -> None:
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(
        faults={
            "fail_next": [
                {"op": "put", "action": "status", "status": 503, "count": 2},
                {"op": "put", "action": "code", "code": 601, "ip": "127.0.0.9"},
                {"op": "complete", "action": "code", "code": 601},
                {"op": "submit", "action": "code", "code": 21540},
            ]
        }
    )
    assert flow.put(1, data).status_code == 503
    assert flow.put(1, data).status_code == 503
    assert flow.put(1, data).status_code == 200  # count used up; the 127.0.0.9 rule stays
    code = flow.complete()
    assert code.status_code == 200 and code.json()["code"] == 601 and code.json()["OK"] == 0
    assert flow.complete().json()["OK"] == 1
    remaining = sim.config()["faults"]["fail_next"]
    assert [(r["op"], r.get("ip")) for r in remaining] == [("put", "127.0.0.9"), ("submit", None)]
    submit = httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"csrf": "sim-csrf"},
        json=submit_body(flow.filename, flow.pre["biz_id"]),
        cookies=COOKIES,
    )
    assert submit.json()["code"] == 21540

    sim.config(faults={"fail_next": [{"op": "preupload", "action": "drop"}]})
    with pytest.raises(httpx.TransportError):
        Flow(sim, 10).preupload()
    sim.config(faults={"fail_next": [{"op": "preupload", "action": "status", "status": 406}]})
    assert Flow(sim, 10).preupload().status_code == 406


def test_fail_next_drop_put_mid_body(sim: SimServer) -> None:
    sim.config(chunk_size=4 * 1024 * 1024)
    data = os.urandom(4 * 1024 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"fail_next": [{"op": "put", "action": "drop"}]})
    with pytest.raises(httpx.TransportError):
        flow.put(1, data)
    assert flow.put(1, data).status_code == 200


def test_fail_next_stall(sim: SimServer) -> None:
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"fail_next": [{"op": "put", "action": "stall", "seconds": 0.5}]})
    started = time.perf_counter()
    assert flow.put(1, data).status_code == 200
    assert time.perf_counter() - started >= 0.5
    sim.config(faults={"fail_next": [{"op": "complete", "action": "stall"}]})  # stalls for good
    with pytest.raises(httpx.ReadTimeout):
        flow.http.post(
            flow.url,
            params={"output": "json", "uploadId": flow.upload_id, "biz_id": flow.pre["biz_id"]},
            json={"parts": [{"partNumber": 1, "eTag": "etag"}]},
            headers=flow.auth,
            timeout=0.5,
        )
    assert flow.complete().json()["OK"] == 1


def test_fail_next_stall_put_for_good(sim: SimServer) -> None:
    sim.config(chunk_size=1024 * 1024)
    data = os.urandom(1024 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    sim.config(faults={"fail_next": [{"op": "put", "action": "stall"}]})
    with client(timeout=0.5) as impatient, pytest.raises(httpx.TimeoutException):
        flow.put(1, data, http=impatient)
    assert flow.put(1, data).status_code == 200
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(data).hexdigest()


def test_bandwidth_cap_per_ip(sim: SimServer) -> None:
    size = 2 * 1024 * 1024
    sim.config(chunk_size=size, faults={"bandwidth_bps_per_ip": {"127.0.0.2": 4_000_000}})
    data = os.urandom(size)

    def timed_put(ip: str) -> float:
        flow = Flow(sim, size, ip=ip)
        flow.preupload()
        flow.init()
        started = time.perf_counter()
        assert flow.put(1, data).status_code == 200
        return time.perf_counter() - started

    capped = timed_put("127.0.0.2")
    free = timed_put("127.0.0.3")
    assert capped >= 0.4  # 2 MiB at 4 MB/s is ~0.52 s, less the initial burst
    assert free < capped / 3
    sim.config(faults={"bandwidth_bps": 4_000_000, "bandwidth_bps_per_ip": {"127.0.0.2": 0}})
    assert timed_put("127.0.0.3") >= 0.4  # the default cap now applies to every IP
    assert timed_put("127.0.0.2") < 0.3  # ... except one exempted by an override of 0
