"""Submitting uploaded parts as an archive (稿件): web ``add/v3`` and app ``app/add``.

Web submission authenticates with the cookies and the csrf token (``bili_jct``)
in the query; app submission with the access key, signed the way Bilibili's
Android/TV clients sign (md5 of the sorted, urlencoded query plus the app
secret). The appkey/secret pair is the BiliTV one that biliup uses for
``x/vu/app/add``; the request shape follows biliup's ``submit_by_app``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec

from uploader.client import BiliClient
from uploader.credentials import CredentialsError
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
    title: str
    tid: int = 171
    tag: str = ""
    desc: str = ""
    copyright: int = 2  # 1 original, 2 repost
    source: str = ""
    cover: str = ""
    dynamic: str = ""
    videos: list[VideoPart]


class SubmitResult(msgspec.Struct):
    aid: int
    bvid: str


def sign_params(params: dict[str, Any], secret: str = APP_SECRET) -> str:
    """``{sorted urlencoded params}&sign={md5(that + secret)}``: the query app/add wants."""
    query = urlencode(sorted((key, str(value)) for key, value in params.items()))
    digest = hashlib.md5((query + secret).encode("utf-8")).hexdigest()
    return f"{query}&sign={digest}"


def _body(submission: Submission) -> dict[str, Any]:
    if not submission.title.strip():
        raise UploadError(ErrorKind.BAD_REQUEST, "submission needs a title")
    if not submission.videos:
        raise UploadError(ErrorKind.BAD_REQUEST, "submission needs at least one video")
    if any(not video.filename for video in submission.videos):
        raise UploadError(ErrorKind.BAD_REQUEST, "every submitted video needs a filename")
    return msgspec.to_builtins(submission)


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
    body = _body(submission)
    try:
        csrf = client.credentials.csrf
    except CredentialsError as exc:
        raise UploadError(ErrorKind.AUTH, str(exc)) from None
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
    body = _body(submission)
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


ARCHIVE_PAGE_SIZE = 20
ARCHIVE_PAGES = 5  # the newest 100 archives: a lost submission is minutes old


async def find_archive(client: BiliClient, filenames: list[str]) -> SubmitResult | None:
    """The account's archive whose videos are exactly ``filenames``, if one exists.

    ``GET {member}/x/web/archives?status=is_pubing,pubed,not_pubed&pn=&ps=`` with the
    cookies -> ``{"code":0,"data":{"arc_audits":[{"Archive":{"aid","bvid",...},
    "Videos":[{"filename","cid",...}]}],"page":{"pn","ps","count"}}}`` (the creative
    centre's list, newest first). Used to learn whether a submission whose answer was
    lost went through, before submitting again.
    """
    wanted = set(filenames)
    url = client.member("x/web/archives")
    for page in range(1, ARCHIVE_PAGES + 1):
        payload = await client.call(
            "archives", "GET", url, with_cookies=True,
            params={"status": "is_pubing,pubed,not_pubed", "pn": page,
                    "ps": ARCHIVE_PAGE_SIZE, "coop": 1, "interactive": 1},
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        audits = (data or {}).get("arc_audits") or []
        if not isinstance(audits, list):
            raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on archives")
        for item in audits:
            archive = item.get("Archive") if isinstance(item, dict) else None
            videos = item.get("Videos") if isinstance(item, dict) else None
            if not isinstance(archive, dict) or not isinstance(videos, list):
                continue
            names = {v.get("filename") for v in videos if isinstance(v, dict)}
            if names == wanted:
                return msgspec.convert(archive, SubmitResult, strict=False)
        if len(audits) < ARCHIVE_PAGE_SIZE:
            return None
    return None
