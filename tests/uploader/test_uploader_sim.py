"""The uploader against the real simulator (``bupmesh sim-bili`` subprocess), on asyncio and trio.

Every upload is verified from the simulator's ledger (MD5 of the assembled
bytes), every fault the simulator can inject is checked for its error kind,
and request counts come from ``/_sim/requests`` so "not retried" and "only
the missing parts" are facts, not assumptions.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES, SimServer
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.errors import ErrorKind, UploadError
from uploader.retry import RetryPolicy
from uploader.session import UposSession
from uploader.source import BytesSource, FileSource
from uploader.submit import Submission, VideoPart, submit_app, submit_web
from uploader.upos import UploadResult, UposUploader

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
DEFAULT_CHUNK = 10 * MiB
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, maximum=0.05)


def client(sim: SimServer, *, cookies: str = SIM_COOKIES, **kwargs: Any) -> BiliClient:
    creds = Credentials.from_cookie_string(cookies, access_key=SIM_ACCESS_KEY)
    return BiliClient(creds, member_url=sim.url, **kwargs)


async def upload_bytes(
    sim: SimServer,
    data: bytes,
    *,
    name: str = "rec.flv",
    client_kwargs: dict | None = None,
    session: UposSession | None = None,
    **kw: Any,
) -> UploadResult:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("line", "cs_bda2")
    async with client(sim, **(client_kwargs or {})) as c:
        return await UposUploader(c, **kw).upload(BytesSource(data), name, session=session)


def ledger_entry(sim: SimServer, result: UploadResult) -> dict:
    [entry] = [u for u in sim.uploads() if u["filename"] == result.filename]
    return entry


def add_account(sim: SimServer, body: dict) -> None:
    httpx.post(f"{sim.url}/_sim/accounts", json=body, timeout=10).raise_for_status()


def ops(sim: SimServer, op: str, **match: Any) -> list[dict]:
    return [
        r for r in sim.requests() if r["op"] == op and all(r.get(k) == v for k, v in match.items())
    ]


@pytest.mark.parametrize(
    "size", [0, 1, DEFAULT_CHUNK, DEFAULT_CHUNK + 1], ids=["0B", "1B", "chunk", "chunk+1"]
)
async def test_full_upload_edge_sizes(sim: SimServer, size: int) -> None:
    data = random.Random(size).randbytes(size)
    result = await upload_bytes(sim, data)
    entry = ledger_entry(sim, result)
    assert entry["md5"] == hashlib.md5(data).hexdigest()
    assert entry["size"] == size
    assert entry["biz_id"] == result.biz_id
    assert entry["parts"] == max(1, -(-size // DEFAULT_CHUNK))
    assert entry["mid"] == 10001


@pytest.mark.slow
async def test_full_upload_200mb_file(sim: SimServer, tmp_path: Path) -> None:
    path = tmp_path / "big.flv"
    digest = hashlib.md5()
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for i in range(200):
            piece = block[:-4] + i.to_bytes(4, "big")  # every MiB differs
            digest.update(piece)
            f.write(piece)
    with FileSource(path) as source:
        async with client(sim) as c:
            result = await UposUploader(c, line="cs_bda2", retry=FAST_RETRY).upload(
                source, path.name
            )
    entry = ledger_entry(sim, result)
    assert entry["md5"] == digest.hexdigest()
    assert entry["size"] == 200 * MiB and entry["parts"] == 20


async def test_resume_after_mid_file_failure_sends_only_missing_parts(sim: SimServer) -> None:
    sim.config(chunk_size=MiB)
    data = random.Random(5).randbytes(8 * MiB + 123)  # 9 parts
    commits: list[UposSession] = []

    def on_commit(session: UposSession) -> None:
        commits.append(session)
        if len(session.parts_done) == 3:
            # Part 4 (not yet sent: one worker) and its retries all fail.
            sim.config(faults={"fail_next": [{"op": "put", "status": 503, "count": 4}]})

    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, data, threads=1, on_commit=on_commit)
    assert info.value.kind is ErrorKind.NETWORK
    saved = UposSession.from_json(commits[-1].to_json())
    assert saved.parts_done == [1, 2, 3]
    assert len(ops(sim, "put", upload_id=saved.upload_id, part=4)) == 4  # 1 try + 3 retries

    sim.config(faults={"fail_next": []})
    before = len(ops(sim, "put", upload_id=saved.upload_id))
    source = BytesSource(data)
    async with client(sim) as c:
        result = await UposUploader(c, line="cs_bda2", retry=FAST_RETRY).upload(
            source, "rec.flv", session=saved
        )
    resumed = ops(sim, "put", upload_id=saved.upload_id)[before:]
    assert sorted(r["part"] for r in resumed) == [4, 5, 6, 7, 8, 9]
    assert all(r["status"] == 200 for r in resumed)
    assert len(ops(sim, "preupload")) == 1  # the resume made no new preupload
    assert source.reads[0][0] == 3 * MiB  # accepted bytes were not read again
    assert ledger_entry(sim, result)["md5"] == hashlib.md5(data).hexdigest()
    assert len(sim.uploads()) == 1


async def test_expired_session_starts_fresh(sim: SimServer) -> None:
    """Once upos forgets a session (TTL), resuming it falls back to a fresh upload."""
    sim.config(chunk_size=1024)
    data = random.Random(6).randbytes(3 * 1024)
    commits: list[UposSession] = []

    def on_commit(session: UposSession) -> None:
        commits.append(session)
        if len(session.parts_done) == 1:
            sim.config(faults={"fail_next": [{"op": "put", "action": "code", "code": 601}]})

    with pytest.raises(UploadError):
        await upload_bytes(sim, data, threads=1, on_commit=on_commit)
    stale = commits[-1]
    ttl = 1.5
    sim.config(session_ttl_seconds=ttl, faults={"fail_next": []})
    # Waiting out the TTL is the condition itself; a fresh session then has a
    # whole second for three 1 KiB parts.
    await anyio.sleep(max(0.0, stale.created_at + ttl + 0.05 - time.time()))
    result = await upload_bytes(sim, data, session=stale)
    assert result.session.upload_id != stale.upload_id
    assert len(ops(sim, "preupload")) == 2
    rejected = ops(sim, "put", upload_id=stale.upload_id)[-1]
    assert rejected["status"] in (403, 404)
    assert ledger_entry(sim, result)["md5"] == hashlib.md5(data).hexdigest()


# -- risk control: raised at once, never retried in place -------------------------


async def test_preupload_406_is_not_retried(sim: SimServer) -> None:
    sim.config(risk={"always_406": ["127.0.0.1"]})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc")
    assert info.value.kind is ErrorKind.RISK_CONTROL and info.value.status == 406
    assert str(info.value).startswith("risk_control: HTTP 406 on preupload")
    assert len(ops(sim, "preupload")) == 1


async def test_preupload_code_601_is_risk_control(sim: SimServer) -> None:
    sim.config(risk={"code_601": ["127.0.0.1"]})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc")
    assert info.value.kind is ErrorKind.RISK_CONTROL and info.value.code == 601
    assert len(ops(sim, "preupload")) == 1


async def test_preupload_budget_exhausted_is_risk_control(sim: SimServer) -> None:
    sim.config(risk={"preupload_budget": 1})
    await upload_bytes(sim, b"first")
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"second")
    assert info.value.kind is ErrorKind.RISK_CONTROL
    assert len(ops(sim, "preupload")) == 2


@pytest.mark.parametrize(
    "rule",
    [{"op": "put", "status": 406}, {"op": "put", "action": "code", "code": 601}],
    ids=["406", "601"],
)
async def test_put_risk_control_is_not_retried(sim: SimServer, rule: dict) -> None:
    sim.config(faults={"fail_next": [rule]})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc")
    assert info.value.kind is ErrorKind.RISK_CONTROL
    assert len(ops(sim, "put")) == 1
    assert not ops(sim, "complete")


async def test_put_406_for_blocked_ip_mid_upload(sim: SimServer) -> None:
    """An IP that turns hot between preupload and PUT: the PUT's 406 ends it at once."""
    sim.config(chunk_size=MiB)
    data = random.Random(7).randbytes(4 * MiB)

    def on_commit(session: UposSession) -> None:
        if len(session.parts_done) == 1:
            sim.config(risk={"always_406": ["127.0.0.1"]})

    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, data, threads=1, on_commit=on_commit)
    assert info.value.kind is ErrorKind.RISK_CONTROL
    assert [r["status"] for r in ops(sim, "put")] == [200, 406]


