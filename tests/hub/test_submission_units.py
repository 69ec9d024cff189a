"""Submission without a mesh: templates, settings per room, the state machine on a fake
clock, and the agent's executor against a fake member API."""

from __future__ import annotations

import time

import msgspec
import pytest

from bupmesh.config import ConfigError
from hub.config import HubConfig, validate
from hub.core import templates
from hub.submission import machine as m
from hub.submission.settings import build_submission, room_settings

START = time.mktime((2026, 11, 29, 20, 5, 9, 0, 0, -1))
TIMING = m.Timing(settle_seconds=10, unknown_wait_seconds=30, retry_seconds=60,
                  exclude_seconds=3600)


def ctx(**kw: object) -> templates.Context:
    base = dict(uname="主播", title="今晚", room_id="23058", area_parent="网游",
                area_child="英雄联盟", started_at=START, index=2, file_name="f")
    return templates.Context(**{**base, **kw})


def test_templates_render_every_placeholder() -> None:
    text = ("${uname}|${title}|${roomId}|${areaName}|${areaParent}|${index}|${fileName}|"
            "${yyyy}-${yy}-${MM}-${dd} ${HH}:${mm}:${ss}|${date} ${time}|$$5")
    assert templates.render(text, ctx()) == (
        "主播|今晚|23058|英雄联盟|网游|2|f|2026-26-11-29 20:05:09|2026-11-29 20:05|$5")
    assert templates.render("${areaName}", ctx(area_child="")) == "网游"


@pytest.mark.parametrize(("template", "message"), [
    ("${nope}", "unknown placeholder"), ("price $5", "lone"), ("${title", "lone")])
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(templates.TemplateError, match=message):
        templates.check(template, "submission.title_template")


def test_bad_template_is_a_config_error_naming_the_setting() -> None:
    config = msgspec.convert({"psk": "p", "admin_token": "a", "insecure": True,
                              "rooms": {"1": {"title_template": "${streamer}"}}}, HubConfig)
    with pytest.raises(ConfigError, match=r"rooms\.1\.title_template.*\$\{streamer\}"):
        validate(config)


def config_with_rooms() -> HubConfig:
    return msgspec.convert({
        "submission": {"title_template": "【${uname}】${title}", "tags": "录播,${uname}",
                       "tid": 171, "auto_submit": False, "desc_template": "room ${roomId}"},
        "rooms": {"7": {"auto_submit": True, "tid": 27, "part_title_template": "${HH}${mm} P${index}"}},
    }, HubConfig)


def test_room_settings_override_key_by_key() -> None:
    config = config_with_rooms()
    room = room_settings(config, "7")
    assert (room.auto_submit, room.tid, room.title_template) == (True, 27, "【${uname}】${title}")
    assert room_settings(config, "8") is config.submission


def test_build_submission_orders_parts_and_renders() -> None:
    rec = {"streamer": "主播", "title": "今晚", "room_id": "7", "area_parent": "",
           "area_child": "", "started_at": START}
    parts = [{"path": "/r/a.flv", "filename": "n1", "biz_id": 11, "started_at": START},
             {"path": "/r/b.flv", "filename": "n2", "biz_id": 12, "started_at": START + 3600}]
    sub = build_submission(room_settings(config_with_rooms(), "7"), rec, parts)
    assert sub.title == "【主播】今晚" and sub.tid == 27 and sub.tag == "录播,主播"
    assert sub.desc == "room 7"
    assert sub.copyright == 2 and sub.source == "https://live.bilibili.com/7"  # reposts name one
    assert [(v.filename, v.cid, v.title) for v in sub.videos] == [
        ("n1", 11, "2005 P1"), ("n2", 12, "2105 P2")]
    long = build_submission(room_settings(config_with_rooms(), "7"),
                            {**rec, "title": "x" * 200}, parts)
    assert len(long.title) == 80
    empty = build_submission(room_settings(config_with_rooms(), "7"),
                             {**rec, "title": "", "streamer": ""}, parts)
    assert empty.title.startswith("【】")


