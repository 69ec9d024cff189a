"""hub/retention/policy.py: every safety rule as a pure decision, on a fake clock."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from hub.config import HubConfig
from hub.retention import policy as p

ID = p.Identity(size=10, mtime_ns=5, fingerprint="1:2:10:5:6")
DAY = 86400.0


def f(part_id: int = 1, **kw: object) -> p.FileFacts:
    base = dict(part_id=part_id, path=f"/rec/room/{part_id}.flv", size=10,
                upload_state="uploaded", in_archive=True, uploaded=ID, current=ID)
    return p.FileFacts(**{**base, **kw})  # type: ignore[arg-type]


def rec(**kw: object) -> p.RecordingFacts:
    base = dict(recording_id=1, room_id="7", ended=True, submit_state="submitted", aid=100,
                review_state="approved")
    return p.RecordingFacts(**{**base, **kw})  # type: ignore[arg-type]


def rule(trigger: str, **kw: object) -> p.Rule:
    return p.Rule(trigger=trigger, **kw)  # type: ignore[arg-type]


def test_rooms_override_the_global_rule_key_by_key() -> None:
    config = msgspec.convert({
        "retention": {"trigger": "submitted", "action": "move", "move_to": "/keep",
                      "delay_days": 3},
        "rooms": {"7": {"retention": {"trigger": "uploaded", "dry_run": True}}, "8": {}},
    }, HubConfig)
    assert p.rule_for(config, "7") == p.Rule("uploaded", "move", "/keep", 3.0, True)
    assert p.rule_for(config, "8") == p.Rule("submitted", "move", "/keep", 3.0, False)
    assert p.rule_for(config, "9") == p.rule_for(config, "8")
    assert not p.rule_for(HubConfig(), "7").active  # the default: never


def test_never_does_nothing() -> None:
    assert p.blocked(rule("never"), rec(), [f()]).reason.startswith("retention is off")


@pytest.mark.parametrize("trigger", ["uploaded", "submitted", "approved"])
def test_every_part_must_reach_the_trigger(trigger: str) -> None:
    r = rule(trigger)
    assert p.blocked(r, rec(), [f(1), f(2)]) is None
    assert p.blocked(r, rec(), []).reason == "no parts yet"
    waiting = p.blocked(r, rec(), [f(1), f(2, upload_state="uploading")])
    assert waiting is not None and not waiting.refusal and "not uploaded" in waiting.reason
    live = p.blocked(r, rec(ended=False), [f(1)])
    assert live is not None and live.reason == "live session not ended"


@pytest.mark.parametrize("state", ["failed", "cancelled"])
def test_a_failed_or_cancelled_upload_never_triggers(state: str) -> None:
    for trigger in ("uploaded", "submitted", "approved"):
        block = p.blocked(rule(trigger), rec(), [f(1), f(2, upload_state=state)])
        assert block is not None and block.refusal and state in block.reason


def test_submitted_needs_the_archive_and_every_part_in_it() -> None:
    r = rule("submitted")
    assert p.blocked(r, rec(submit_state="queued", aid=None), [f()]).reason == "no archive yet"
    failed = p.blocked(r, rec(submit_state="failed", aid=None), [f()])
    assert failed is not None and failed.refusal
    assert p.blocked(r, rec(aid=None), [f()]).reason == "no archive yet"
    late = p.blocked(r, rec(), [f(1), f(2, in_archive=False)])
    assert late is not None and "not in the archive" in late.reason and not late.refusal
    # an append that failed for good, a part kept out: refusals
    stuck = p.blocked(r, rec(submit_state="failed"), [f(1), f(2, in_archive=False)])
    assert stuck is not None and stuck.refusal
    kept = p.blocked(r, rec(), [f(1), f(2, in_archive=False, kept_out=True)])
    assert kept is not None and kept.refusal and "kept out" in kept.reason
    # the archive exists and holds everything: reached, whatever the loop does next
    assert p.blocked(r, rec(submit_state="submitting"), [f(1)]) is None
    # uploaded does not care about the archive
    assert p.blocked(rule("uploaded"), rec(submit_state="failed", aid=None),
                     [f(2, in_archive=False)]) is None


def test_approved_needs_a_passed_review() -> None:
    r = rule("approved")
    for state in ("", "pending"):
        block = p.blocked(r, rec(review_state=state), [f()])
        assert block is not None and not block.refusal and "review" in block.reason
    rejected = p.blocked(r, rec(review_state="rejected", review_reason="版权"), [f()])
    assert rejected is not None and rejected.refusal and "版权" in rejected.reason
    assert p.blocked(r, rec(review_state="approved", aid=None), [f()]) is not None


def test_a_changed_file_is_kept_and_flagged() -> None:
    r = rule("uploaded")
    grown = dataclasses.replace(ID, size=11)
    touched = dataclasses.replace(ID, mtime_ns=6)
    replaced = dataclasses.replace(ID, fingerprint="1:3:10:5:6")
    for current, why in ((grown, "bytes"), (touched, "modified"), (replaced, "replaced")):
        (d,) = p.decide(r, [f(current=current)], reached_at=0, now=0)
        assert d.kind == "keep" and why in d.reason and "flagged" in d.reason
    (d,) = p.decide(r, [f(uploaded=None)], reached_at=0, now=0)
    assert d.kind == "keep"  # no record of the uploaded file: never acted on
    (d,) = p.decide(r, [f(current=None)], reached_at=0, now=0)
    assert d.kind == "gone"


def test_the_delay_counts_from_the_trigger_on_the_hub_clock() -> None:
    r = rule("submitted", delay_days=2)
    (d,) = p.decide(r, [f()], reached_at=1000.0, now=1000.0 + 2 * DAY - 1)
    assert d.kind == "wait" and d.not_before == 1000.0 + 2 * DAY
    (d,) = p.decide(r, [f()], reached_at=1000.0, now=1000.0 + 2 * DAY)
    assert (d.kind, d.action) == ("act", "delete")


def test_move_keeps_the_folder_name_and_dry_run_is_marked() -> None:
    r = rule("uploaded", action="move", move_to="/archive", dry_run=True)
    (d,) = p.decide(r, [f(3)], reached_at=0, now=0)
    assert (d.kind, d.action, d.destination, d.dry_run) == \
        ("act", "move", "/archive/room/3.flv", True)


def test_settled_files_are_left_alone() -> None:
    r = rule("uploaded")
    settled = [f(n, state=s) for n, s in enumerate(sorted(p.FINAL), start=1)]
    assert p.decide(r, settled, reached_at=0, now=0) == []


def test_fingerprints_parse_to_identities() -> None:
    assert p.parse_fingerprint("1:2:10:5:6") == ID
    assert p.parse_fingerprint("") is None and p.parse_fingerprint("a:b:c:d:e") is None