# -- network faults: retried and successful ------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "put", "status": 503, "count": 2},
        {"op": "put", "status": 500},
        {"op": "put", "action": "drop", "count": 2},
        {"op": "put", "action": "stall", "seconds": 5},
        {"op": "preupload", "status": 502},
        {"op": "init", "status": 503},
        {"op": "init", "action": "drop"},
        {"op": "complete", "status": 504},
        {"op": "complete", "action": "drop"},
    ],
    ids=lambda r: f"{r['op']}-{r.get('action', 'status')}-{r.get('status', '')}",
)
async def test_network_faults_are_retried_and_succeed(sim: SimServer, rule: dict) -> None:
    sim.config(chunk_size=MiB, faults={"fail_next": [rule]})
    data = random.Random(8).randbytes(2 * MiB + 1)
    # A short timeout turns a stall into a timeout quickly.
    result = await upload_bytes(sim, data, client_kwargs={"timeout": 1.0})
    assert ledger_entry(sim, result)["md5"] == hashlib.md5(data).hexdigest()
    failed = [r for r in ops(sim, rule["op"]) if r["status"] != 200]
    if rule.get("action") != "stall":
        assert len(failed) == rule.get("count", 1)
    assert len(sim.uploads()) == 1


async def test_random_drops_and_5xx_are_survived(sim: SimServer) -> None:
    sim.config(
        chunk_size=MiB,
        seed=3,
        faults={"drop_put_rate": 0.25, "status_5xx_rate": 0.15},
    )
    data = random.Random(9).randbytes(10 * MiB)
    result = await upload_bytes(
        sim, data, retry=RetryPolicy(attempts=12, initial=0.01, maximum=0.05)
    )
    assert ledger_entry(sim, result)["md5"] == hashlib.md5(data).hexdigest()
    assert any(r["status"] != 200 for r in ops(sim, "put"))  # faults really happened


