"""Ingestion without IO: webhook parsing, path confinement, file naming, grouping."""

from __future__ import annotations

import time
from pathlib import Path, PurePath

import pytest

from hub.ingest.events import IngestError, parse_bililive_recorder, parse_blrec, parse_time
from hub.ingest.files import (
    PathRefused,
    Stability,
    describe_file,
    resolve_under,
    same_session,
)


def brec(kind: str, **data: object) -> dict:
    return {"EventType": kind, "EventTimestamp": "2021-05-14T17:52:44.4960899+08:00",
            "EventId": "e3e1c9ec", "EventData": {"SessionId": "s-1", "RoomId": 23058,
                                                 "Name": "3号直播间", "Title": "哔哩哔哩音悦台",
                                                 "AreaNameParent": "生活",
                                                 "AreaNameChild": "影音馆", **data}}


def test_bililive_recorder_file_closed() -> None:
    event = parse_bililive_recorder(brec(
        "FileClosed", RelativePath="23058-3号直播间/录制-23058-20210514-175244-496-x.flv",
        FileSize=92623, FileOpenTime="2021-05-14T17:52:44.4960899+08:00",
        FileCloseTime="2021-05-14T17:52:50.5+08:00"))
    assert event.kind == "file_closed" and event.source == "bililive-recorder"
    assert event.session_key == "bililive-recorder:s-1" and event.room_id == "23058"
    assert event.size == 92623 and event.path.endswith("x.flv")
    assert event.info == {"streamer": "3号直播间", "title": "哔哩哔哩音悦台",
                          "area_parent": "生活", "area_child": "影音馆"}
    assert event.file_started == pytest.approx(1620985964.496089, abs=1e-5)
    assert event.file_ended - event.file_started == pytest.approx(6.0039, abs=1e-3)


def test_bililive_recorder_session_events_and_unknown_types() -> None:
    assert parse_bililive_recorder(brec("SessionStarted")).kind == "session_start"
    assert parse_bililive_recorder(brec("SessionEnded")).kind == "session_end"
    assert parse_bililive_recorder(brec("FileOpening")).kind == "file_open"
    assert parse_bililive_recorder(brec("StreamFoo")).kind == "ignored"


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    ({"EventType": "FileClosed", "EventTimestamp": "2021-05-14T17:52:44+08:00"}, "EventId"),
    ({**brec("FileClosed"), "EventTimestamp": "yesterday"}, "EventTimestamp"),
    ({**brec("FileClosed"), "EventData": None}, "EventData"),
    (brec("FileClosed", RoomId="abc", RelativePath="a.flv", FileSize=1), "RoomId"),
    (brec("FileClosed", FileSize=1), "RelativePath"),
    (brec("FileClosed", RelativePath="a.flv", FileSize=-1), "FileSize"),
    (brec("FileClosed", RelativePath="a.flv", FileSize="12"), "FileSize"),
    (brec("SessionStarted", SessionId=""), "SessionId"),
])
def test_bililive_recorder_bad_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(IngestError, match=field):
        parse_bililive_recorder(body)


def test_blrec_events() -> None:
    room_info = {"room_id": 1, "title": "t", "area_name": "a", "parent_area_name": "p",
                 "live_start_time": 1700000000}
    began = parse_blrec({"id": "x1", "date": "2023-01-01T00:00:00+08:00", "type": "LiveBeganEvent",
                         "data": {"user_info": {"name": "u"}, "room_info": room_info}})
    assert began.kind == "session_start" and began.room_id == "1" and began.session_key is None
    assert began.info["streamer"] == "u" and began.file_started == 1700000000
    done = parse_blrec({"id": "x2", "date": "2023-01-01T00:10:00+08:00",
                        "type": "VideoFileCompletedEvent", "data": {"room_id": 1, "path": "/r/a.flv"}})
    assert done.kind == "file_closed" and done.path == "/r/a.flv" and done.size is None
    assert parse_blrec({"id": "x3", "date": "2023-01-01T00:10:00Z", "type": "SpaceNoEnoughEvent",
                        "data": {}}).kind == "ignored"
    with pytest.raises(IngestError, match="data.path"):
        parse_blrec({"id": "x4", "date": "2023-01-01T00:10:00Z",
                     "type": "VideoFileCompletedEvent", "data": {"room_id": 1}})
    with pytest.raises(IngestError, match="room_info"):
        parse_blrec({"id": "x5", "date": "2023-01-01T00:10:00Z", "type": "LiveEndedEvent",
                     "data": {}})


