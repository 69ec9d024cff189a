"""The agent's side of Submit: the executor against a fake member API (one SubmitResult per
Submit, an earlier attempt's archive adopted instead of a second submission) and the time
an agent may spend on a Submit."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from protocol import mesh_pb2 as pb
from spoke.submitter import SUBMIT_LIMIT, SUBMIT_LIMIT_MAX, execute, submit_time_left
from uploader.client import BiliClient
from uploader.submit import Submission, VideoPart


def fake_member(archives: list[dict], calls: list[str], submit_code: int = 0):
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/x/web/archives":
            assert "SESSDATA=s" in request.headers["cookie"]
            return httpx.Response(200, json={"code": 0, "data": {"arc_audits": archives}})
        if request.url.path == "/x/vu/web/add/v3":
            if submit_code:
                return httpx.Response(200, json={"code": submit_code, "message": "投稿过快"})
            return httpx.Response(200, json={"code": 0, "data": {"aid": 9, "bvid": "BV9"}})
        return httpx.Response(404)

    def factory(credentials, **kw):
        kw.pop("source_ip", None)
        kw.pop("proxy", None)
        return BiliClient(credentials, transport=httpx.MockTransport(handler), **kw)

    return factory


def submit_msg(attempt: int) -> pb.Submit:
    sub = Submission(title="t", videos=[VideoPart(filename="n1", title="P1"),
                                        VideoPart(filename="n2", title="P2")])
    return pb.Submit(submit_id="sub-1", attempt=attempt, member_url="http://member.test",
                     api="web", submission=msgspec.json.encode(sub),
                     credentials=pb.BiliCredentials(cookies="SESSDATA=s; bili_jct=c"))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_executor_first_attempt_submits_without_looking(anyio_backend: str) -> None:
    calls: list[str] = []
    result = await execute(submit_msg(1), client_factory=fake_member([], calls))
    assert (result.success, result.aid, result.bvid, result.attempt) == (True, 9, "BV9", 1)
    assert calls == ["/x/vu/web/add/v3"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_executor_later_attempt_adopts_an_existing_archive(anyio_backend: str) -> None:
    calls: list[str] = []
    other = {"Archive": {"aid": 1, "bvid": "BV1"}, "Videos": [{"filename": "n1"}]}
    ours = {"Archive": {"aid": 5, "bvid": "BV5"},
            "Videos": [{"filename": "n2"}, {"filename": "n1"}]}
    result = await execute(submit_msg(2), client_factory=fake_member([other, ours], calls))
    assert (result.success, result.aid, result.bvid) == (True, 5, "BV5")
    assert calls == ["/x/web/archives"]  # found: no second submission
    calls.clear()
    result = await execute(submit_msg(3), client_factory=fake_member([other], calls))
    assert result.success and calls == ["/x/web/archives", "/x/vu/web/add/v3"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_executor_reports_risk_control_and_bad_input(anyio_backend: str) -> None:
    result = await execute(submit_msg(1), client_factory=fake_member([], [], submit_code=21540))
    assert (result.success, result.error_kind) == (False, "risk_control")
    bad = submit_msg(1)
    bad.submission = b"{not json"
    result = await execute(bad, client_factory=fake_member([], []))
    assert (result.success, result.error_kind) == (False, "bad_request")
    assert "unreadable" in result.error_message



def test_an_agent_spends_on_a_submit_only_what_is_left_of_the_hubs_deadline() -> None:
    """A Submit that sat in a half-open link until after its deadline is not run: the hub
    may have sent a later attempt by then (chaos seed 144621 found that race)."""
    assert submit_time_left(pb.Submit(), now=1000) == SUBMIT_LIMIT  # an older hub: own bound
    fresh = pb.Submit(deadline_seconds=90, sent_at_unix=1000)
    assert submit_time_left(fresh, now=1000.5) == 89.5
    assert submit_time_left(fresh, now=1090) <= 0  # arrived too late: do not start
    assert submit_time_left(pb.Submit(deadline_seconds=10_000), now=0) == SUBMIT_LIMIT_MAX


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_app_submit_needs_only_the_access_key(anyio_backend: str) -> None:
    """The hub sends an app Submit the access key and no cookie (least privilege)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 0, "data": {"aid": 7, "bvid": "BV7"}})

    def factory(credentials, **kw):
        kw.pop("source_ip", None)
        kw.pop("proxy", None)
        return BiliClient(credentials, transport=httpx.MockTransport(handler), **kw)

    msg = submit_msg(1)
    msg.api = "app"
    msg.credentials.CopyFrom(pb.BiliCredentials(access_key="app-key-3", mid=42))
    result = await execute(msg, client_factory=factory)
    assert (result.success, result.aid) == (True, 7), result.error_message
    assert [r.url.path for r in seen] == ["/x/vu/app/add"]
    assert seen[0].url.params["access_key"] == "app-key-3" and "cookie" not in seen[0].headers