async def test_network_retries_run_out(sim: SimServer) -> None:
    sim.config(faults={"fail_next": [{"op": "put", "status": 503, "count": 4}]})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc")
    assert info.value.kind is ErrorKind.NETWORK and info.value.status == 503
    # Count the answered 503s: a stalled PUT left over from an earlier test is
    # logged (status 0) when its client finally disconnects, possibly after the reset.
    assert len(ops(sim, "put", status=503)) == 4


async def test_unreachable_member_is_network(anyio_backend: str) -> None:
    from tests.conftest import free_port

    creds = Credentials.from_cookie_string(SIM_COOKIES)
    async with BiliClient(creds, member_url=f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(UploadError) as info:
            await UposUploader(c, line="cs_bda2", retry=FAST_RETRY).upload(BytesSource(b"a"), "v")
    assert info.value.kind is ErrorKind.NETWORK


# -- auth and bad requests --------------------------------------------------------


async def test_expired_cookies_are_auth(sim: SimServer) -> None:
    cookies = "SESSDATA=old-sess; bili_jct=old-csrf; DedeUserID=20002"
    add_account(sim, {"cookies": cookies, "mid": 20002, "expired": True})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc", client_kwargs={"cookies": cookies})
    assert info.value.kind is ErrorKind.AUTH and info.value.code == -101
    assert len(ops(sim, "preupload")) == 1


async def test_unknown_cookies_are_auth(sim: SimServer) -> None:
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc", client_kwargs={"cookies": "SESSDATA=nobody"})
    assert info.value.kind is ErrorKind.AUTH


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "put", "action": "code", "code": -101},
        {"op": "preupload", "action": "code", "code": -101},
    ],
    ids=["put", "preupload"],
)
async def test_injected_auth_codes(sim: SimServer, rule: dict) -> None:
    sim.config(faults={"fail_next": [rule]})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc")
    assert info.value.kind is ErrorKind.AUTH


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "put", "status": 400},
        {"op": "init", "status": 404},
        {"op": "complete", "status": 400},
        {"op": "complete", "action": "code", "code": -400},
    ],
    ids=["put-400", "init-404", "complete-400", "complete-code"],
)
async def test_bad_requests_are_final(sim: SimServer, rule: dict) -> None:
    sim.config(faults={"fail_next": [rule]})
    with pytest.raises(UploadError) as info:
        await upload_bytes(sim, b"abc")
    assert info.value.kind is ErrorKind.BAD_REQUEST
    # The injected answer was given once: a retry would have succeeded (count 1), and
    # the raise above says none did. Count only that answer: the simulator's upload ids
    # restart with each reset, so a previous test's PUT still in flight on a loaded
    # machine is logged under the same id once it ends.
    if "status" in rule:
        answered = ops(sim, rule["op"], status=rule["status"])
    else:
        answered = ops(sim, rule["op"], code=rule["code"])
    assert len(answered) == 1
    assert not sim.uploads()


