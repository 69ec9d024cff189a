"""The archive's life on the hub without a mesh, on a fake clock: operations after the
submission (batches of a long recording, late parts, a collection), the 21058 split,
review polling rules, the rejection alert, the archive fields of a submission, covers,
and the settings that carry them."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bupmesh.config import ConfigError
from hub.alerts.rules import AlertEvaluator, AlertRules, RejectedArchive, Snapshot
from hub.config import HubConfig, validate
from hub.submission import machine as m
from hub.submission import review_rules as rules
from hub.submission.covers import CoverError, cover_for, live_cover_path
from hub.submission.manager import carrying
from hub.submission.settings import build_submission, room_settings
from protocol.grpc_options import MAX_SUBMIT_COVER
from uploader.errors import ArchiveError

TIMING = m.Timing(settle_seconds=10, unknown_wait_seconds=30, retry_seconds=60,
                  exclude_seconds=3600)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def rec(**kw: object) -> dict:
    base = {"id": 1, "submit_state": m.WAITING, "submit_requested": 0, "submit_attempt": 0,
            "ended_at": 1000.0, "updated_at": 1000.0, "submit_not_before": 0,
            "submit_sent_at": None, "submit_ip": "", "submit_excluded_ips": {},
            "submit_op": "", "submit_parts": [], "submit_first_at": None, "submit_batch": 0,
            "season_state": "", "aid": None, "bvid": None}
    return {**base, **kw}


def parts(count: int, *, archived: int = 0, uploaded: int | None = None) -> list[dict]:
    up = count if uploaded is None else uploaded
    return [{"part_id": 100 + n, "upload_state": "uploaded" if n < up else "uploading",
             "filename": f"n{n}" if n < up else None, "archived": archived}
            for n in range(count)]


# -- operations -----------------------------------------------------------------------------

def test_a_long_recording_is_added_in_one_batch_and_appended_in_the_next() -> None:
    r = rec(submit_state=m.QUEUED, ended_at=40.0, updated_at=40.0)
    ps = parts(250)
    op, ids = m.next_operation(r, ps, parts_per_request=100)
    assert op == m.ADD and ids == [100 + n for n in range(100)]
    r.update(m.sending(r, "s1", "a", "ip", 50.0, op, ids))
    assert (r["submit_op"], r["submit_first_at"]) == (m.ADD, 50.0)
    r.update(m.result(r, True, 7, "BV7", "", "", 60.0, TIMING))
    assert (r["submit_state"], r["aid"], r["submit_parts"]) == (m.SUBMITTED, 7, [])
    for p in ps[:100]:
        p["archived"] = 1
    r["updated_at"] = 60.0
    assert m.work_left(r, ps, 65.0, TIMING) == ""  # settling after the write
    assert m.work_left(r, ps, 70.0, TIMING) == m.APPEND
    r.update(m.follow_up(r, m.APPEND, 70.0))
    assert r["submit_state"] == m.QUEUED
    op, ids = m.next_operation(r, ps, parts_per_request=100)
    assert op == m.APPEND and ids == [200 + n for n in range(100)]
    r.update(m.sending(r, "s2", "a", "ip", 71.0, op, ids))
    assert r["submit_first_at"] == 50.0  # the add's first attempt stays the lookup's "since"
    r.update(m.result(r, True, 7, "", "", "", 72.0, TIMING))
    assert (r["aid"], r["bvid"]) == (7, "BV7")  # an append keeps what the add learned


def test_a_retried_add_carries_the_same_parts_whatever_arrived_since() -> None:
    r = rec(submit_state=m.QUEUED)
    first = parts(2)
    op, ids = m.next_operation(r, first, parts_per_request=100)
    r.update(m.sending(r, "s1", "a", "ip", 10.0, op, ids))
    r.update(m.lost("hub restarted", 11.0, TIMING, sent_at=10.0))
    r.update({"submit_state": m.QUEUED})
    later = parts(3)  # a late part uploaded meanwhile
    assert m.next_operation(r, later, parts_per_request=100) == (m.ADD, [100, 101])
    r.update(m.sending(r, "s2", "a", "ip", 200.0, m.ADD, [100, 101]))
    assert r["submit_first_at"] == 10.0


def test_an_add_takes_only_uploaded_parts_and_appends_skip_kept_out_ones() -> None:
    r = rec(submit_state=m.QUEUED)
    assert m.next_operation(r, parts(3, uploaded=2), parts_per_request=100) == \
        (m.ADD, [100, 101])
    out = parts(3)
    out[1]["archived"] = -1  # arrived while the add was queued, with appends off
    assert m.next_operation(r, out, parts_per_request=100) == (m.ADD, [100, 102])
    done = rec(submit_state=m.SUBMITTED, aid=7)
    kept_out = parts(2, archived=1) + [{"part_id": 9, "upload_state": "uploaded",
                                        "filename": "late", "archived": -1}]
    assert m.work_left(done, kept_out, 5000, TIMING) == ""
    assert m.next_operation(done, kept_out, parts_per_request=100) is None


def test_late_parts_wait_until_uploaded_and_settled() -> None:
    done = rec(submit_state=m.SUBMITTED, aid=7, updated_at=1000.0)
    ps = parts(2, archived=1) + [{"part_id": 9, "upload_state": "uploading", "filename": None,
                                  "archived": 0}]
    assert m.work_left(done, ps, 5000, TIMING) == ""
    ps[-1].update(upload_state="uploaded", filename="late")
    assert m.work_left(done, ps, 1005, TIMING) == ""
    assert m.work_left(done, ps, 1010, TIMING) == m.APPEND
    assert m.work_left({**done, "submit_state": m.QUEUED}, ps, 1010, TIMING) == ""
    assert m.follow_up(done, "", 1010) is None


def test_too_many_parts_halves_the_batch_and_tries_again() -> None:
    r = rec(submit_state=m.QUEUED)
    ps = parts(8)
    op, ids = m.next_operation(r, ps, parts_per_request=8)
    r.update(m.sending(r, "s1", "a", "ip", 10.0, op, ids))
    r.update(m.result(r, False, 0, "", "bad_request", "code 21058", 11.0, TIMING,
                      problem=m.TOO_MANY_PARTS))
    assert (r["submit_state"], r["submit_batch"], r["submit_parts"]) == (m.QUEUED, 4, [])
    assert m.next_operation(r, ps, parts_per_request=8) == (m.ADD, [100, 101, 102, 103])
    one = rec(submit_state=m.SUBMITTING, submit_op=m.ADD, submit_parts=[100])
    assert m.result(one, False, 0, "", "bad_request", "21058", 1.0, TIMING,
                    problem=m.TOO_MANY_PARTS)["submit_state"] == m.FAILED


@pytest.mark.parametrize("problem", ["title_too_long", "part_title_too_long",
                                     "dtime_out_of_range"])
def test_other_refusals_stop_with_the_message(problem: str) -> None:
    r = rec(submit_state=m.SUBMITTING, submit_op=m.ADD, submit_parts=[1, 2])
    update = m.result(r, False, 0, "", "bad_request", "code 21006: 定时发布时间不对", 1.0,
                      TIMING, problem=problem)
    assert update["submit_state"] == m.FAILED and "21006" in update["submit_error"]


def test_a_collection_is_joined_after_the_parts_and_a_missing_one_keeps_the_archive() -> None:
    done = rec(submit_state=m.SUBMITTED, aid=7, bvid="BV7", season_state=m.SEASON_PENDING)
    ps = parts(2, archived=1)
    assert m.work_left(done, ps, 5000, TIMING) == m.SEASON
    assert m.next_operation(done, ps, parts_per_request=100) == (m.SEASON, [])
    r = {**done, **m.follow_up(done, m.SEASON, 5000)}
    r.update(m.sending(r, "s", "a", "ip", 5000, m.SEASON, []))
    failed = m.result(r, False, 0, "", "bad_request", "season_not_found", 5001, TIMING,
                      problem="season_not_found")
    assert (failed["submit_state"], failed["season_state"]) == (m.SUBMITTED, m.SEASON_FAILED)
    assert "season_not_found" in failed["season_error"]
    risky = m.result(r, False, 0, "", "risk_control", "20111", 5001, TIMING)
    assert risky["submit_state"] == m.QUEUED
    joined = m.result(r, True, 7, "", "", "", 5001, TIMING)
    assert (joined["submit_state"], joined["season_state"], joined["bvid"]) == \
        (m.SUBMITTED, m.SEASON_ADDED, "BV7")
    # An admin's submit request on it tries the collection again; on a plain one it is moot.
    again = m.requested({**r, **failed})
    assert again == {"season_state": m.SEASON_PENDING, "season_error": ""}
    assert m.requested({**r, **joined}) == {}


def test_carrying_keeps_part_numbers_of_the_whole_recording() -> None:
    rec_row = {"streamer": "u", "title": "t", "room_id": "1", "started_at": 0}
    ps = [{"part_id": 10 + n, "path": f"/r/{n}.flv", "filename": f"n{n}", "biz_id": n}
          for n in range(5)]
    sub = build_submission(HubConfig().submission, rec_row, ps)
    late = carrying(sub, ps, [13, 14])
    assert [(v.filename, v.title) for v in late.videos] == [("n3", "P4"), ("n4", "P5")]


# -- submission fields ---------------------------------------------------------------------

def hub_config(**data: object) -> HubConfig:
    base = {"psk": "p", "admin_token": "a", "insecure": True,
            "grpc_listen": "127.0.0.1:1", "http_listen": "127.0.0.1:2"}
    return validate(msgspec.convert({**base, **data}, HubConfig))



def test_build_submission_carries_the_archive_fields_and_a_checked_dtime() -> None:
    settings = hub_config(submission={
        "dynamic_template": "${uname} 的录播", "publish_delay_seconds": 4 * 3600,
        "no_reprint": True, "is_only_self": True, "up_close_reply": True,
        "up_close_danmu": True, "part_title_template": "${title}" * 50}).submission
    rec_row = {"streamer": "主播", "title": "标题", "room_id": "1", "started_at": 0}
    ps = [{"part_id": 1, "path": "/r/a.flv", "filename": "n1", "biz_id": 1}]
    sub = build_submission(settings, rec_row, ps, now=1_000_000.0)
    assert sub.dtime == 1_000_000 + 4 * 3600
    assert (sub.dynamic, sub.no_reprint, sub.is_only_self) == ("主播 的录播", 1, 1)
    assert sub.up_close_reply and sub.up_close_danmu
    assert len(sub.videos[0].title) == 80
    too_soon = msgspec.structs.replace(settings, publish_delay_seconds=3600)
    with pytest.raises(ArchiveError) as refused:
        build_submission(too_soon, rec_row, ps, now=1_000_000.0)
    assert refused.value.code == 21006 and "1.0 hours" in str(refused.value)
    assert build_submission(HubConfig().submission, rec_row, ps).dtime is None


def test_archive_settings_per_room_fall_back_to_the_global_ones(tmp_path: Path) -> None:
    cover = tmp_path / "c.png"
    cover.write_bytes(PNG)
    config = hub_config(submission={"season_id": 5, "cover": str(cover)},
                        rooms={"7": {"season_id": 0, "cover": "", "no_reprint": True},
                               "8": {"section_id": 9}})
    seven, eight = room_settings(config, "7"), room_settings(config, "8")
    assert (seven.season_id, seven.cover, seven.no_reprint) == (0, "", True)
    assert (eight.season_id, eight.section_id, eight.cover) == (5, 9, str(cover))
    assert (eight.append_late_parts, eight.parts_per_request) == (True, 100)  # the defaults


@pytest.mark.parametrize(("data", "message"), [
    ({"submission": {"publish_delay_seconds": 3600}}, "submission.publish_delay_seconds"),
    ({"rooms": {"1": {"publish_delay_seconds": 7200}}}, "rooms.1.publish_delay_seconds"),
    ({"submission": {"publish_delay_seconds": 16 * 86400}}, "publish_delay_seconds"),
    ({"submission": {"section_id": 3}}, "submission.section_id: needs a season_id"),
    ({"rooms": {"1": {"section_id": 3}}}, "rooms.1.section_id: needs a season_id"),
    ({"submission": {"cover": "/no/such/cover.jpg"}}, "submission.cover: cannot read"),
    ({"submission": {"parts_per_request": 101}}, "parts_per_request"),
    ({"submission": {"dynamic_template": "${nope}"}}, "submission.dynamic_template"),
])
def test_bad_archive_settings_stop_startup_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises((ConfigError, msgspec.ValidationError)) as err:
        hub_config(**data)
    assert message in str(err.value)


def test_a_cover_file_must_be_a_small_image(tmp_path: Path) -> None:
    text = tmp_path / "c.jpg"
    text.write_text("<html>not an image</html>")
    with pytest.raises(ConfigError, match="rooms.3.cover: .* is not a PNG"):
        hub_config(rooms={"3": {"cover": str(text)}})
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\0" * MAX_SUBMIT_COVER)
    with pytest.raises(ConfigError, match="save it as a JPEG"):
        hub_config(submission={"cover": str(big)})
    assert hub_config(submission={"cover": "live"}).submission.cover == "live"


def test_covers_from_a_file_the_recorders_or_none(tmp_path: Path) -> None:
    video = tmp_path / "录制-1-001.flv"
    video.write_bytes(b"flv")
    ps = [{"path": str(video)}]
    assert cover_for("", {}, ps) is None
    assert cover_for("live", {"id": 1}, ps) is None  # the recorder saved none
    (tmp_path / "录制-1-001.cover.jpg").write_bytes(b"\xff\xd8\xff" + b"j" * 10)
    assert live_cover_path({}, ps) == tmp_path / "录制-1-001.cover.jpg"
    assert cover_for("live", {"id": 1}, ps).startswith(b"\xff\xd8\xff")
    blrec = tmp_path / "blrec-cover.png"
    blrec.write_bytes(PNG)
    assert cover_for("live", {"id": 1, "live_cover": str(blrec)}, ps) == PNG
    broken = tmp_path / "broken.png"
    broken.write_text("no")
    assert cover_for("live", {"id": 1, "live_cover": str(broken)}, ps) is None  # logged only
    with pytest.raises(CoverError, match="not a PNG"):
        cover_for(str(broken), {"id": 1}, ps)
    with pytest.raises(CoverError, match="no/such"):
        cover_for(str(tmp_path / "no/such.png"), {"id": 1}, ps)


# -- review --------------------------------------------------------------------------------

def submitted(n: int, **kw: object) -> dict:
    return rec(id=n, submit_state=m.SUBMITTED, aid=1000 + n, **kw)


def test_review_polls_pending_and_rejected_archives_longest_waiting_first() -> None:
    recs = [submitted(1), submitted(2), submitted(3), submitted(4),
            rec(id=5, submit_state=m.QUEUED, aid=1005), rec(id=6)]
    rows = {1: {"review": "pending", "next_check_at": 50.0},
            2: {"review": "approved", "next_check_at": 0.0},
            3: {"review": "rejected", "next_check_at": 10.0},
            4: {"review": "pending", "next_check_at": 500.0}}
    assert [r["id"] for r in rules.due(recs, rows, 100.0, limit=10)] == [3, 1]
    assert [r["id"] for r in rules.due(recs, rows, 100.0, limit=1)] == [3]
    assert [r["id"] for r in rules.due(recs, {}, 0.0, limit=10)] == [1, 2, 3, 4]  # never read


def test_review_answers_move_changed_at_only_on_a_new_verdict() -> None:
    row = rules.under_review(7, now=100.0, interval=60.0)
    assert (row["review"], row["next_check_at"], row["reset_at"]) == ("pending", 160.0, 100.0)
    row.update(rules.asked(row, 7, 160.0, 60.0))
    assert row["next_check_at"] == 220.0 and row["review"] == "pending"
    same = rules.answered(row, 7, "pending", -30, "审核中", "", 161.0, 60.0)
    assert same["changed_at"] == 100.0 and same["checked_at"] == 161.0
    row.update(same)
    rejected = rules.answered(row, 7, "rejected", -2, "已退回", "画面违规", 300.0, 60.0)
    assert (rejected["changed_at"], rejected["reason"]) == (300.0, "画面违规")
    approved = rules.answered(row, 7, "approved", 0, "", "ignored", 300.0, 60.0)
    assert approved["reason"] == ""
    assert rules.asked(None, 7, 5.0, 60.0)["review"] == "pending"


def test_an_answer_asked_before_an_edit_is_stale() -> None:
    row = rules.under_review(7, now=100.0, interval=60.0)
    assert rules.stale(row, asked_at=99.0) and rules.stale(row, asked_at=100.0)
    assert not rules.stale(row, asked_at=101.0) and not rules.stale(None, 1.0)


def test_a_rejected_archive_raises_one_alert_naming_it_until_it_clears() -> None:
    ev = AlertEvaluator(AlertRules())
    bad = RejectedArchive(recording_id=12, aid=345, bvid="BV1xx", title="今晚的录播",
                          room_id="7", reason="画面违规")
    [firing] = ev.evaluate(Snapshot(rejected=(bad,)), now=10.0)
    assert (firing.key, firing.state, firing.kind) == ("archive_rejected:12", "firing",
                                                       "archive_rejected")
    for words in ("recording 12", "今晚的录播", "BV1xx", "画面违规"):
        assert words in firing.summary
    assert firing.details["aid"] == 345
    assert ev.evaluate(Snapshot(rejected=(bad,)), now=20.0) == []
    [resolved] = ev.evaluate(Snapshot(), now=30.0)
    assert resolved.state == "resolved" and resolved.key == "archive_rejected:12"
