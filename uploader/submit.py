"""Submitting uploaded parts as an archive (稿件): web ``add/v3`` and app ``app/add``.

Web submission authenticates with the cookies and the csrf token (``bili_jct``)
in the query; app submission with the access key, signed the way Bilibili's
Android/TV clients sign (md5 of the sorted, urlencoded query plus the app
secret). The appkey/secret pair is the BiliTV one that biliup uses for
``x/vu/app/add``; the request shape follows biliup's ``submit_by_app``.

The body (:func:`archive_body`, shared with the archive edit) carries the
fields biliup-rs sends (``dtime``, ``no_reprint``, ``up_close_reply``,
``up_close_danmu``, ``dynamic``, ``cover``) and gobup's ``is_only_self``. What
Bilibili would refuse is refused or cut before sending (:mod:`uploader.limits`).
After the archive exists: covers in :mod:`uploader.covers`, its view, edits and
review in :mod:`uploader.archive`, collections in :mod:`uploader.seasons`, the
lost-answer lookup in :mod:`uploader.archive_list`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec

from uploader import limits
from uploader.client import BiliClient
from uploader.errors import ErrorKind, UploadError

APP_KEY = "4409e2ce8ffd12b8"  # BiliTV, as in biliup's AppKeyStore
APP_SECRET = "59b43e04ad6965f34319062b478f83dd"
APP_USER_AGENT = (
    "Mozilla/5.0 BiliDroid/7.80.0 (bbcallen@gmail.com) os/android model/MI 6 "
    "mobi_app/android build/7800300 channel/bili innerVer/7800310 osVer/13 network/2"
)


class VideoPart(msgspec.Struct, kw_only=True):
    filename: str  # server file name from the upload (UploadResult.filename)
    title: str
    desc: str = ""
    cid: int = 0  # biz_id from preupload


class Submission(msgspec.Struct, kw_only=True):
    """One archive as ``add/v3``, ``app/add`` and ``edit`` take it (the JSON body, minus ``aid``).

    ``cover`` is a URL from :func:`uploader.covers.upload_cover`. ``dtime`` is a
    scheduled publishing time in unix seconds (None: publish when approved).
    ``no_reprint`` 1 forbids reposts, ``is_only_self`` 1 makes the archive
    visible to its owner only; ``up_close_reply``/``up_close_danmu`` close
    comments and danmaku. The field names are Bilibili's.
    """

    title: str
    tid: int = 171
    tag: str = ""
    desc: str = ""
    copyright: int = 2  # 1 original, 2 repost
    source: str = ""
    cover: str = ""
    dynamic: str = ""
    dtime: int | None = None
    no_reprint: int = 0
    is_only_self: int = 0
    up_close_reply: bool = False
    up_close_danmu: bool = False
    videos: list[VideoPart]


class SubmitResult(msgspec.Struct):
    aid: int
    bvid: str


def sign_params(params: dict[str, Any], secret: str = APP_SECRET) -> str:
    """``{sorted urlencoded params}&sign={md5(that + secret)}``: the query app/add wants."""
    query = urlencode(sorted((key, str(value)) for key, value in params.items()))
    digest = hashlib.md5((query + secret).encode("utf-8")).hexdigest()
    return f"{query}&sign={digest}"


def archive_body(
    submission: Submission, now: float, *, count_parts: bool = True
) -> dict[str, Any]:
    """The JSON body for ``add/v3``, ``app/add`` or ``edit``, or a ``bad_request`` before sending.

    Titles are cut to 80 characters; a ``dtime`` outside its window and more
    than 100 parts (``count_parts``; an edit counts only the parts it adds,
    which its caller knows) raise :class:`~uploader.errors.ArchiveError`.
    """
    title = limits.cut(submission.title.strip(), limits.TITLE_LIMIT)
    if not title:
        raise UploadError(ErrorKind.BAD_REQUEST, "submission needs a title")
    if not submission.videos:
        raise UploadError(ErrorKind.BAD_REQUEST, "submission needs at least one video")
    if any(not video.filename for video in submission.videos):
        raise UploadError(ErrorKind.BAD_REQUEST, "every submitted video needs a filename")
    for key in ("no_reprint", "is_only_self"):
        if getattr(submission, key) not in (0, 1):
            raise UploadError(ErrorKind.BAD_REQUEST, f"{key} must be 0 or 1")
    if count_parts:
        limits.check_part_count(len(submission.videos))
    limits.check_dtime(submission.dtime, now)
    body = msgspec.to_builtins(submission)
    body["title"] = title
    for video in body["videos"]:
        video["title"] = limits.cut(video["title"], limits.PART_TITLE_LIMIT)
    if submission.dtime is None:
        del body["dtime"]  # absent, not null: "publish when approved"
    return body


def _result(payload: Any) -> SubmitResult:
    data = payload.get("data") if isinstance(payload, dict) else None
    try:
        return msgspec.convert(data, SubmitResult, strict=False)
    except msgspec.ValidationError:
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on submit: no aid/bvid") from None


async def submit_web(
    client: BiliClient, submission: Submission, *, now: Callable[[], float] = time.time
) -> SubmitResult:
    """``POST {member}/x/vu/web/add/v3?t={ms}&csrf={bili_jct}`` with the cookies."""
    body = archive_body(submission, now())
    csrf = client.csrf()
    url = client.member("x/vu/web/add/v3")
    payload = await client.call(
        "submit",
        "POST",
        url,
        params={"t": int(now() * 1000), "csrf": csrf},
        json=body,
        with_cookies=True,
    )
    return _result(payload)


async def submit_app(
    client: BiliClient, submission: Submission, *, now: Callable[[], float] = time.time
) -> SubmitResult:
    """``POST {member}/x/vu/app/add?access_key=..&appkey=..&ts=..&sign=..`` (no cookies)."""
    body = archive_body(submission, now())
    access_key = client.credentials.access_key
    if not access_key:
        raise UploadError(ErrorKind.AUTH, "app submission needs an access_key")
    params = {
        "access_key": access_key,
        "appkey": APP_KEY,
        "build": 7800300,
        "c_locale": "zh-Hans_CN",
        "channel": "bili",
        "disable_rcmd": 0,
        "mobi_app": "android",
        "platform": "android",
        "s_locale": "zh-Hans_CN",
        "statistics": '"appId":1,"platform":3,"version":"7.80.0","abtest":""',
        "ts": int(now()),
    }
    # The signed query is put in the URL verbatim so its bytes are the ones signed.
    url = f"{client.member('x/vu/app/add')}?{sign_params(params)}"
    payload = await client.call(
        "submit", "POST", url, json=body, headers={"User-Agent": APP_USER_AGENT}
    )
    return _result(payload)