# -- lines, source address, submission -------------------------------------------------


async def test_auto_line_picks_the_fastest_probe(sim: SimServer) -> None:
    slow = {"delay_seconds": 0.5}
    sim.config(
        lines={
            "cs_bda2": slow,
            "cs_tx": {"delay_seconds": 0.0},
            "cs_txa": slow,
            "cs_alia": slow,
            "cs_bldsa": slow,
        }
    )
    result = await upload_bytes(sim, b"abc", line="auto")
    assert ledger_entry(sim, result)["line"] == "cs_tx"
    assert len(ops(sim, "probe")) >= 5


async def test_configured_line_is_used_without_probing(sim: SimServer) -> None:
    result = await upload_bytes(sim, b"abc", line="cs_alia")
    assert ledger_entry(sim, result)["line"] == "cs_alia"
    assert not ops(sim, "probe")


async def test_source_ip_is_what_bilibili_sees(sim: SimServer) -> None:
    result = await upload_bytes(sim, b"abc", client_kwargs={"source_ip": "127.0.0.2"})
    assert ledger_entry(sim, result)["source_ip"] == "127.0.0.2"
    assert {r["ip"] for r in sim.requests()} == {"127.0.0.2"}


async def test_upload_then_submit_web_and_app(sim: SimServer) -> None:
    first = await upload_bytes(sim, b"part one")
    second = await upload_bytes(sim, b"part two")
    submission = Submission(
        title="录播 test",
        tag="录播,test",
        desc="d",
        source="https://live.bilibili.com/1",
        videos=[
            VideoPart(filename=first.filename, title="P1", cid=first.biz_id),
            VideoPart(filename=second.filename, title="P2", cid=second.biz_id),
        ],
    )
    async with client(sim) as c:
        web = await submit_web(c, submission)
        app = await submit_app(c, submission)
    assert web.bvid and app.bvid and web.aid != app.aid
    subs = {s["flavour"]: s for s in sim.submissions()}
    assert set(subs) == {"web", "app"}
    for sub in subs.values():
        assert [v["filename"] for v in sub["videos"]] == [first.filename, second.filename]
        assert sub["title"] == "录播 test" and sub["tid"] == 171 and sub["mid"] == 10001


