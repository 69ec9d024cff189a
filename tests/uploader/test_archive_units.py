"""Archive features without sockets: limits, the body checks, classification, review, parsing.

Clocks are fake (a number), so the scheduled-publishing window is checked at
its edges to the second.
"""

from __future__ import annotations

import httpx
import msgspec
import pytest

from uploader import limits
from uploader.archive import Review, edited_archive, parse_view, review_of
from uploader.archive_list import parse_page
from uploader.client import BiliClient
from uploader.covers import cover_data_url, image_type
from uploader.credentials import Credentials
from uploader.errors import (
    ArchiveError,
    ArchiveProblem,
    ErrorKind,
    UploadError,
    archive_problem,
    classify,
)
from uploader.seasons import pick_section
from uploader.submit import Submission, VideoPart, archive_body, submit_app, submit_web

NOW = 1_800_000_000.0
HOUR = 3600


def parts(n: int) -> list[VideoPart]:
    return [VideoPart(filename=f"n{i:04d}", title=f"P{i}") for i in range(1, n + 1)]


# -- limits -----------------------------------------------------------------------


def test_cut_keeps_short_titles_and_cuts_long_ones_to_the_limit() -> None:
    assert limits.cut("short") == "short"
    assert limits.cut("字" * 80) == "字" * 80
    assert limits.cut("字" * 81) == "字" * 80
    assert limits.cut("a" * 79 + " b") == "a" * 79  # no blank left dangling by the cut
    with pytest.raises(ValueError):
        limits.cut("x", 0)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(0, []), (1, [1]), (100, [100]), (101, [100, 1]), (250, [100, 100, 50])],
)
def test_batches_split_in_order_at_most_100(count: int, sizes: list[int]) -> None:
    items = list(range(count))
    split = limits.batches(items)
    assert [len(b) for b in split] == sizes
    assert [x for b in split for x in b] == items


def test_batches_of_another_size() -> None:
    assert limits.batches("abcde", 2) == [["a", "b"], ["c", "d"], ["e"]]
    with pytest.raises(ValueError):
        limits.batches([1], 0)


@pytest.mark.parametrize(
    ("ahead", "ok"),
    [
        (2 * HOUR - 1, False),
        (2 * HOUR, True),
        (15 * 86400, True),
        (15 * 86400 + 1, False),
        (-60, False),
    ],
)
def test_dtime_window_edges(ahead: int, ok: bool) -> None:
    dtime = int(NOW) + ahead
    assert (limits.dtime_problem(dtime, NOW) is None) is ok
    if ok:
        limits.check_dtime(dtime, NOW)
    else:
        with pytest.raises(ArchiveError) as info:
            limits.check_dtime(dtime, NOW)
        assert info.value.problem is ArchiveProblem.DTIME_OUT_OF_RANGE
        assert info.value.code == 21006 and info.value.kind is ErrorKind.BAD_REQUEST
        assert "dtime" in str(info.value)


def test_dtime_none_means_publish_when_approved() -> None:
    limits.check_dtime(None, NOW)


def test_dtime_window_can_be_widened_for_other_rules() -> None:
    dtime = int(NOW) + 3 * HOUR
    assert limits.dtime_problem(dtime, NOW, min_ahead=4 * HOUR) is not None


# -- the body ---------------------------------------------------------------------


def test_body_cuts_titles_and_keeps_new_fields() -> None:
    sub = Submission(
        title="标" * 90, cover="https://archive.biliimg.com/bfs/archive/x.jpg",
        dtime=int(NOW) + 3 * HOUR, no_reprint=1, is_only_self=1, up_close_reply=True,
        up_close_danmu=True, dynamic="dyn",
        videos=[VideoPart(filename="n1", title="p" * 100)],
    )  # fmt: skip
    body = archive_body(sub, NOW)
    assert body["title"] == "标" * 80 and body["videos"][0]["title"] == "p" * 80
    assert body["dtime"] == int(NOW) + 3 * HOUR
    assert (body["no_reprint"], body["is_only_self"]) == (1, 1)
    assert body["up_close_reply"] is True and body["up_close_danmu"] is True
    assert body["cover"].endswith("x.jpg") and body["dynamic"] == "dyn"
    assert sub.title == "标" * 90  # the caller's struct is left alone


def test_body_without_dtime_leaves_it_out() -> None:
    body = archive_body(Submission(title="t", videos=parts(1)), NOW)
    assert "dtime" not in body
    assert body["no_reprint"] == 0 and body["up_close_reply"] is False


