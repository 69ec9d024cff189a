"""Pure pieces of the uploader: classification, sessions, progress, file source."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from uploader.errors import ErrorKind, UploadError, classify, from_transport_error
from uploader.progress import ProgressMeter
from uploader.session import SessionError, UposSession
from uploader.source import FileSource
from uploader.upos import server_filename

# -- classification -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload", "kind"),
    [
        (200, {"OK": 1}, None),
        (200, {"code": 0, "data": {}}, None),
        (200, None, None),  # upos PUT replies are plain text
        (406, None, ErrorKind.RISK_CONTROL),
        (406, {"OK": 1}, ErrorKind.RISK_CONTROL),
        (412, None, ErrorKind.RISK_CONTROL),
        (429, None, ErrorKind.RISK_CONTROL),
        (200, {"OK": 0, "code": 601, "message": "上传视频过快"}, ErrorKind.RISK_CONTROL),
        (200, {"code": 21540, "message": "请求过于频繁"}, ErrorKind.RISK_CONTROL),
        (200, {"code": "601"}, ErrorKind.RISK_CONTROL),
        (200, {"code": -412}, ErrorKind.RISK_CONTROL),
        (500, None, ErrorKind.NETWORK),
        (503, {"OK": 0}, ErrorKind.NETWORK),
        (200, {"code": -101, "message": "账号未登录"}, ErrorKind.AUTH),
        (200, {"OK": 0, "code": -101}, ErrorKind.AUTH),
        (401, None, ErrorKind.AUTH),
        (403, {"code": -111}, ErrorKind.AUTH),
        (400, None, ErrorKind.BAD_REQUEST),
        (403, None, ErrorKind.BAD_REQUEST),
        (404, {"OK": 0}, ErrorKind.BAD_REQUEST),
        (200, {"OK": 0}, ErrorKind.BAD_REQUEST),
        (200, {"OK": "0"}, ErrorKind.BAD_REQUEST),
        (200, {"code": -400, "message": "请求错误"}, ErrorKind.BAD_REQUEST),
        (302, None, ErrorKind.BAD_REQUEST),
    ],
)
def test_classify(status: int, payload: object, kind: ErrorKind | None) -> None:
    error = classify("preupload", status, payload)
    if kind is None:
        assert error is None
    else:
        assert error is not None and error.kind is kind
        assert str(error).startswith(f"{kind}: ")
        assert "preupload" in str(error)


def test_error_text_and_fields() -> None:
    error = classify("preupload", 406, None)
    assert error is not None
    assert str(error) == "risk_control: HTTP 406 on preupload"
    assert (error.status, error.code) == (406, None)
    assert not error.retryable
    error = classify("put part 3", 200, {"OK": 0, "code": 601, "message": "上传视频过快"})
    assert str(error) == "risk_control: code 601 on put part 3: 上传视频过快"
    assert error is not None and error.code == 601


VOUCHER = "voucher_bd4de714-2bb5-4473-be0e-cae08e47acbd"
UPOS_601 = {
    "OK": 0,
    "info": "您上传视频过快，请您稍作休息后再继续",
    "code": 601,
    "message": "您上传视频过快，请您稍作休息后再继续",
    "detail": {"v_voucher": VOUCHER},
}


@pytest.mark.parametrize(
    ("op", "status", "payload", "headers", "kind", "code", "voucher", "retry_after"),
    [
        # Preupload risk control, the old way and the current way (any non-2xx status).
        ("preupload", 406, {"code": 406, "message": "您上传视频过快"}, None,
         ErrorKind.RISK_CONTROL, 406, None, None),
        ("preupload", 406, UPOS_601, None, ErrorKind.RISK_CONTROL, 601, VOUCHER, None),
        ("preupload", 403, UPOS_601, None, ErrorKind.RISK_CONTROL, 601, VOUCHER, None),
        ("preupload", 200, UPOS_601, None, ErrorKind.RISK_CONTROL, 601, VOUCHER, None),
        # The JSON API envelope carries the voucher in data.
        ("submit", 200, {"code": 601, "message": "请输入验证码信息", "ttl": 1,
                         "data": {"v_voucher": VOUCHER}},
         None, ErrorKind.RISK_CONTROL, 601, VOUCHER, None),
        ("put part 2", 406, None, {"Retry-After": "120"}, ErrorKind.RISK_CONTROL, None, None, 120.0),
        ("submit", 200, {"code": 21540, "message": "请求过于频繁"}, None,
         ErrorKind.RISK_CONTROL, 21540, None, None),
        # Account-level submission throttles, whatever the IP.
        ("submit", 200, {"code": 21566, "message": "投稿过于频繁，建议将APP升级至最新版本后再试",
                         "ttl": 1}, None, ErrorKind.ACCOUNT_THROTTLE, 21566, None, None),
        ("submit", 200, {"code": 137022, "message": "投稿过于频繁，请稍后再试", "ttl": 1},
         {"retry-after": "600"}, ErrorKind.ACCOUNT_THROTTLE, 137022, None, 600.0),
        ("submit", 200, {"code": 21566}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
         ErrorKind.ACCOUNT_THROTTLE, 21566, None, None),  # a date: no known wait
        ("submit", 200, {"code": 21566}, {"Retry-After": "nan"},
         ErrorKind.ACCOUNT_THROTTLE, 21566, None, None),
        # Sticky account penalties.
        ("submit", 200, {"code": 21515, "message": "批量作弊投稿"}, None,
         ErrorKind.ACCOUNT_PENALTY, 21515, None, None),
        ("submit", 200, {"code": "21590", "message": "投稿工具已停用"}, None,
         ErrorKind.ACCOUNT_PENALTY, 21590, None, None),
        # A refused upos session: any 403 on init, a chunk or completion.
        ("put part 7", 403, None, {"X-Upos-Auth": "AUTH_TS_GT_5DAY AUTH=ak=1&uip=1.2.3.4 Now=1"},
         ErrorKind.SESSION_REJECTED, None, None, None),
        ("init", 403, None, None, ErrorKind.SESSION_REJECTED, None, None, None),
        ("complete", 403, None, None, ErrorKind.SESSION_REJECTED, None, None, None),
        # Elsewhere a 403 is still a bad request.
        ("preupload", 403, None, None, ErrorKind.BAD_REQUEST, None, None, None),
        ("submit", 403, None, None, ErrorKind.BAD_REQUEST, None, None, None),
    ],
)  # fmt: skip
def test_classify_throttles_penalties_and_sessions(
    op: str,
    status: int,
    payload: object,
    headers: dict[str, str] | None,
    kind: ErrorKind,
    code: int | None,
    voucher: str | None,
    retry_after: float | None,
) -> None:
    error = classify(op, status, payload, headers)
    assert error is not None
    assert (error.kind, error.code, error.voucher, error.retry_after) == (
        kind,
        code,
        voucher,
        retry_after,
    )
    assert error.status == status and not error.retryable


def test_session_rejection_names_the_reason_but_never_the_auth() -> None:
    header = "AUTH_TS_GT_5DAY AUTH=ak=1494471752&sign=911dd5b9&uip=108.181.24.77 Now=1 DURATION=2"
    error = classify("put part 7", 403, None, {"X-Upos-Auth": header})
    assert error is not None
    assert str(error) == (
        "session_rejected: upos refused the session: HTTP 403 on put part 7: AUTH_TS_GT_5DAY"
    )
    assert "sign" not in repr(error) and "108.181" not in repr(error)
    bare = classify("put part 7", 403, None, {"X-Upos-Auth": "<script>"})
    assert bare is not None and str(bare).endswith("HTTP 403 on put part 7")


def test_upload_error_fields_default_to_unknown() -> None:
    error = UploadError(ErrorKind.ACCOUNT_THROTTLE, "code 21566 on submit", code=21566)
    assert error.voucher is None and error.retry_after is None
    assert "retry_after" not in repr(error)
    waited = UploadError(ErrorKind.RISK_CONTROL, "x", voucher="voucher_1", retry_after=5.0)
    assert "voucher='voucher_1'" in repr(waited) and "retry_after=5.0" in repr(waited)


def test_server_messages_are_bounded() -> None:
    error = classify("submit", 400, {"message": "x" * 10_000})
    assert error is not None and len(str(error)) < 300


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("t"),
        httpx.ReadTimeout("t"),
        httpx.ReadError("r"),
        httpx.RemoteProtocolError("p"),
        httpx.ConnectError("c"),
    ],
)
def test_transport_errors_are_network(exc: Exception) -> None:
    error = from_transport_error("put part 1", exc)
    assert error.kind is ErrorKind.NETWORK and error.retryable
    assert "put part 1" in str(error)


def test_upload_error_kind_is_a_str_enum() -> None:
    error = UploadError("auth", "x")  # type: ignore[arg-type]
    assert error.kind is ErrorKind.AUTH and error.kind == "auth"


# -- sessions -----------------------------------------------------------------


def session(size: int, chunk: int = 10, done: list[int] | None = None) -> UposSession:
    return UposSession(
        name="v.flv",
        size=size,
        upos_uri="upos://b/n1.flv",
        endpoint="//h",
        upload_url="https://h/b/n1.flv",
        auth="SECRET-AUTH",
        biz_id=1,
        chunk_size=chunk,
        threads=3,
        upload_id="SECRET-ID",
        parts_done=done or [],
        created_at=1.0,
    )


def test_part_arithmetic() -> None:
    s = session(25)
    assert s.part_count() == 3
    assert [s.part_range(n) for n in (1, 2, 3)] == [(0, 10), (10, 20), (20, 25)]
    assert session(0).part_count() == 1 and session(0).part_range(1) == (0, 0)
    assert session(10).part_count() == 1
    assert session(11).part_count() == 2
    with pytest.raises(ValueError):
        s.part_range(4)


def test_committed_offset_and_missing() -> None:
    assert session(25).committed_offset() == 0
    assert session(25, done=[1]).committed_offset() == 10
    assert session(25, done=[1, 3]).committed_offset() == 10
    assert session(25, done=[2, 3]).committed_offset() == 0
    assert session(25, done=[1, 2, 3]).committed_offset() == 25
    assert session(25, done=[1, 3]).missing_parts() == [2]
    assert session(25, done=[1, 3]).done_bytes() == 15
    assert session(0, done=[1]).committed_offset() == 0


def test_with_part_done_copies() -> None:
    a = session(25)
    b = a.with_part_done(2).with_part_done(1).with_part_done(2)
    assert a.parts_done == [] and b.parts_done == [1, 2]


def test_json_round_trip_and_redaction() -> None:
    s = session(25, done=[1])
    assert UposSession.from_json(s.to_json()) == s
    assert UposSession.from_json(s.to_json().decode()) == s
    for text in (repr(s), str(s), f"{s}"):
        assert "SECRET" not in text


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b"[1]",
        b'{"name": 1}',
        session(25, done=[4]).to_json(),
        session(25).to_json().replace(b'"chunk_size":10', b'"chunk_size":0'),
    ],
)
def test_bad_session_json(raw: bytes) -> None:
    with pytest.raises(SessionError):
        UposSession.from_json(raw)


def test_server_filename() -> None:
    assert server_filename("upos://ugcfx2lf/n230101abc.flv") == "n230101abc"
    assert server_filename("upos://b/dir/n1.part.mp4") == "n1.part"
    assert server_filename("upos://b/noext") == "noext"


# -- progress -----------------------------------------------------------------


def test_progress_is_throttled_but_first_and_last_always_reported() -> None:
    meter = ProgressMeter(100, start=0.0, interval=1.0)
    assert meter.advance(10, 0.1) is not None  # first
    assert meter.advance(10, 0.5) is None  # too soon
    report = meter.advance(10, 1.2)
    assert report is not None and report.uploaded == 30
    assert report.speed_bps == pytest.approx(30 / 1.2)
    assert report.eta_seconds == pytest.approx(70 / (30 / 1.2))
    last = meter.advance(70, 1.3)
    assert last is not None and last.uploaded == 100 and last.eta_seconds == 0


def test_progress_after_resume_counts_only_new_bytes_for_speed() -> None:
    meter = ProgressMeter(100, start=0.0, already=50, interval=0)
    report = meter.advance(10, 2.0)
    assert report is not None and report.uploaded == 60 and report.speed_bps == 5.0


def test_progress_speed_uses_a_sliding_window() -> None:
    meter = ProgressMeter(10**9, start=0.0, interval=0, window=10)
    for t in range(1, 11):
        meter.advance(100, float(t))
    # then a stall: speed over the window falls
    report = meter.advance(0, 30.0)
    assert report is not None and report.speed_bps < 100
    stalled = ProgressMeter(100, start=0.0, interval=0)
    assert stalled.snapshot(5.0).eta_seconds == float("inf")


# -- file source ----------------------------------------------------------------


@pytest.mark.anyio
async def test_file_source(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(1000)
    path.write_bytes(data)
    with FileSource(path) as source:
        assert source.size == 1000
        assert await source.read(0, 10) == data[:10]
        assert await source.read(990, 100) == data[990:]
        assert await source.read(1000, 10) == b""
        source.release(0, 10)
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing")


def test_endpoint_forms_become_absolute_urls() -> None:
    from uploader.client import BiliClient
    from uploader.credentials import Credentials

    c = BiliClient(Credentials({"a": "b"}), member_url="https://member.bilibili.com/")
    assert c.member_url == "https://member.bilibili.com"
    assert (
        c.absolute("//upos-cs-upcdnbda2.bilivideo.com") == "https://upos-cs-upcdnbda2.bilivideo.com"
    )
    assert c.absolute("upos-cs-upcdnws.bilivideo.com") == "https://upos-cs-upcdnws.bilivideo.com"
    assert c.absolute("http://h:1") == "http://h:1"
    assert c.is_member_host("https://member.bilibili.com/x")
    assert c.is_member_host("https://api.bilibili.com/x")
    assert not c.is_member_host("https://upos-cs-upcdnbda2.bilivideo.com/x")
    assert not c.is_member_host("https://evilbilibili.com/x")