# -- state machine ------------------------------------------------------------------------

def rec(**kw: object) -> dict:
    base = {"submit_state": m.WAITING, "submit_requested": 0, "submit_attempt": 0,
            "ended_at": 1000.0, "updated_at": 1000.0, "submit_not_before": 0,
            "submit_sent_at": None, "submit_ip": "", "submit_excluded_ips": {}}
    return {**base, **kw}


UPLOADED = [{"upload_state": "uploaded", "filename": "a"}, {"upload_state": "uploaded",
                                                            "filename": "b"}]


def test_readiness_reasons() -> None:
    assert m.readiness(rec(), [], 2000, TIMING) == "no parts yet"
    assert m.readiness(rec(ended_at=None), UPLOADED, 2000, TIMING) == "live session not ended"
    assert "still uploading" in m.readiness(
        rec(), [UPLOADED[0], {"upload_state": "uploading", "filename": None}], 2000, TIMING)
    assert "failed" in m.readiness(rec(), [{"upload_state": "failed"}], 2000, TIMING)
    assert m.readiness(rec(), UPLOADED, 1005, TIMING) == "settling"
    assert m.readiness(rec(), UPLOADED, 1010, TIMING) == ""


def test_settling_counts_from_the_hub_clock_not_the_recorders() -> None:
    """A recorder ten hours ahead ends its session "at" now + 10 h; the hub recorded the
    end (``updated_at``) now: the recording settles seconds later, not ten hours later."""
    ahead = rec(ended_at=1000.0 + 10 * 3600, updated_at=1000.0)
    assert m.readiness(ahead, UPLOADED, 1005, TIMING) == "settling"
    assert m.readiness(ahead, UPLOADED, 1010, TIMING) == ""


def test_queued_only_when_ready_and_auto_or_asked() -> None:
    assert m.decide(rec(), ready=False, auto_submit=True, now=2000, timing=TIMING) is None
    assert m.decide(rec(), ready=True, auto_submit=False, now=2000, timing=TIMING) is None
    assert m.decide(rec(), True, True, 2000, TIMING)["submit_state"] == m.QUEUED
    assert m.decide(rec(submit_requested=1), True, False, 2000, TIMING)["submit_state"] == m.QUEUED


def test_attempts_count_up_and_success_is_final() -> None:
    r = rec(submit_state=m.QUEUED)
    r.update(m.sending(r, "sub-1", "a1", "10.0.0.1", now=100))
    assert (r["submit_state"], r["submit_attempt"], r["submit_sent_at"]) == (m.SUBMITTING, 1, 100)
    r.update(m.result(r, True, 7, "BV7", "", "", now=101, timing=TIMING))
    assert (r["submit_state"], r["aid"], r["bvid"]) == (m.SUBMITTED, 7, "BV7")
    assert m.decide(r, True, True, 10_000, TIMING) is None


def test_risk_control_excludes_the_ip_and_retries_later() -> None:
    r = rec(submit_state=m.QUEUED)
    r.update(m.sending(r, "sub-1", "a1", "10.0.0.1", now=100))
    r.update(m.result(r, False, 0, "", "risk_control", "code 21540", now=101, timing=TIMING))
    assert r["submit_state"] == m.QUEUED and r["submit_not_before"] == 161
    assert r["submit_excluded_ips"] == {"10.0.0.1": 101 + 3600}
    r.update(m.sending(r, "sub-2", "a2", "10.0.0.2", now=161))
    assert r["submit_attempt"] == 2


def test_account_refusals_queue_again_for_when_the_account_may_submit() -> None:
    r = rec(submit_state=m.QUEUED)
    r.update(m.sending(r, "sub-1", "a1", "10.0.0.1", now=100))
    r.update(m.result(r, False, 0, "", "account_throttle", "code 21566: 投稿过于频繁",
                      now=101, timing=TIMING, account_until=143.0))
    # no archive was made: queued (not unknown), for the account's wait, any IP
    assert (r["submit_state"], r["submit_not_before"]) == (m.QUEUED, 143.0)
    assert r["submit_excluded_ips"] == {} and "21566" in r["submit_error"]
    r.update(m.sending(r, "sub-2", "a1", "10.0.0.1", now=143))
    assert r["submit_attempt"] == 2  # the agent looks for the archive first, as always
    r.update(m.result(r, False, 0, "", "account_penalty", "code 21515", now=144,
                      timing=TIMING))
    assert r["submit_state"] == m.QUEUED  # held by the account ledger, never failed