def test_parse_time_forms() -> None:
    assert parse_time(12.5, "t") == 12.5
    assert parse_time("1970-01-01T00:00:10Z", "t") == 10
    assert parse_time("1970-01-01T08:00:10.1234567+08:00", "t") == pytest.approx(10.123456)


def test_resolve_under_confines_paths(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "a.flv").write_bytes(b"x")
    assert resolve_under(str(tmp_path / "rec"), "a.flv", setting="s") == tmp_path / "rec" / "a.flv"
    assert resolve_under(str(tmp_path / "rec"), str(tmp_path / "rec" / "b.mp4"), setting="s")
    for bad in ("../a.flv", "/etc/passwd.flv", "sub/../../a.flv"):
        with pytest.raises(PathRefused, match="outside"):
            resolve_under(str(tmp_path / "rec"), bad, setting="s")
    (tmp_path / "rec" / "link.flv").symlink_to(tmp_path / "outside.flv")
    with pytest.raises(PathRefused, match="outside"):
        resolve_under(str(tmp_path / "rec"), "link.flv", setting="s")
    with pytest.raises(PathRefused, match="not a video"):
        resolve_under(str(tmp_path / "rec"), "notes.txt", setting="s")
    with pytest.raises(PathRefused, match="not configured"):
        resolve_under(None, "a.flv", setting="ingest.x")


def test_describe_file_names_and_folders() -> None:
    facts = describe_file(PurePath("/w/23058-主播/录制-23058-20210514-175244-496-标题 a.flv"))
    assert (facts.room_id, facts.streamer, facts.title) == ("23058", "主播", "标题 a")
    assert facts.started_at == time.mktime((2021, 5, 14, 17, 52, 44, 0, 0, -1))
    blrec = describe_file(PurePath("/w/1 - u/blive_1_2023-02-03-040506.flv"))
    assert (blrec.room_id, blrec.streamer) == ("1", "u")
    assert blrec.started_at == time.mktime((2023, 2, 3, 4, 5, 6, 0, 0, -1))
    by_dir = describe_file(PurePath("/w/777/anything.mp4"))
    assert (by_dir.room_id, by_dir.started_at) == ("777", None)
    assert describe_file(PurePath("/w/misc/anything.mp4")) is None


def test_stability_needs_a_quiet_period() -> None:
    s = Stability(quiet=5)
    assert s.observe({"a": (10, 100.0)}, now=101) == []  # first sight
    assert s.observe({"a": (20, 102.0)}, now=103) == []  # grew
    assert s.observe({"a": (20, 102.0)}, now=107) == []  # quiet 4 s only
    assert s.observe({"a": (20, 102.0)}, now=108) == ["a"]
    assert s.observe({"a": (20, 102.0), "e": (0, 50.0)}, now=200) == ["a"]  # empty never
    assert s.observe({"e": (0, 50.0)}, now=300) == []  # gone files are forgotten


def test_same_session_grouping() -> None:
    assert same_session(1000.0, 1000.5, gap=60)  # next segment opens as the last closes
    assert same_session(1000.0, 900.0, gap=60)  # started earlier (long segment) still joins
    assert not same_session(1000.0, 1061.0, gap=60)  # a pause longer than the gap
    assert not same_session(None, 1000.0, gap=60)  # nothing open


def test_blrec_file_event_is_configurable() -> None:
    body = {"id": "p1", "date": "2023-01-01T00:10:00Z",
            "type": "VideoPostprocessingCompletedEvent", "data": {"room_id": 1, "path": "/r/a.mp4"}}
    assert parse_blrec(body).kind == "ignored"
    remuxed = parse_blrec(body, "VideoPostprocessingCompletedEvent")
    assert (remuxed.kind, remuxed.path) == ("file_closed", "/r/a.mp4")
    raw = {**body, "type": "VideoFileCompletedEvent"}
    assert parse_blrec(raw, "VideoPostprocessingCompletedEvent").kind == "ignored"


def test_blrec_cover_event_carries_the_saved_cover() -> None:
    event = parse_blrec({"id": "c1", "date": "2023-01-01T00:00:00+08:00",
                         "type": "CoverImageDownloadedEvent",
                         "data": {"room_id": 7, "path": "/rec/7/cover.jpg"}})
    assert (event.kind, event.room_id, event.path) == ("cover", "7", "/rec/7/cover.jpg")
    with pytest.raises(IngestError, match="data.path"):
        parse_blrec({"id": "c2", "date": "2023-01-01T00:00:00Z",
                     "type": "CoverImageDownloadedEvent", "data": {"room_id": 7}})