def test_body_refuses_101_parts_and_a_bad_dtime_before_sending() -> None:
    with pytest.raises(ArchiveError) as many:
        archive_body(Submission(title="t", videos=parts(101)), NOW)
    assert many.value.problem is ArchiveProblem.TOO_MANY_PARTS and many.value.code == 21058
    archive_body(Submission(title="t", videos=parts(100)), NOW)
    archive_body(Submission(title="t", videos=parts(101)), NOW, count_parts=False)  # an edit
    with pytest.raises(ArchiveError):
        archive_body(Submission(title="t", dtime=int(NOW) + 60, videos=parts(1)), NOW)


@pytest.mark.parametrize("field", ["no_reprint", "is_only_self"])
def test_body_refuses_flags_other_than_0_or_1(field: str) -> None:
    sub = msgspec.structs.replace(Submission(title="t", videos=parts(1)), **{field: 2})
    with pytest.raises(UploadError, match=field):
        archive_body(sub, NOW)


def test_a_hub_built_submission_decodes_with_or_without_the_new_fields() -> None:
    old = b'{"title":"t","videos":[{"filename":"n1","title":"P1"}]}'
    sub = msgspec.json.decode(old, type=Submission)
    assert sub.dtime is None and sub.no_reprint == 0 and not sub.up_close_danmu
    new = msgspec.json.encode(msgspec.structs.replace(sub, dtime=5, up_close_reply=True))
    assert msgspec.json.decode(new, type=Submission).up_close_reply is True


# -- classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (21058, ArchiveProblem.TOO_MANY_PARTS),
        (21103, ArchiveProblem.TITLE_TOO_LONG),
        (21104, ArchiveProblem.PART_TITLE_TOO_LONG),
        (21006, ArchiveProblem.DTIME_OUT_OF_RANGE),
        (21010, ArchiveProblem.DESC_TOO_LONG),
        (-404, ArchiveProblem.NO_SUCH_ARCHIVE),
        (20080, ArchiveProblem.ALREADY_IN_SEASON),
    ],
)
def test_archive_codes_are_bad_requests_with_a_problem(code: int, problem: ArchiveProblem) -> None:
    error = classify("edit", 200, {"code": code, "message": "x"})
    assert error is not None and error.kind is ErrorKind.BAD_REQUEST and error.code == code
    assert archive_problem(error) is problem
    assert archive_problem(code=code) is problem


def test_other_errors_have_no_archive_problem() -> None:
    assert archive_problem(classify("submit", 200, {"code": -400})) is None
    assert archive_problem(UploadError(ErrorKind.NETWORK, "x", code=21058)) is None
    assert archive_problem(code=None) is None
    local = ArchiveError(ArchiveProblem.SEASON_NOT_FOUND, "no such collection")
    assert archive_problem(local) is ArchiveProblem.SEASON_NOT_FOUND and local.code is None


@pytest.mark.parametrize("code", [20111, 20113])
def test_collection_throttling_is_risk_control(code: int) -> None:
    error = classify("season", 200, {"code": code, "message": "手速太快啦"})
    assert error is not None and error.kind is ErrorKind.RISK_CONTROL


# -- review -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "review"),
    [
        (0, Review.APPROVED),
        (1, Review.APPROVED),
        (-1, Review.PENDING),
        (-6, Review.PENDING),  # re-review after an edit
        (-30, Review.PENDING),
        (-40, Review.PENDING),  # scheduled: not public yet
        (-999, Review.PENDING),  # unknown: wait rather than act
        (-2, Review.REJECTED),
        (-4, Review.REJECTED),
        (-16, Review.REJECTED),
        (-100, Review.REJECTED),
    ],
)
def test_review_of_states(state: int, review: Review) -> None:
    assert review_of(state).review is review


def test_rejection_reasons_come_from_either_field_or_the_state() -> None:
    assert review_of(-2, "已退回", "标题违规").reason == "标题违规"
    assert review_of(-2, "标题违规", "").reason == "标题违规"
    assert review_of(-16).reason == "转码失败"
    assert review_of(0, "", "stale").reason == ""


# -- parsing ------------------------------------------------------------------------------


def test_parse_view_is_lenient_about_nulls() -> None:
    view = parse_view({"code": 0, "data": {
        "archive": {"aid": 7, "bvid": "BV7", "title": None, "state": -30, "ctime": "12"},
        "videos": [{"filename": "n1", "cid": 3, "title": None}, "junk", {"filename": None}],
    }})  # fmt: skip
    assert (view.aid, view.bvid, view.title, view.ctime) == (7, "BV7", "", 12)
    assert view.filenames == ["n1", ""] and view.review.review is Review.PENDING
    with pytest.raises(UploadError, match="no archive"):
        parse_view({"code": 0, "data": {"videos": []}})


