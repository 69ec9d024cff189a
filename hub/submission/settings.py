"""A room's effective submission settings, and the Submission built from them (pure).

``rooms: {"<room id>": {...}}`` overrides ``submission: {...}`` key by key; a
key a room leaves unset falls back to ``submission``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import msgspec

from hub.config import HubConfig, SubmissionSettings
from hub.core import templates
from uploader import limits
from uploader.submit import Submission, VideoPart

LIVE_ROOM_URL = "https://live.bilibili.com/"


def room_settings(config: HubConfig, room_id: str) -> SubmissionSettings:
    base = config.submission
    room = config.rooms.get(str(room_id))
    if room is None:
        return base
    keys = set(base.__struct_fields__)  # a room also holds other sections (retention)
    overrides = {k: v for k, v in msgspec.structs.asdict(room).items()
                 if v is not None and k in keys}
    return msgspec.structs.replace(base, **overrides)


def build_submission(settings: SubmissionSettings, recording: dict[str, Any],
                     parts: list[dict[str, Any]], *, now: float = 0.0) -> Submission:
    """The archive for a recording whose ``parts`` (in order) are uploaded.

    Part titles are numbered by their place among ``parts``, so a batch sent later
    (an append) keeps the numbers it would have had in one submission. A publishing
    delay becomes ``dtime`` counted from ``now``, checked against Bilibili's window
    here (:class:`uploader.errors.ArchiveError` naming it) before anything is sent.
    """
    ctx = templates.Context(
        uname=recording.get("streamer") or "", title=recording.get("title") or "",
        room_id=str(recording.get("room_id") or ""),
        area_parent=recording.get("area_parent") or "",
        area_child=recording.get("area_child") or "",
        started_at=float(recording.get("started_at") or 0),
    )
    title = templates.render(settings.title_template, ctx).strip()
    if not title:  # an empty live title must not make an unsubmittable archive
        title = f"{ctx.uname or ctx.room_id} {templates.render('${date} ${time}', ctx)}".strip()
    videos = []
    for number, part in enumerate(parts, start=1):
        part_ctx = dataclasses.replace(
            ctx, index=number, started_at=float(part.get("started_at") or ctx.started_at),
            file_name=os.path.splitext(os.path.basename(part["path"]))[0])
        videos.append(VideoPart(
            filename=part["filename"] or "", cid=int(part.get("biz_id") or 0),
            title=limits.cut(templates.render(settings.part_title_template, part_ctx),
                             limits.PART_TITLE_LIMIT) or f"P{number}"))
    tags = [templates.render(t, ctx) for t in templates.split_tags(settings.tags)]
    source = templates.render(settings.source_template, ctx)
    if settings.copyright == 2 and not source and ctx.room_id:
        source = LIVE_ROOM_URL + ctx.room_id  # a repost (转载) must name its source
    dtime = None
    if settings.publish_delay_seconds > 0:
        dtime = int(now + settings.publish_delay_seconds)
        limits.check_dtime(dtime, now)
    return Submission(
        title=limits.cut(title, limits.TITLE_LIMIT), tid=settings.tid,
        copyright=settings.copyright, tag=",".join(t for t in tags if t),
        desc=templates.render(settings.desc_template, ctx), source=source, videos=videos,
        dynamic=templates.render(settings.dynamic_template, ctx), dtime=dtime,
        no_reprint=int(settings.no_reprint), is_only_self=int(settings.is_only_self),
        up_close_reply=settings.up_close_reply, up_close_danmu=settings.up_close_danmu,
    )
