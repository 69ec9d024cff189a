"""The simulator's upload path: preupload, multipart init, chunk PUTs, completion, and the
checks the real service makes on each.

Every test talks plain HTTP to a real simulator process (the `sim` fixture,
reset before each test): real sockets are what connection drops, stalls and
source IPs need (see `uploader.sim.inbound`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import os
import time
import urllib.parse

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.flow import Flow, client, small_chunks


def test_full_flow_shapes_and_ledger(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(3 * 64 * 1024 + 1000)
    flow = Flow(sim, len(data))

    pre = flow.preupload().json()
    assert pre["OK"] == 1
    for key in (
        "auth",
        "biz_id",
        "chunk_size",
        "endpoint",
        "endpoints",
        "upos_uri",
        "threads",
        "timeout",
    ):
        assert key in pre
    host = urllib.parse.urlsplit(sim.url).netloc
    assert pre["endpoint"] == f"//{host}"
    assert pre["chunk_size"] == 64 * 1024 and pre["threads"] == 3
    assert pre["upos_uri"].startswith("upos://ugcfx2lf/n") and pre["upos_uri"].endswith(".flv")
    assert "uip=127.0.0.1" in pre["auth"]

    init = flow.init().json()
    assert init["OK"] == 1 and init["bucket"] == "ugcfx2lf"
    assert init["key"] == "/" + pre["upos_uri"].rsplit("/", 1)[1]
    assert init["upload_id"]

    # Parts arrive out of order and concurrently (held until the prefix reaches them).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda p: flow.put(p, data, http=client()), [4, 2, 3, 1]))
    assert [r.text for r in replies] == ["MULTIPART_PUT_SUCCESS"] * 4

    done = flow.complete().json()
    key = pre["upos_uri"].removeprefix("upos://ugcfx2lf/")
    assert done == {"OK": 1, "location": f"ugcfx2lf/{key}", "bucket": "ugcfx2lf", "key": f"/{key}"}

    [entry] = sim.uploads()
    assert entry["md5"] == hashlib.md5(data).hexdigest()
    assert entry["filename"] == flow.filename
    assert entry["size"] == len(data) and entry["parts"] == 4
    assert entry["biz_id"] == pre["biz_id"] and entry["mid"] == 10001
    assert entry["source_ip"] == "127.0.0.1" and entry["upload_id"] == flow.upload_id
    assert entry["time"] > 0

    ops = [(r["op"], r["status"]) for r in sim.requests()]
    assert ops[:2] == [("preupload", 200), ("init", 200)]
    assert sorted(r["part"] for r in sim.requests() if r["op"] == "put") == [1, 2, 3, 4]
    assert ops[-1] == ("complete", 200)
    puts = httpx.get(f"{sim.url}/_sim/requests", params={"op": "put", "upload_id": flow.upload_id})
    assert len(puts.json()["requests"]) == 4


@pytest.mark.parametrize(
    "size",
    [0, 1, 64 * 1024, 64 * 1024 + 1],
    ids=["empty", "one-byte", "one-chunk", "chunk-plus-one"],
)
def test_edge_sizes(sim: SimServer, size: int) -> None:
    small_chunks(sim)
    data = os.urandom(size)
    flow = Flow(sim, size)
    flow.upload_all(data)
    [entry] = sim.uploads()
    assert entry["md5"] == hashlib.md5(data).hexdigest()
    assert entry["parts"] == max(1, math.ceil(size / (64 * 1024)))


def test_zero_byte_file_is_one_empty_part(sim: SimServer) -> None:
    flow = Flow(sim, 0)
    flow.preupload()
    flow.init()
    assert flow.part_params(1) | {"uploadId": ""} == {
        "partNumber": 1, "uploadId": "", "chunk": 0, "chunks": 1,
        "size": 0, "start": 0, "end": 0, "total": 0,
    }  # fmt: skip
    assert flow.put(1, b"").text == "MULTIPART_PUT_SUCCESS"
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(b"").hexdigest()


def test_upos_auth_must_match(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    flow.preupload()
    assert flow.init(headers={}).status_code == 403
    assert flow.init(headers={"X-Upos-Auth": "ak=1&sign=forged"}).status_code == 403
    flow.init()
    assert flow.put(1, data, headers={"X-Upos-Auth": "forged"}).status_code == 403
    other = Flow(sim, 10)
    other.preupload()
    assert flow.put(1, data, headers=other.auth).status_code == 403  # another ticket's auth
    assert flow.put(1, data).status_code == 200
    bad = flow.http.post(
        flow.url,
        params={"output": "json", "uploadId": flow.upload_id, "biz_id": flow.pre["biz_id"]},
        json={"parts": [{"partNumber": 1, "eTag": "etag"}]},
    )
    assert bad.status_code == 403
    assert sim.uploads() == []


@pytest.mark.parametrize(
    "override",
    [
        {"partNumber": 0},
        {"partNumber": 5},
        {"chunk": 1},
        {"chunks": 3},
        {"size": 100},
        {"start": 1},
        {"end": 65535},
        {"total": 999},
        {"partNumber": "x"},
        {"size": None},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_part_ranges_must_be_consistent(sim: SimServer, override: dict) -> None:
    small_chunks(sim)
    data = os.urandom(4 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    response = flow.put(1, data, **override)
    assert response.status_code == 400, response.text
    assert response.json()["OK"] == 0 and response.json()["message"]


def test_body_length_must_match_size(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(2 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    response = flow.http.put(
        flow.url, params=flow.part_params(1), content=data[:1000], headers=flow.auth
    )
    assert response.status_code == 400
    assert "Content-Length" in response.json()["message"]

    def chunked():
        yield data[:1000]

    response = flow.http.put(
        flow.url, params=flow.part_params(1), content=chunked(), headers=flow.auth
    )
    assert response.status_code == 400
    assert "body has 1000 bytes" in response.json()["message"]


def test_unknown_upload_id_and_object(sim: SimServer) -> None:
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    assert flow.put(1, data, uploadId="no-such-upload").status_code == 404
    assert flow.complete(uploadId="no-such-upload").status_code == 404
    wrong_path = flow.url.rsplit("/", 1)[0] + "/n000000nosuchobject.flv"
    assert (
        flow.http.put(
            wrong_path, params=flow.part_params(1), content=data, headers=flow.auth
        ).status_code
        == 404
    )
    assert flow.http.post(f"{wrong_path}?uploads&output=json", headers=flow.auth).status_code == 404


def test_init_params_must_match_preupload(sim: SimServer) -> None:
    flow = Flow(sim, 1000)
    flow.preupload()
    assert (
        flow.http.post(
            f"{flow.url}?uploads&output=json&filesize=999", headers=flow.auth
        ).status_code
        == 400
    )
    assert (
        flow.http.post(f"{flow.url}?uploads&output=json&partsize=5", headers=flow.auth).status_code
        == 400
    )
    ok = flow.http.post(
        f"{flow.url}?uploads&output=json&profile=ugcfx/bup&filesize=1000"
        f"&partsize={flow.chunk_size}&biz_id={flow.pre['biz_id']}",
        headers=flow.auth,
    )
    assert ok.status_code == 200 and ok.json()["OK"] == 1


def test_completion_needs_every_part_and_a_consistent_list(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(3 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    flow.put(1, data)
    flow.put(3, data)
    assert flow.complete().status_code == 400  # part 2 never arrived
    flow.put(2, data)
    assert flow.complete(parts=[1, 2]).status_code == 400  # list misses part 3
    assert flow.complete(parts=[1, 2, 3, 4]).status_code == 400  # part 4 does not exist
    assert flow.complete(parts=[1, 2, 2, 3]).status_code == 400  # duplicate
    malformed = flow.http.post(
        flow.url,
        params={"output": "json", "uploadId": flow.upload_id, "biz_id": flow.pre["biz_id"]},
        content=b'{"parts": "all"}',
        headers=flow.auth,
    )
    assert malformed.status_code == 400
    assert flow.complete(biz_id=1).status_code == 400
    assert sim.uploads() == []
    assert flow.complete().json()["OK"] == 1
    assert len(sim.uploads()) == 1


def test_second_completion_is_ok_but_adds_nothing(sim: SimServer) -> None:
    data = os.urandom(1000)
    flow = Flow(sim, len(data))
    first = flow.upload_all(data)
    again = flow.complete()
    assert again.status_code == 200 and again.json() == first
    assert len(sim.uploads()) == 1
    assert flow.put(1, data).status_code == 400  # no more parts after completion


def test_repeated_part_same_bytes_is_fine_different_bytes_is_corrupt(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(2 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    flow.put(1, data)
    assert flow.put(1, data).status_code == 200  # a retry of a part already hashed
    flow.put(2, data)
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(data).hexdigest()

    sim.reset()
    small_chunks(sim)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    flow.put(1, data)
    changed = bytes([data[0] ^ 1]) + data[1:]
    assert flow.put(1, changed).status_code == 200  # upos accepts it ...
    flow.put(2, data)
    sessions = httpx.get(f"{sim.url}/_sim/sessions").json()["sessions"]
    assert "part 1" in sessions[0]["corrupt"]
    response = flow.complete()  # ... but the object can no longer be assembled
    assert response.status_code == 400 and "corrupt" in response.json()["message"]
    assert sim.uploads() == []


def test_held_part_may_be_replaced_before_it_is_hashed(sim: SimServer) -> None:
    small_chunks(sim)
    data = os.urandom(2 * 64 * 1024)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    garbage = bytes(len(data))
    flow.put(2, garbage)  # held: part 1 has not arrived
    flow.put(2, data)  # replaced before hashing
    flow.put(1, data)
    assert flow.complete().json()["OK"] == 1
    assert sim.uploads()[0]["md5"] == hashlib.md5(data).hexdigest()


def test_session_expires(sim: SimServer) -> None:
    sim.config(session_ttl_seconds=0.5)
    data = os.urandom(100)
    flow = Flow(sim, len(data))
    flow.preupload()
    flow.init()
    time.sleep(0.7)
    response = flow.put(1, data)
    assert response.status_code == 403
    assert response.headers["X-Upos-Auth"].startswith("AUTH_TS_GT_TTL")
    assert flow.init().status_code == 403
