"""The simulator's ``/_sim`` control API: reset, config changes and accounts, bad bodies.

Every test talks plain HTTP to a real simulator process (the `sim` fixture,
reset before each test): real sockets are what connection drops, stalls and
source IPs need (see `uploader.sim.inbound`).
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.flow import COOKIES, Flow, submit_body


def test_reset_clears_everything(sim: SimServer) -> None:
    data = os.urandom(10)
    flow = Flow(sim, len(data))
    flow.upload_all(data)
    httpx.post(
        f"{sim.url}/x/vu/web/add/v3",
        params={"csrf": "sim-csrf"},
        json=submit_body(flow.filename, flow.pre["biz_id"]),
        cookies=COOKIES,
    )
    sim.config(chunk_size=123, risk={"preupload_budget": 1}, faults={"fail_next": [{"op": "put"}]})
    httpx.post(
        f"{sim.url}/_sim/accounts",
        json={"cookies": "SESSDATA=sim-sessdata; bili_jct=sim-csrf", "mid": 10001, "expired": True},
    )
    assert sim.uploads() and sim.submissions() and sim.requests()
    sim.reset()
    assert sim.uploads() == [] and sim.submissions() == [] and sim.requests() == []
    config = sim.config()
    assert config["chunk_size"] == 10 * 1024 * 1024
    assert config["risk"]["preupload_budget"] == 0 and config["faults"]["fail_next"] == []
    assert httpx.get(f"{sim.url}/_sim/sessions").json()["sessions"] == []
    assert Flow(sim, 10).preupload().json()["OK"] == 1  # built-in account is valid again
    assert flow.put(1, data).status_code == 404  # the old session is gone


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"chunk_sise": 5}', "chunk_sise: unknown setting"),
        (b'{"chunk_size": 0}', "chunk_size"),
        (b'{"threads": "many"}', "threads"),
        (b'{"faults": {"status_5xx_rate": 1.5}}', "faults.status_5xx_rate"),
        (b'{"faults": {"fail_next": [{"op": "upload"}]}}', "faults.fail_next.0.op"),
        (b'{"faults": {"fail_next": [{"op": "put", "action": "explode"}]}}', "action"),
        (b'{"risk": {"always_406": "127.0.0.1"}}', "risk.always_406"),
        (b'{"lines": {"cs_tx": {"delay_seconds": -1}}}', "delay_seconds"),
    ],
)
def test_bad_config_bodies_get_400_with_a_reason(sim: SimServer, body: bytes, needle: str) -> None:
    reply = httpx.post(f"{sim.url}/_sim/config", content=body)
    assert reply.status_code == 400
    assert needle in reply.json()["error"]
    assert sim.config()["chunk_size"] == 10 * 1024 * 1024  # nothing changed


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"nope", "not valid JSON"),
        (b'{"cookies": "bili_jct=x", "mid": 1}', "SESSDATA"),
        (b'{"cookies": "SESSDATA=x", "mid": 1}', "bili_jct"),
        (b'{"cookies": "SESSDATA=x; bili_jct=y"}', "mid"),
        (b'{"access_key": 5, "mid": 1}', "access_key"),
        (b'{"access_key": "k", "mid": 1, "colour": "red"}', "colour"),
    ],
)
def test_bad_account_bodies_get_400(sim: SimServer, body: bytes, needle: str) -> None:
    reply = httpx.post(f"{sim.url}/_sim/accounts", content=body)
    assert reply.status_code == 400
    assert needle in reply.json()["error"]


def test_config_post_deep_merges(sim: SimServer) -> None:
    sim.config(faults={"delay_seconds": 0.1}, lines={"cs_tx": {"delay_seconds": 0.2}})
    config = sim.config(faults={"drop_put_rate": 0.5})
    assert config["faults"]["delay_seconds"] == 0.1 and config["faults"]["drop_put_rate"] == 0.5
    assert config["lines"]["cs_tx"]["delay_seconds"] == 0.2 and "cs_bda2" in config["lines"]
