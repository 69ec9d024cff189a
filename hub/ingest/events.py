"""Recorder webhook bodies -> one normalised :class:`IngestEvent` (pure, no IO).

BililiveRecorder (webhook v2, its website's docs/user/webhook.md):
``{EventType, EventTimestamp, EventId, EventData: {SessionId, RoomId, ShortId,
Name, Title, AreaNameParent, AreaNameChild, RelativePath?, FileSize?,
FileOpenTime?, FileCloseTime?, ...}}`` with types ``SessionStarted``,
``FileOpening``, ``FileClosed``, ``SessionEnded``. It retries a failed delivery
up to three times with the same ``EventId``, and does not promise order.

blrec (its webapp's event model): ``{id, date, type, data}``; ``LiveBeganEvent``
/ ``LiveEndedEvent`` carry ``data.user_info.name`` and ``data.room_info{room_id,
title, area_name, parent_area_name, live_start_time}``;
``RecordingStartedEvent`` / ``RecordingFinishedEvent`` carry ``data.room_info``;
``VideoFileCreatedEvent`` / ``VideoFileCompletedEvent`` /
``VideoPostprocessingCompletedEvent`` carry ``data{room_id, path}``, and
``CoverImageDownloadedEvent`` the same for the live room's cover it saved
(kind ``cover``: ``submission.cover: live`` sends it with the archive). blrec has no session id, so its files are grouped by room (see
``hub/ingest/service.py``). Other types are accepted and ignored, as both tools
ask receivers to expect new types.

A body that cannot be understood raises :class:`IngestError` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Kind = Literal["session_start", "file_open", "file_closed", "session_end", "cover", "ignored"]

BREC = "bililive-recorder"
BLREC = "blrec"
WATCHER = "watcher"


class IngestError(ValueError):
    """The webhook body is not what the recorder sends; the message names the field."""


@dataclass(frozen=True)
class IngestEvent:
    kind: Kind
    source: str
    event_id: str
    room_id: str
    time: float  # when it happened (epoch seconds)
    session_key: str | None = None  # None: group by room (blrec, watcher)
    info: dict[str, str] = field(default_factory=dict)  # streamer, title, area_parent/child
    path: str | None = None  # as the recorder gave it (relative for BililiveRecorder)
    size: int | None = None
    file_started: float | None = None
    file_ended: float | None = None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: Any, name: str) -> float:
    """ISO 8601 (the recorders send 7 fractional digits; Python reads 6) or epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        raise IngestError(f"{name}: expected an ISO 8601 timestamp")
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise IngestError(f"{name}: not an ISO 8601 timestamp: {value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise IngestError(f"{name}: expected a JSON object")
    return value


def _text(data: dict[str, Any], key: str, name: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise IngestError(f"{name}: required")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise IngestError(f"{name}: expected a string")
    return str(value)[:512]


def _room(data: dict[str, Any], key: str, name: str) -> str:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise IngestError(f"{name}: expected a numeric room id")
    return str(int(value))


def _size(data: dict[str, Any], key: str, name: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IngestError(f"{name}: expected a non-negative integer")
    return value


_BREC_KINDS: dict[str, Kind] = {
    "SessionStarted": "session_start",
    "FileOpening": "file_open",
    "FileClosed": "file_closed",
    "SessionEnded": "session_end",
}


def parse_bililive_recorder(body: Any) -> IngestEvent:
    body = _obj(body, "body")
    event_type = _text(body, "EventType", "EventType", required=True)
    event_id = _text(body, "EventId", "EventId", required=True)
    when = parse_time(body.get("EventTimestamp"), "EventTimestamp")
    kind = _BREC_KINDS.get(event_type, "ignored")
    if kind == "ignored":
        return IngestEvent("ignored", BREC, event_id, "", when)
    data = _obj(body.get("EventData"), "EventData")
    session_id = _text(data, "SessionId", "EventData.SessionId", required=True)
    info = {
        "streamer": _text(data, "Name", "EventData.Name"),
        "title": _text(data, "Title", "EventData.Title"),
        "area_parent": _text(data, "AreaNameParent", "EventData.AreaNameParent"),
        "area_child": _text(data, "AreaNameChild", "EventData.AreaNameChild"),
    }
    event = IngestEvent(kind, BREC, event_id, _room(data, "RoomId", "EventData.RoomId"), when,
                        session_key=f"{BREC}:{session_id}", info=info)
    if kind != "file_closed":
        return event
    path = _text(data, "RelativePath", "EventData.RelativePath", required=True)
    size = _size(data, "FileSize", "EventData.FileSize")
    opened = data.get("FileOpenTime")
    closed = data.get("FileCloseTime")
    return IngestEvent(
        kind, BREC, event_id, event.room_id, when, session_key=event.session_key, info=info,
        path=path, size=size,
        file_started=parse_time(opened, "EventData.FileOpenTime") if opened else None,
        file_ended=parse_time(closed, "EventData.FileCloseTime") if closed else when,
    )


_BLREC_KINDS: dict[str, Kind] = {
    "LiveBeganEvent": "session_start",
    "RecordingStartedEvent": "session_start",
    "VideoFileCreatedEvent": "file_open",
    "VideoFileCompletedEvent": "file_closed",
    "LiveEndedEvent": "session_end",
    "RecordingFinishedEvent": "session_end",
    "CoverImageDownloadedEvent": "cover",
}


def parse_blrec(body: Any, file_event: str = "VideoFileCompletedEvent") -> IngestEvent:
    """``file_event``: the event type whose ``data.path`` is the finished file (with
    blrec's remuxing on, ``VideoPostprocessingCompletedEvent``; the other is then ignored)."""
    body = _obj(body, "body")
    event_type = _text(body, "type", "type", required=True)
    event_id = _text(body, "id", "id", required=True)
    when = parse_time(body.get("date"), "date")
    kinds = {k: v for k, v in _BLREC_KINDS.items() if v != "file_closed"}
    kinds[file_event] = "file_closed"
    kind = kinds.get(event_type, "ignored")
    if kind == "ignored":
        return IngestEvent("ignored", BLREC, event_id, "", when)
    data = _obj(body.get("data"), "data")
    if kind in ("file_open", "file_closed", "cover"):
        room = _room(data, "room_id", "data.room_id")
        path = _text(data, "path", "data.path", required=True)
        return IngestEvent(kind, BLREC, event_id, room, when, path=path,
                           file_ended=when if kind == "file_closed" else None)
    room_info = _obj(data.get("room_info"), "data.room_info")
    user_info = data.get("user_info") if isinstance(data.get("user_info"), dict) else {}
    info = {
        "streamer": _text(user_info, "name", "data.user_info.name"),
        "title": _text(room_info, "title", "data.room_info.title"),
        "area_parent": _text(room_info, "parent_area_name", "data.room_info.parent_area_name"),
        "area_child": _text(room_info, "area_name", "data.room_info.area_name"),
    }
    started = room_info.get("live_start_time")
    live_start = float(started) if isinstance(started, int | float) and started > 0 else None
    return IngestEvent(kind, BLREC, event_id, _room(room_info, "room_id", "data.room_info.room_id"),
                       when, info=info, file_started=live_start)