async def test_submit_with_wrong_csrf_is_auth(sim: SimServer) -> None:
    result = await upload_bytes(sim, b"x")
    submission = Submission(title="t", videos=[VideoPart(filename=result.filename, title="P1")])
    cookies = SIM_COOKIES.replace("bili_jct=sim-csrf", "bili_jct=wrong")
    async with client(sim, cookies=cookies) as c:
        with pytest.raises(UploadError) as info:
            await submit_web(c, submission)
    assert info.value.kind is ErrorKind.AUTH


async def test_progress_against_the_simulator(sim: SimServer) -> None:
    sim.config(chunk_size=MiB)
    reports: list[Any] = []
    data = random.Random(10).randbytes(5 * MiB)
    await upload_bytes(sim, data, on_progress=reports.append)
    assert reports[-1].uploaded == reports[-1].total == len(data)
    assert reports[-1].speed_bps > 0


async def test_two_uploads_at_once_share_nothing(sim: SimServer) -> None:
    sim.config(chunk_size=MiB)
    a = random.Random(11).randbytes(3 * MiB)
    b = random.Random(12).randbytes(2 * MiB + 7)
    results: dict[str, UploadResult] = {}

    async def one(key: str, data: bytes) -> None:
        results[key] = await upload_bytes(sim, data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a", a)
        tg.start_soon(one, "b", b)
    assert ledger_entry(sim, results["a"])["md5"] == hashlib.md5(a).hexdigest()
    assert ledger_entry(sim, results["b"])["md5"] == hashlib.md5(b).hexdigest()


async def test_submission_risk_and_network_faults(sim: SimServer) -> None:
    """Submissions are never retried in place (a retry could make a second archive)."""
    result = await upload_bytes(sim, b"x")
    submission = Submission(title="t", videos=[VideoPart(filename=result.filename, title="P1")])
    sim.config(risk={"code_601": ["127.0.0.1"]})
    async with client(sim) as c:
        with pytest.raises(UploadError) as risk:
            await submit_web(c, submission)
    assert risk.value.kind is ErrorKind.RISK_CONTROL
    sim.config(risk={"code_601": []}, faults={"fail_next": [{"op": "submit", "status": 503}]})
    async with client(sim) as c:
        with pytest.raises(UploadError) as network:
            await submit_app(c, submission)
    assert network.value.kind is ErrorKind.NETWORK
    assert not sim.submissions()
    assert len(ops(sim, "submit")) == 2


async def test_slow_replies_beyond_the_timeout_are_network(sim: SimServer) -> None:
    sim.config(faults={"delay_seconds": 1.0})
    with pytest.raises(UploadError) as info:
        await upload_bytes(
            sim,
            b"abc",
            client_kwargs={"timeout": 0.2},
            retry=RetryPolicy(attempts=1, initial=0.01, maximum=0.01),
        )
    assert info.value.kind is ErrorKind.NETWORK and "timeout" in str(info.value)


async def test_stalled_preupload_is_retried(sim: SimServer) -> None:
    sim.config(faults={"fail_next": [{"op": "preupload", "action": "stall", "seconds": 3}]})
    result = await upload_bytes(sim, b"abc", client_kwargs={"timeout": 0.5})
    assert ledger_entry(sim, result)["md5"] == hashlib.md5(b"abc").hexdigest()


async def test_bandwidth_cap_slows_but_completes(sim: SimServer) -> None:
    sim.config(chunk_size=256 * 1024, faults={"bandwidth_bps": 4 * MiB})
    data = random.Random(13).randbytes(2 * MiB)
    started = time.monotonic()
    reports: list[Any] = []
    result = await upload_bytes(sim, data, on_progress=reports.append)
    elapsed = time.monotonic() - started
    assert ledger_entry(sim, result)["md5"] == hashlib.md5(data).hexdigest()
    assert elapsed >= 0.3  # 2 MiB at 4 MiB/s cannot take much less than 0.5 s
    assert reports[-1].speed_bps < 8 * MiB