def test_parse_page_tells_missing_part_lists_apart() -> None:
    payload = {"code": 0, "data": {"arc_audits": [
        {"Archive": {"aid": 1, "bvid": "B1", "title": "a", "state": 0}, "Videos": None},
        {"Archive": {"aid": 2, "bvid": "B2", "title": "b", "state": -2, "reject_reason": "r"},
         "Videos": [{"filename": "n1"}, {"filename": "n2"}]},
        {"Archive": {"aid": 3}, "Videos": [{"filename": "n3"}, {"cid": 9}]},
        {"Archive": {"aid": 4}, "Videos": []},
        {"Archive": None},
    ]}}  # fmt: skip
    listed = parse_page(payload)
    assert [a.aid for a in listed] == [1, 2, 3, 4]
    assert [a.filenames for a in listed] == [None, frozenset({"n1", "n2"}), None, None]
    assert listed[1].review.review is Review.REJECTED and listed[1].review.reason == "r"
    assert listed[2].review.review is Review.PENDING  # no state: wait
    assert parse_page({"code": 0, "data": {"arc_audits": None}}) == []
    with pytest.raises(UploadError):
        parse_page({"code": 0, "data": {"arc_audits": "x"}})


def test_edited_archive_keeps_what_bilibili_shows_and_appends() -> None:
    view = parse_view({"code": 0, "data": {
        "archive": {"aid": 7, "bvid": "BV7", "title": "edited by hand", "tid": 17, "tag": "a,b",
                    "desc": "d", "copyright": 1, "source": "", "cover": "//c.jpg",
                    "no_reprint": 1, "dtime": int(NOW) + 5 * HOUR, "state": 0},
        "videos": [{"filename": "n1", "cid": 11, "title": "P1"}],
    }})  # fmt: skip
    settings = Submission(title="as submitted", tid=171, up_close_reply=True, videos=[])
    archive = edited_archive(view, [VideoPart(filename="n2", title="P2")], settings, NOW)
    assert (archive.title, archive.tid, archive.tag, archive.copyright) == (
        "edited by hand", 17, "a,b", 1)  # fmt: skip
    assert archive.no_reprint == 1 and archive.up_close_reply is True
    assert archive.dtime == int(NOW) + 5 * HOUR
    assert [(v.filename, v.cid) for v in archive.videos] == [("n1", 11), ("n2", 0)]
    later = edited_archive(view, [], settings, NOW + 4 * HOUR)  # dtime now < 2 h ahead
    assert later.dtime is None


def test_pick_section_prefers_a_healthy_section_of_the_wanted_season() -> None:
    payload = {"data": {"seasons": [
        {"season": {"id": 1}, "sections": {"sections": [{"id": 10, "state": 0}]}},
        {"season": {"id": 2}, "sections": {"sections": [
            {"id": 20, "state": -6}, {"id": 21, "state": 0}]}},
        {"season": {"id": 3}, "sections": {"sections": [{"id": 30, "state": -6}]}},
        {"season": {"id": 4}, "sections": None},
    ]}}  # fmt: skip
    assert [pick_section(payload, n) for n in (1, 2, 3, 4, 5)] == [10, 21, 30, None, None]


# -- covers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"GIF89a...", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"<html>error</html>", None),
    ],
)
def test_image_type(data: bytes, mime: str | None) -> None:
    assert image_type(data) == mime


def test_cover_data_url_refuses_what_is_no_image() -> None:
    assert cover_data_url(b"\x89PNG\r\n\x1a\nx").startswith("data:image/png;base64,iVBORw0KGgp4")
    for bad in (b"", b"<html>"):
        with pytest.raises(UploadError) as info:
            cover_data_url(bad)
        assert info.value.kind is ErrorKind.BAD_REQUEST


# -- nothing is sent for a refused body ---------------------------------------------------


@pytest.mark.anyio
async def test_refused_bodies_send_nothing() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200, json={"code": 0, "data": {"aid": 1, "bvid": "BV1"}})

    creds = Credentials.from_cookie_string("SESSDATA=s; bili_jct=c", access_key="k")
    async with BiliClient(creds, member_url="http://m.test",
                          transport=httpx.MockTransport(handler)) as client:  # fmt: skip
        for submit in (submit_web, submit_app):
            with pytest.raises(ArchiveError) as many:
                await submit(client, Submission(title="t", videos=parts(101)), now=lambda: NOW)
            assert many.value.problem is ArchiveProblem.TOO_MANY_PARTS
            soon = Submission(title="t", dtime=int(NOW) + HOUR, videos=parts(1))
            with pytest.raises(ArchiveError) as early:
                await submit(client, soon, now=lambda: NOW)
            assert early.value.problem is ArchiveProblem.DTIME_OUT_OF_RANGE
        assert sent == []
        later = Submission(title="t", dtime=int(NOW) + 3 * HOUR, videos=parts(100))
        await submit_web(client, later, now=lambda: NOW)
    assert sent == ["/x/vu/web/add/v3"]
