"""One archive after submission: what it holds, how its review went, and appending parts to it.

- ``GET {member}/x/vupre/web/archive/view?aid=|bvid=&topic_grey=1`` (cookies): the
  creative centre's view of one of the account's archives,
  ``{"code":0,"data":{"archive":{"aid","bvid","title","tid","tag","desc",
  "copyright","source","cover","dynamic","dtime","state","state_desc",
  "reject_reason",...},"videos":[{"aid","bvid","title","filename","cid",...}]}}``.
  It lists each video's server file name, which is what makes it the
  confirmation step of reconciliation (:mod:`uploader.reconcile`). Another
  account's or an unknown archive answers -404.
- ``POST {member}/x/vu/web/edit?t=&csrf=`` (cookies): the whole archive again,
  ``aid`` and ``csrf`` in the body beside the ``add/v3`` fields and the full
  video list. A field left out is cleared and a video left out is removed, so
  an edit always starts from the view (:func:`append_parts`).

Review: ``archive.state`` is Bilibili's archive state (0 open, 1 orange pass,
-1 waiting, -2 sent back, -4 locked, -6 fixed and waiting, -16 transcode failed,
-30 created and submitted, -40 scheduled, -100 deleted, ...); :func:`review_of`
folds it into pending / approved / rejected with a reason. Where the reason
lives is not confirmed for this endpoint (``reject_reason`` in the creative
centre's list, ``state_desc`` beside it), so both are read.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from uploader import limits
from uploader.client import BiliClient
from uploader.errors import ErrorKind, UploadError
from uploader.submit import Submission, SubmitResult, VideoPart, archive_body


class Review(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ReviewState(msgspec.Struct, frozen=True, kw_only=True):
    review: Review
    state: int  # Bilibili's archive.state, kept for display and for states not folded well
    desc: str = ""  # archive.state_desc
    reason: str = ""  # why it was rejected (empty otherwise)


APPROVED_STATES = frozenset({0, 1})
# Sent back, locked, failed for good, deleted: nothing will make these public
# without a person acting. Every other state (waiting, transcoding, scheduled,
# re-review after an edit, and any state not known here) counts as pending.
REJECTED_STATES: dict[int, str] = {
    -2: "被打回",
    -3: "网警锁定",
    -4: "被锁定",
    -12: "转储失败",
    -14: "临时回收站",
    -16: "转码失败",
    -100: "用户删除",
}


def review_of(state: int, state_desc: str = "", reject_reason: str = "") -> ReviewState:
    """Fold Bilibili's archive state into pending / approved / rejected (pure)."""
    if state in APPROVED_STATES:
        return ReviewState(review=Review.APPROVED, state=state, desc=state_desc)
    if state in REJECTED_STATES:
        reason = reject_reason or state_desc or REJECTED_STATES[state]
        return ReviewState(review=Review.REJECTED, state=state, desc=state_desc, reason=reason)
    return ReviewState(review=Review.PENDING, state=state, desc=state_desc)


class ViewVideo(msgspec.Struct, frozen=True, kw_only=True):
    filename: str
    cid: int = 0
    title: str = ""
    desc: str = ""


class ArchiveView(msgspec.Struct, frozen=True, kw_only=True):
    aid: int
    bvid: str
    title: str
    review: ReviewState
    videos: list[ViewVideo]
    ctime: int = 0
    archive: dict[str, Any] = {}  # the raw archive object: metadata an edit keeps

    @property
    def filenames(self) -> list[str]:
        return [video.filename for video in self.videos]


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_view(payload: Any) -> ArchiveView:
    """An archive view reply -> :class:`ArchiveView` (lenient about nulls and extra fields)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    archive = data.get("archive") if isinstance(data, dict) else None
    if not isinstance(archive, dict) or _int(archive.get("aid")) <= 0:
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on view: no archive")
    raw_videos = data.get("videos") if isinstance(data, dict) else None
    videos = [
        ViewVideo(
            filename=_str(v.get("filename")),
            cid=_int(v.get("cid")),
            title=_str(v.get("title")),
            desc=_str(v.get("desc")),
        )
        for v in (raw_videos if isinstance(raw_videos, list) else [])
        if isinstance(v, dict)
    ]
    return ArchiveView(
        aid=_int(archive.get("aid")),
        bvid=_str(archive.get("bvid")),
        title=_str(archive.get("title")),
        review=review_of(
            _int(archive.get("state"), -1),
            _str(archive.get("state_desc")),
            _str(archive.get("reject_reason")),
        ),
        videos=videos,
        ctime=_int(archive.get("ctime")),
        archive=archive,
    )


async def view_archive(
    client: BiliClient, *, aid: int | None = None, bvid: str | None = None
) -> ArchiveView:
    """One of the account's archives, by ``aid`` or ``bvid`` (-404: not there, not ours)."""
    if (aid is None) == (bvid is None):
        raise ValueError("view_archive needs exactly one of aid and bvid")
    params: dict[str, Any] = {"aid": aid} if aid is not None else {"bvid": bvid}
    params["topic_grey"] = 1
    payload = await client.call(
        "view", "GET", client.member("x/vupre/web/archive/view"), params=params, with_cookies=True
    )
    return parse_view(payload)


