"""Uploader logic against an in-process fake (``httpx.MockTransport``), on asyncio and trio.

Fast and deterministic: the upos flow, memory bound, retries, resume, line
choice, submission signing and the secrecy of cookies. The same behaviours
are checked against the real simulator in ``test_uploader_sim.py``.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import anyio
import httpx
import pytest

from tests.support.fake_bilibili import COOKIES, MEMBER, UPOS_HOST, FakeBili
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.errors import ErrorKind, StaleSessionError, UploadError
from uploader.lines import Line, parse_line, pick_fastest, select_line
from uploader.progress import Progress
from uploader.retry import RetryPolicy
from uploader.session import UposSession
from uploader.source import BytesSource
from uploader.submit import APP_SECRET, Submission, VideoPart, submit_app, submit_web
from uploader.upos import UposUploader, server_filename

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
FAST_RETRY = RetryPolicy(attempts=3, initial=0.001, maximum=0.005)


def make_client(fake: FakeBili, **kwargs: Any) -> BiliClient:
    creds = Credentials.from_cookie_string(COOKIES, access_key="app-secret-key")
    return BiliClient(creds, member_url=MEMBER, transport=fake.transport(), **kwargs)


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def upload(fake: FakeBili, data: bytes, **kwargs: Any):
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY, **kwargs)
        return await uploader.upload(BytesSource(data), "video.flv")


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
async def test_full_flow_for_edge_sizes(size: int) -> None:
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(size)
    result = await upload(fake, data)

    [done] = fake.completed()
    assert done.md5 == hashlib.md5(data).hexdigest()
    assert result.filename == server_filename(done.upos_uri) and "." not in result.filename
    assert result.biz_id == done.biz_id
    puts = fake.ops("put")
    expected_parts = max(1, -(-size // CHUNK))
    assert sorted(int(p["params"]["partNumber"]) for p in puts) == list(
        range(1, expected_parts + 1)
    )
    if size == 0:
        assert puts[0]["params"] == {
            "partNumber": "1",
            "uploadId": puts[0]["params"]["uploadId"],
            "chunk": "0",
            "chunks": "1",
            "size": "0",
            "start": "0",
            "end": "0",
            "total": "0",
        }
    [init] = fake.ops("init")
    assert init["query"] == "uploads&output=json"
    [complete] = fake.ops("complete")
    assert complete["params"]["profile"] == "ugcupos/bup"
    assert complete["params"]["biz_id"] == str(done.biz_id)
    assert complete["params"]["name"] == "video.flv"
    [pre] = fake.ops("preupload")
    assert pre["params"]["zone"] == "cs" and pre["params"]["upcdn"] == "bda2"
    assert pre["params"]["r"] == "upos" and pre["params"]["size"] == str(size)
    assert result.session.parts_done == list(range(1, expected_parts + 1))


async def test_cookies_only_reach_the_member_host() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    await upload(fake, payload(2 * CHUNK))
    for entry in fake.log:
        if entry["op"] in ("preupload", "probe"):
            assert "s3cr3t-sess" in entry["headers"]["cookie"]
        else:
            assert entry["host"] == UPOS_HOST
            assert "cookie" not in entry["headers"], entry["op"]
            assert entry["headers"]["x-upos-auth"].startswith("auth-")


async def test_set_cookie_replies_are_not_stored() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, json={"OK": 1}, headers={"Set-Cookie": "evil=1; Path=/"})

    seen: list[str | None] = []
    creds = Credentials.from_cookie_string(COOKIES)
    async with BiliClient(creds, member_url=MEMBER, transport=httpx.MockTransport(handler)) as c:
        await c.call("init", "POST", "https://upos.example.test/a")
        await c.call("init", "POST", "https://upos.example.test/a")
    assert seen == [None, None]


async def test_memory_bound_and_concurrency() -> None:
    """Bytes held (read but not released) never exceed (threads + 1) chunks."""
    fake = FakeBili(chunk_size=CHUNK, threads=4)
    fake.put_delay = 0.01
    data = payload(20 * CHUNK + 7)
    source = BytesSource(data)
    held = 0
    peak = 0
    original_read, original_release = source.read, source.release

    async def read(offset: int, length: int) -> bytes:
        nonlocal held, peak
        chunk = await original_read(offset, length)
        held += len(chunk)
        peak = max(peak, held)
        return chunk

    def release(offset: int, length: int) -> None:
        nonlocal held
        held -= length
        original_release(offset, length)

    source.read, source.release = read, release  # type: ignore[method-assign]
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", threads=3, retry=FAST_RETRY)
        await uploader.upload(source, "v.flv")
    assert fake.max_in_flight == 3  # min(server 4, requested 3), and it was reached
    assert peak <= (3 + 1) * CHUNK
    assert held == 0
    assert sorted(source.released) == [
        (o, min(CHUNK, len(data) - o)) for o in range(0, len(data), CHUNK)
    ]
    assert fake.completed()[0].md5 == hashlib.md5(data).hexdigest()


async def test_server_threads_used_when_not_limited() -> None:
    fake = FakeBili(chunk_size=CHUNK, threads=2)
    fake.put_delay = 0.01
    await upload(fake, payload(8 * CHUNK))
    assert fake.max_in_flight == 2


async def test_risk_control_on_preupload_is_not_retried() -> None:
    fake = FakeBili()
    fake.fail("preupload", 406)
    with pytest.raises(UploadError) as info:
        await upload(fake, payload(10))
    assert info.value.kind is ErrorKind.RISK_CONTROL
    assert str(info.value).startswith("risk_control: HTTP 406 on preupload")
    assert len(fake.ops("preupload")) == 1


async def test_code_601_on_put_stops_everything_at_once() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    fake.fail("put", (200, {"OK": 0, "code": 601, "message": "上传视频过快"}))
    with pytest.raises(UploadError) as info:
        await upload(fake, payload(6 * CHUNK))
    assert info.value.kind is ErrorKind.RISK_CONTROL and info.value.code == 601
    assert not fake.ops("complete")
    # The refused part was not retried in place.
    first = fake.ops("put")[0]["params"]["partNumber"]
    assert [p["params"]["partNumber"] for p in fake.ops("put")].count(first) == 1


@pytest.mark.parametrize(
    "fault",
    [503, 502, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ConnectError, httpx.WriteError],
)
async def test_network_faults_on_put_are_retried(fault: Any) -> None:
    fake = FakeBili(chunk_size=CHUNK)
    fake.fail("put", fault, fault)
    data = payload(3 * CHUNK)
    await upload(fake, data)
    assert fake.completed()[0].md5 == hashlib.md5(data).hexdigest()
    assert len(fake.ops("put")) == 3 + 2


async def test_network_faults_on_preupload_init_complete_are_retried() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    fake.fail("preupload", 500)
    fake.fail("init", httpx.ConnectError)
    fake.fail("complete", 504)
    await upload(fake, payload(CHUNK))
    assert len(fake.ops("preupload")) == 2
    assert len(fake.completed()) == 1


async def test_retries_run_out_as_network_error() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    fake.fail("put", *([503] * 4))
    with pytest.raises(UploadError) as info:
        await upload(fake, payload(10))
    assert info.value.kind is ErrorKind.NETWORK and info.value.status == 503
    assert len(fake.ops("put")) == 4  # first try + 3 retries


async def test_retry_waits_follow_the_policy() -> None:
    waits: list[float] = []

    class RecordingRng:
        def uniform(self, a: float, b: float) -> float:
            waits.append(b)
            return 0.0

    fake = FakeBili(chunk_size=CHUNK)
    fake.fail("put", 503, 503, 503)
    async with make_client(fake) as client:
        policy = RetryPolicy(attempts=3, initial=0.5, maximum=1.5)
        uploader = UposUploader(client, line="cs_bda2", retry=policy, rng=RecordingRng())
        await uploader.upload(BytesSource(b"x"), "v")
    assert waits == [0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ((200, {"OK": 0, "code": -101, "message": "账号未登录"}), ErrorKind.AUTH),
        ((401, {}), ErrorKind.AUTH),
        ((400, {"OK": 0}), ErrorKind.BAD_REQUEST),
        ((200, {"OK": 0, "message": "nope"}), ErrorKind.BAD_REQUEST),
        ((200, {"OK": 0, "code": 21540, "message": "请求过于频繁"}), ErrorKind.RISK_CONTROL),
        ((412, {}), ErrorKind.RISK_CONTROL),
    ],
)
async def test_preupload_failures_are_classified(fault: Any, kind: ErrorKind) -> None:
    fake = FakeBili()
    fake.fail("preupload", fault)
    with pytest.raises(UploadError) as info:
        await upload(fake, payload(10))
    assert info.value.kind is kind
    assert len(fake.ops("preupload")) == 1


async def test_expired_cookies_are_auth() -> None:
    fake = FakeBili()
    async with BiliClient(
        Credentials({"other": "x"}), member_url=MEMBER, transport=fake.transport()
    ) as client:
        with pytest.raises(UploadError) as info:
            await UposUploader(client, line="cs_bda2").upload(BytesSource(b"abc"), "v")
    assert info.value.kind is ErrorKind.AUTH and info.value.code == -101


async def test_malformed_replies_are_bad_request() -> None:
    fake = FakeBili()
    fake.fail("preupload", (200, {"OK": 1, "auth": "a"}))
    with pytest.raises(UploadError) as info:
        await upload(fake, payload(10))
    assert info.value.kind is ErrorKind.BAD_REQUEST
    assert "malformed reply on preupload" in str(info.value)


async def test_short_source_is_a_file_error() -> None:
    class Short(BytesSource):
        async def read(self, offset: int, length: int) -> bytes:
            return (await super().read(offset, length))[: max(0, length - 1)]

    fake = FakeBili(chunk_size=CHUNK)
    async with make_client(fake) as client:
        with pytest.raises(UploadError) as info:
            await UposUploader(client, line="cs_bda2").upload(Short(payload(100)), "v")
    assert info.value.kind is ErrorKind.FILE
    assert not fake.ops("complete")


async def test_progress_reports_reach_the_total() -> None:
    reports: list[Progress] = []
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(5 * CHUNK)
    await upload(fake, data, on_progress=reports.append)
    assert reports and reports[-1].uploaded == len(data) == reports[-1].total
    assert reports[-1].eta_seconds == 0
    uploaded = [r.uploaded for r in reports]
    assert uploaded == sorted(uploaded)


async def test_resume_sends_only_missing_parts() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(6 * CHUNK + 3)
    commits: list[UposSession] = []
    fake.fail("put", *([503] * 4))  # the first part to be sent fails for good
    async with make_client(fake) as client:
        uploader = UposUploader(
            client, line="cs_bda2", threads=1, retry=FAST_RETRY, on_commit=commits.append
        )
        with pytest.raises(UploadError):
            await uploader.upload(BytesSource(data), "v.flv")
    assert commits == []  # nothing accepted yet
    # Now let three parts through, then fail hard.
    sent: list[int] = []
    fake.on_put = sent.append

    async with make_client(fake) as client:
        fake.faults.clear()
        uploader = UposUploader(
            client, line="cs_bda2", threads=1, retry=FAST_RETRY, on_commit=commits.append
        )
        original = fake._put

        async def put_then_die(request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
            if len(sent) >= 3:
                return httpx.Response(503)
            return await original(request, params, body)

        fake._put = put_then_die  # type: ignore[method-assign]
        with pytest.raises(UploadError):
            await uploader.upload(BytesSource(data), "v.flv")
        fake._put = original  # type: ignore[method-assign]
    saved = commits[-1]
    assert saved.parts_done == [1, 2, 3]
    assert "auth-" not in repr(saved)
    restored = UposSession.from_json(saved.to_json())
    assert restored.committed_offset() == 3 * CHUNK

    puts_before = len(fake.ops("put"))
    preuploads_before = len(fake.ops("preupload"))
    source = BytesSource(data)
    async with make_client(fake) as client:
        result = await UposUploader(client, line="cs_bda2", retry=FAST_RETRY).upload(
            source, "v.flv", session=restored
        )
    new_puts = [int(p["params"]["partNumber"]) for p in fake.ops("put")[puts_before:]]
    assert sorted(new_puts) == [4, 5, 6, 7]
    assert len(fake.ops("preupload")) == preuploads_before  # no new preupload
    assert source.reads[0][0] == 3 * CHUNK  # never re-read the accepted bytes
    assert result.session.parts_done == list(range(1, 8))
    [done] = fake.completed()
    assert done.md5 == hashlib.md5(data).hexdigest()


async def test_resume_with_holes_releases_skipped_parts() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(5 * CHUNK)
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        fresh = await uploader._start(len(data), "v")
        for part in (1, 3):  # parts 1 and 3 really were accepted earlier
            start, end = fresh.part_range(part)
            await uploader._put(_state(fresh), part, data[start:end], resuming=False)
        session = fresh.with_part_done(1).with_part_done(3)
        source = BytesSource(data)
        await uploader.upload(source, "v", session=session)
    assert [offset for offset, _ in source.reads] == [CHUNK, 3 * CHUNK, 4 * CHUNK]
    assert (2 * CHUNK, CHUNK) in source.released  # skipped part 3 given back
    assert (0, CHUNK) not in source.released  # bytes before the resume point never came
    assert fake.completed()[0].md5 == hashlib.md5(data).hexdigest()


def _state(session: UposSession) -> Any:
    from uploader.progress import ProgressMeter
    from uploader.upos import _RunState

    return _RunState(session=session, meter=ProgressMeter(session.size, start=0))


async def test_expired_session_starts_fresh_when_source_rewinds() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(3 * CHUNK)
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        stale = (await uploader._start(len(data), "v")).with_part_done(1)
        fake.expired_upload_ids.add(stale.upload_id)
        result = await uploader.upload(BytesSource(data), "v", session=stale)
    assert result.session.upload_id != stale.upload_id
    assert len(fake.ops("preupload")) == 2
    [done] = fake.completed()
    assert done.md5 == hashlib.md5(data).hexdigest()


async def test_expired_session_on_one_pass_stream_says_start_over() -> None:
    class OnePass(BytesSource):
        rewindable = False

    fake = FakeBili(chunk_size=CHUNK)
    data = payload(3 * CHUNK)
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        stale = (await uploader._start(len(data), "v")).with_part_done(1)
        fake.expired_upload_ids.add(stale.upload_id)
        with pytest.raises(StaleSessionError) as info:
            await uploader.upload(OnePass(data), "v", session=stale)
    assert info.value.kind is ErrorKind.SESSION_REJECTED and info.value.status == 404
    assert len(fake.ops("preupload")) == 1


async def test_rejected_resume_is_reported_when_told_not_to_restart() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(3 * CHUNK)
    async with make_client(fake) as client:
        uploader = UposUploader(
            client, line="cs_bda2", retry=FAST_RETRY, restart_rejected=False
        )
        stale = (await uploader._start(len(data), "v")).with_part_done(1)
        fake.expired_upload_ids.add(stale.upload_id)
        with pytest.raises(StaleSessionError) as info:
            await uploader.upload(BytesSource(data), "v", session=stale)  # rewindable
    assert info.value.kind is ErrorKind.SESSION_REJECTED
    assert "start over without it" in info.value.message
    assert len(fake.ops("preupload")) == 1  # no fresh session behind the caller's back


async def test_resume_with_every_part_done_only_completes() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    data = payload(2 * CHUNK)
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        fresh = await uploader._start(len(data), "v")
        for part in (1, 2):
            start, end = fresh.part_range(part)
            await uploader._put(_state(fresh), part, data[start:end], resuming=False)
        session = fresh.with_part_done(1).with_part_done(2)
        puts = len(fake.ops("put"))
        result = await uploader.upload(BytesSource(data), "v", session=session)
    assert len(fake.ops("put")) == puts
    assert result.session.upload_id == fresh.upload_id
    assert len(fake.completed()) == 1


async def test_session_for_another_size_is_a_file_error() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    async with make_client(fake) as client:
        uploader = UposUploader(client, line="cs_bda2", retry=FAST_RETRY)
        session = await uploader._start(100, "v")
        with pytest.raises(UploadError) as info:
            await uploader.upload(BytesSource(b"x" * 99), "v", session=session)
    assert info.value.kind is ErrorKind.FILE


# -- lines ---------------------------------------------------------------


def test_parse_line_names() -> None:
    assert parse_line("cs_bda2").params() == {
        "zone": "cs",
        "upcdn": "bda2",
        "probe_version": "20221109",
    }
    assert parse_line("txa").name == "cs_txa"
    with pytest.raises(ValueError):
        parse_line("cs bda2; rm -rf")


def test_pick_fastest_ignores_failed_probes() -> None:
    a, b, c = parse_line("cs_a"), parse_line("cs_b"), parse_line("cs_c")
    assert pick_fastest({a: None, b: 0.3, c: 0.1}) == c
    assert pick_fastest({a: None}) is None


async def test_auto_line_probes_and_picks_the_fastest() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    async with make_client(fake) as client:
        line = await select_line(client, "auto")
        assert isinstance(line, Line) and line.name == "cs_tx"
        uploader = UposUploader(client, retry=FAST_RETRY)  # default line: auto
        await uploader.upload(BytesSource(b"abc"), "v")
    pings = fake.ops("ping")
    assert {p["path"] for p in pings} == {"/probe/bda2", "/probe/tx", "/probe/alia"}
    assert all(p["method"] == "POST" and p["size"] == 100 * 1024 for p in pings)
    assert all("cookie" not in p["headers"] for p in pings)
    assert fake.ops("preupload")[-1]["params"]["upcdn"] == "tx"


async def test_auto_line_with_every_probe_failing_lets_the_server_choose() -> None:
    fake = FakeBili(chunk_size=CHUNK)
    fake.fail("ping", 500, 500, 500)
    async with make_client(fake) as client:
        await UposUploader(client, retry=FAST_RETRY).upload(BytesSource(b"abc"), "v")
    assert "upcdn" not in fake.ops("preupload")[-1]["params"]


# -- submission ----------------------------------------------------------


def submission() -> Submission:
    return Submission(
        title="直播录像 2026-11-29",
        tid=171,
        tag="live,record",
        desc="desc",
        source="https://live.bilibili.com/1",
        videos=[VideoPart(filename="n0001abc", title="P1", cid=1001)],
    )


async def test_submit_web_sends_csrf_and_cookies() -> None:
    fake = FakeBili()
    async with make_client(fake) as client:
        result = await submit_web(client, submission(), now=lambda: 1700000000.123)
    assert (result.aid, result.bvid) == (7, "BV1web")
    [entry] = fake.ops("submit_web")
    assert entry["params"] == {"t": "1700000000123", "csrf": "csrf-token"}
    assert "s3cr3t-sess" in entry["headers"]["cookie"]
    body = fake.submissions[0]["body"]
    assert body["videos"] == [{"filename": "n0001abc", "title": "P1", "desc": "", "cid": 1001}]
    assert body["title"] == "直播录像 2026-11-29" and body["copyright"] == 2 and body["tid"] == 171


async def test_submit_app_is_signed_and_cookieless() -> None:
    fake = FakeBili()
    async with make_client(fake) as client:
        result = await submit_app(client, submission(), now=lambda: 1700000000.9)
    assert (result.aid, result.bvid) == (8, "BV1app")
    [entry] = fake.ops("submit_app")
    assert "cookie" not in entry["headers"]
    query = entry["query"]
    unsigned, _, sign = query.rpartition("&sign=")
    assert sign == hashlib.md5((unsigned + APP_SECRET).encode()).hexdigest()
    params = entry["params"]
    assert params["access_key"] == "app-secret-key" and params["ts"] == "1700000000"
    assert params["appkey"] == "4409e2ce8ffd12b8"
    keys = [pair.split("=")[0] for pair in unsigned.split("&")]
    assert keys == sorted(keys)


async def test_submit_errors_are_classified() -> None:
    fake = FakeBili()
    fake.fail("submit_web", (200, {"code": 21070, "message": "投稿过快"}))
    fake.fail("submit_app", (200, {"code": -101, "message": "账号未登录"}))
    async with make_client(fake) as client:
        with pytest.raises(UploadError) as web:
            await submit_web(client, submission())
        with pytest.raises(UploadError) as app:
            await submit_app(client, submission())
    assert web.value.kind is ErrorKind.RISK_CONTROL
    assert app.value.kind is ErrorKind.AUTH


async def test_submit_needs_matching_credentials() -> None:
    fake = FakeBili()
    async with BiliClient(
        Credentials({"SESSDATA": "x"}), member_url=MEMBER, transport=fake.transport()
    ) as client:
        with pytest.raises(UploadError, match="bili_jct") as web:
            await submit_web(client, submission())
        with pytest.raises(UploadError, match="access_key") as app:
            await submit_app(client, submission())
    assert web.value.kind is app.value.kind is ErrorKind.AUTH
    assert not fake.log


async def test_submit_rejects_an_empty_submission() -> None:
    fake = FakeBili()
    async with make_client(fake) as client:
        with pytest.raises(UploadError) as info:
            await submit_web(client, Submission(title=" ", videos=[]))
    assert info.value.kind is ErrorKind.BAD_REQUEST and not fake.log


# -- client options --------------------------------------------------------


def test_client_rejects_bad_options() -> None:
    creds = Credentials.from_cookie_string(COOKIES)
    with pytest.raises(ValueError, match="member URL"):
        BiliClient(creds, member_url="ftp://x")
    with pytest.raises(ValueError, match="cannot be combined"):
        BiliClient(creds, source_ip="127.0.0.2", proxy="socks5://127.0.0.1:1")
    assert "s3cr3t" not in repr(BiliClient(creds))


async def test_source_ip_binds_outgoing_connections() -> None:
    """A real loopback server sees the bound address (127.0.0.2)."""
    seen: list[str] = []

    async def serve(stream: Any) -> None:
        async with stream:
            seen.append(stream.extra(anyio.abc.SocketAttribute.remote_address)[0])
            await stream.receive()
            await stream.send(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"OK":1}')

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        creds = Credentials.from_cookie_string(COOKIES)
        async with BiliClient(creds, source_ip="127.0.0.2") as client:
            with anyio.fail_after(10):
                await client.call("init", "POST", f"http://127.0.0.1:{port}/x")
        tg.cancel_scope.cancel()
    assert seen == ["127.0.0.2"]


async def _read_head(stream: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    return data


async def test_http_proxy_carries_the_requests() -> None:
    heads: list[bytes] = []

    async def proxy(stream: Any) -> None:
        async with stream:
            heads.append(await _read_head(stream))
            await stream.send(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"OK":1}')

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy)
        creds = Credentials.from_cookie_string(COOKIES)
        async with BiliClient(creds, proxy=f"http://127.0.0.1:{port}") as client:
            with anyio.fail_after(10):
                await client.call("init", "POST", "http://upos.invalid/b/k?uploads&output=json")
        tg.cancel_scope.cancel()
    assert heads[0].startswith(b"POST http://upos.invalid/b/k?uploads&output=json HTTP/1.1")


async def test_socks5_proxy_carries_the_requests() -> None:
    targets: list[tuple[str, int]] = []

    async def socks(stream: Any) -> None:
        async with stream:
            greeting = await stream.receive()
            assert greeting[0] == 5
            await stream.send(b"\x05\x00")  # no authentication
            request = await stream.receive()
            assert request[:3] == b"\x05\x01\x00"
            if request[3] == 3:  # domain name
                length = request[4]
                host = request[5 : 5 + length].decode()
                port = int.from_bytes(request[5 + length : 7 + length], "big")
            else:  # IPv4
                host = ".".join(str(b) for b in request[4:8])
                port = int.from_bytes(request[8:10], "big")
            targets.append((host, port))
            await stream.send(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
            await _read_head(stream)
            await stream.send(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"OK":1}')

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, socks)
        creds = Credentials.from_cookie_string(COOKIES)
        async with BiliClient(creds, proxy=f"socks5://127.0.0.1:{port}") as client:
            with anyio.fail_after(10):
                await client.call("init", "POST", "http://upos.invalid:8080/b/k")
        tg.cancel_scope.cancel()
    assert targets == [("upos.invalid", 8080)]


async def test_source_errors_surface_as_themselves() -> None:
    """Not wrapped in an ExceptionGroup: callers can catch their own source's errors."""

    class Broken(BytesSource):
        async def read(self, offset: int, length: int) -> bytes:
            if offset > 0:
                raise LookupError("stream lost")
            return await super().read(offset, length)

    fake = FakeBili(chunk_size=CHUNK)
    async with make_client(fake) as client:
        with pytest.raises(LookupError, match="stream lost"):
            await UposUploader(client, line="cs_bda2").upload(Broken(payload(3 * CHUNK)), "v")
    assert not fake.ops("complete")


async def test_unreadable_source_is_a_file_error() -> None:
    class Unreadable(BytesSource):
        async def read(self, offset: int, length: int) -> bytes:
            raise PermissionError(13, "Permission denied")

    fake = FakeBili(chunk_size=CHUNK)
    async with make_client(fake) as client:
        with pytest.raises(UploadError) as info:
            await UposUploader(client, line="cs_bda2").upload(Unreadable(b"abc"), "v")
    assert info.value.kind is ErrorKind.FILE and "Permission denied" in str(info.value)


@pytest.mark.parametrize("reply", [httpx.Response(200), httpx.Response(200, text="fine")])
async def test_completion_needs_an_explicit_ok(reply: httpx.Response) -> None:
    fake = FakeBili(chunk_size=CHUNK)

    async def complete(request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        return reply

    fake._complete = complete  # type: ignore[method-assign]
    with pytest.raises(UploadError) as info:
        await upload(fake, b"abc")
    assert info.value.kind is ErrorKind.BAD_REQUEST and "complete" in str(info.value)
