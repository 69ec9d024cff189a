"""An archive body as ``add/v3``, ``app/add`` and ``edit`` check it: refused as Bilibili refuses it.

One function for the three routes, so a submission and an edit can never
disagree on what an archive is. Codes: 21103 title over 80 characters, 21104
a part title over 80, 21058 more videos added than one request may add,
21006 a ``dtime`` outside its window, 21010 a description too long; any other
malformed field -400 naming it, as the real API's message does only vaguely.
Every video must be a completed upload of the same account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uploader.sim.callers import Refusal
from uploader.sim.config import ArchiveConfig
from uploader.sim.facts import (
    BAD_REQUEST,
    DESC_LIMIT,
    TITLE_LIMIT,
    part_title_too_long,
    too_many_parts,
)

Lookup = Callable[[str], dict[str, Any] | None]  # filename -> completed upload record
_STRINGS = ("tag", "desc", "source", "cover", "dynamic")


def _bad(problem: str) -> Refusal:
    return Refusal(-400, f"{BAD_REQUEST}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(body: dict[str, Any], key: str) -> tuple[int | None, Refusal | None]:
    value = body.get(key)
    if value is None:
        return 0, None
    if isinstance(value, bool) or value in (0, 1):
        return int(value), None
    return None, _bad(f"{key} must be 0 or 1")


def check_archive(
    body: Any,
    *,
    mid: int,
    uploads: Lookup,
    config: ArchiveConfig,
    now: float,
    existing: dict[str, Any] | None = None,
) -> dict[str, Any] | Refusal:
    """The archive fields as the ledger keeps them, or the refusal (``existing``: an edit's archive)."""
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        return _bad("title is required")
    if len(title) > TITLE_LIMIT:
        return Refusal(21103)
    tid = body.get("tid")
    if not _is_int(tid) or tid <= 0:
        return _bad("tid must be a positive integer")
    if body.get("copyright") not in (1, 2):
        return _bad("copyright must be 1 or 2")
    for key in _STRINGS:
        if body.get(key) is not None and not isinstance(body.get(key), str):
            return _bad(f"{key} must be a string")
    if len(body.get("desc") or "") > DESC_LIMIT:
        return Refusal(21010)
    cover = body.get("cover") or ""
    if cover and not cover.startswith(("http://", "https://", "//")):
        return _bad("cover must be a URL from x/vu/web/cover/up")
    archive: dict[str, Any] = {"title": title, "tid": tid, "copyright": body["copyright"]}
    archive.update({key: body.get(key) or "" for key in _STRINGS})
    for key in ("no_reprint", "is_only_self", "up_close_reply", "up_close_danmu"):
        value, refusal = _flag(body, key)
        if refusal is not None:
            return refusal
        archive[key] = bool(value) if key.startswith("up_close") else value
    dtime = body.get("dtime") or None
    if dtime is not None:
        if not _is_int(dtime) or dtime < 0:
            return _bad("dtime must be unix seconds")
        unchanged = existing is not None and existing.get("dtime") == dtime
        ahead = dtime - now
        if not unchanged and not (config.dtime_min_seconds <= ahead <= config.dtime_max_seconds):
            return Refusal(21006)
    archive["dtime"] = dtime
    videos = _check_videos(body.get("videos"), mid=mid, uploads=uploads, config=config,
                           existing=existing)  # fmt: skip
    if isinstance(videos, Refusal):
        return videos
    archive["videos"] = videos
    return archive


def _check_videos(
    videos: Any, *, mid: int, uploads: Lookup, config: ArchiveConfig,
    existing: dict[str, Any] | None,
) -> list[dict[str, Any]] | Refusal:  # fmt: skip
    if not isinstance(videos, list) or not videos:
        return _bad("videos must be a non-empty list")
    had = {v["filename"] for v in existing["videos"]} if existing else set()
    added = [v for v in videos if not (isinstance(v, dict) and v.get("filename") in had)]
    if len(added) > config.max_parts:
        return Refusal(21058, too_many_parts(config.max_parts))
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, video in enumerate(videos):
        if not isinstance(video, dict) or not isinstance(video.get("filename"), str):
            return _bad(f"videos[{index}].filename is required")
        filename = video["filename"]
        if filename in seen:
            return _bad(f"videos[{index}].filename {filename!r} is listed twice")
        seen.add(filename)
        part_title = video.get("title") or ""
        if not isinstance(part_title, str):
            return _bad(f"videos[{index}].title must be a string")
        if len(part_title) > TITLE_LIMIT:
            return Refusal(21104, part_title_too_long(index + 1))
        record = uploads(filename)
        if record is None or record["mid"] != mid:
            return _bad(f"videos[{index}].filename {filename!r} is not an upload of this account")
        cid = video.get("cid") or 0
        if not _is_int(cid) or (cid and cid != record["biz_id"]):
            return _bad(f"videos[{index}].cid {cid!r} != biz_id {record['biz_id']}")
        checked.append({
            "filename": filename,
            "title": part_title,
            "desc": video.get("desc") or "",
            "cid": cid or record["biz_id"],
        })  # fmt: skip
    return checked