def test_lost_answers_wait_then_requeue_and_timeouts_count_as_lost() -> None:
    r = rec(submit_state=m.QUEUED)
    r.update(m.sending(r, "sub-1", "a1", "ip", now=100))
    assert m.decide(r, True, True, 100 + m.SUBMIT_TIMEOUT, TIMING) is None
    r.update(m.decide(r, True, True, 101 + m.SUBMIT_TIMEOUT, TIMING))
    assert r["submit_state"] == m.UNKNOWN
    wake = r["submit_not_before"]
    assert m.decide(r, True, True, wake - 1, TIMING) is None
    r.update(m.decide(r, True, True, wake, TIMING))
    assert r["submit_state"] == m.QUEUED
    r.update(m.result({**r, **m.sending(r, "s2", "a1", "ip", wake)}, False, 0, "", "network",
                      "reset", wake + 1, TIMING))
    assert r["submit_state"] == m.UNKNOWN  # a network failure may have reached Bilibili


def test_a_lost_submit_is_not_retried_before_the_agents_deadline_has_passed() -> None:
    """The agent sees a Submit through whatever its stream does, up to the deadline the
    hub gave it: a retry before then could look for the archive, find none while the
    first attempt is still in flight, and submit a second time."""
    r = rec(submit_state=m.QUEUED)
    r.update(m.sending(r, "sub-1", "a1", "ip", now=100))
    r.update(m.lost("agent a1 lost", 101, TIMING, sent_at=r["submit_sent_at"]))
    assert r["submit_not_before"] == 100 + TIMING.agent_deadline + TIMING.unknown_wait_seconds
    late = m.lost("hub restarted", 500, TIMING, sent_at=100)  # long after the deadline
    assert late["submit_not_before"] == 500 + TIMING.unknown_wait_seconds


def test_fatal_errors_fail_until_an_admin_asks_again() -> None:
    r = rec(submit_state=m.SUBMITTING, submit_attempt=1)
    r.update(m.result(r, False, 0, "", "auth", "-101", now=5, timing=TIMING))
    assert r["submit_state"] == m.FAILED and r["submit_requested"] == 0
    r.update(m.requested(r))
    assert (r["submit_state"], r["submit_requested"]) == (m.WAITING, 1)
    r.update(m.result(r, False, 0, "", "agent", "draining", now=6, timing=TIMING))
    assert r["submit_state"] == m.QUEUED


def test_recordings_cli_table_and_settings() -> None:
    import argparse

    from client.recordings import configure, format_table, settings_from_args

    parser = argparse.ArgumentParser()
    configure(parser)
    with pytest.raises(ConfigError, match="admin-token"):
        settings_from_args(parser.parse_args([]), env={})
    with pytest.raises(ConfigError, match="--hub"):
        settings_from_args(parser.parse_args(["--hub", "ftp://x"]), env={"BUPMESH_ADMIN_TOKEN": "t"})
    assert settings_from_args(parser.parse_args(["--submit", "3"]),
                              env={"BUPMESH_ADMIN_TOKEN": "t"}).submit == 3
    assert format_table([]) == "no recordings\n"
    table = format_table([{"recording_id": 1, "room_id": "7", "streamer": "u", "started_at": 0,
                           "title": "t", "state": "waiting", "waiting_for": "settling",
                           "parts": [{"index": 1, "upload_state": "uploaded", "filename": "n1",
                                      "size": 5, "path": "/r/a.flv"}]}])
    assert "#1 room 7 u" in table and "waiting (settling)" in table
    assert "P1 uploaded n1 5 B  /r/a.flv" in table