async def edit_archive(
    client: BiliClient,
    aid: int,
    archive: Submission,
    *,
    now: Callable[[], float] = time.time,
) -> SubmitResult:
    """Replace archive ``aid`` with ``archive`` (every field, every video): ``x/vu/web/edit``.

    Low level: whatever ``archive`` leaves out is cleared on Bilibili. Use
    :func:`append_parts` to add videos to what is there.
    """
    body = archive_body(archive, now(), count_parts=False)
    csrf = client.csrf()
    body["aid"] = aid
    body["csrf"] = csrf
    payload = await client.call(
        "edit",
        "POST",
        client.member("x/vu/web/edit"),
        params={"t": int(now() * 1000), "csrf": csrf},
        json=body,
        with_cookies=True,
    )
    data = payload.get("data") if isinstance(payload, dict) else None
    bvid = _str(data.get("bvid")) if isinstance(data, dict) else ""
    return SubmitResult(aid=aid, bvid=bvid)


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    aid: int
    bvid: str
    added: list[str]  # file names this call added; empty when all were there already
    videos: int  # videos in the archive afterwards


# Fields of the view's archive object an edit sends back as they are.
_KEPT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "title": _str, "tag": _str, "desc": _str, "source": _str, "cover": _str, "dynamic": _str,
    "tid": _int, "copyright": _int, "no_reprint": _int, "is_only_self": _int,
}  # fmt: skip


def edited_archive(
    view: ArchiveView, new_parts: Iterable[VideoPart], settings: Submission | None, now: float
) -> Submission:
    """The whole archive for an edit that appends ``new_parts`` to what ``view`` shows (pure).

    Metadata comes from the view (Bilibili's current truth, a person's manual
    edits included); what the view does not carry (``up_close_reply``, ...)
    from ``settings``, the archive as it was submitted. A scheduled time is
    kept only while it still fits its window; past it, it is left out.
    """
    base = settings or Submission(title=view.title, videos=[])
    kept = {key: convert(view.archive[key]) for key, convert in _KEPT_FIELDS.items()
            if view.archive.get(key) is not None}  # fmt: skip
    dtime = _int(view.archive.get("dtime"))
    kept["dtime"] = (
        dtime if dtime > 0 and limits.dtime_problem(dtime, now) is None else None
    )
    videos = [VideoPart(filename=v.filename, title=v.title, desc=v.desc, cid=v.cid)
              for v in view.videos]  # fmt: skip
    return msgspec.structs.replace(base, **kept, videos=videos + list(new_parts))


async def append_parts(
    client: BiliClient,
    aid: int,
    parts: list[VideoPart],
    *,
    settings: Submission | None = None,
    limit: int = limits.PARTS_PER_REQUEST,
    now: Callable[[], float] = time.time,
) -> AppendResult:
    """Add the ``parts`` archive ``aid`` lacks, once: viewed first, edited only if needed.

    Idempotent, which is what makes a late part exactly-once: after a lost
    answer or a restart, calling it again finds the parts in the view and
    sends nothing. Parts are matched by server file name. More than ``limit``
    new parts raise ``too_many_parts`` before sending; the caller appends in
    :func:`uploader.limits.batches`.
    """
    view = await view_archive(client, aid=aid)
    present = set(view.filenames)
    new: list[VideoPart] = []
    for part in parts:
        if part.filename not in present:
            present.add(part.filename)
            new.append(part)
    if not new:
        return AppendResult(aid=aid, bvid=view.bvid, added=[], videos=len(view.videos))
    limits.check_part_count(len(new), limit)
    archive = edited_archive(view, new, settings, now())
    result = await edit_archive(client, aid, archive, now=now)
    return AppendResult(
        aid=aid,
        bvid=result.bvid or view.bvid,
        added=[part.filename for part in new],
        videos=len(archive.videos),
    )
