"""The chaos checker on synthetic histories: each breach it must name, and a clean run it must pass.

Every case starts from one clean history (three sources, each uploaded once,
the hub agreeing) and breaks exactly one thing, so a check that stops firing
(or fires on a clean run) fails here, not silently in a campaign.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chaos.checker import Findings, Source, check

SOURCES = [Source(f"/src/p{i}.flv", 1000 + i, f"{i:032x}") for i in range(3)]


def clean() -> dict[str, Any]:
    return {
        "sources": list(SOURCES),
        "parts": [
            {"id": i + 1, "file_path": s.path, "size": s.size, "state": "uploaded",
             "filename": f"obj{i}"}
            for i, s in enumerate(SOURCES)
        ],
        "tasks": [
            {"task_id": f"t{i}", "part_id": i + 1, "status": "completed", "error_message": None}
            for i in range(len(SOURCES))
        ],
        "uploads": [
            {"filename": f"obj{i}", "size": s.size, "md5": s.md5, "upload_id": f"u{i}"}
            for i, s in enumerate(SOURCES)
        ],
        "submissions": [{"aid": 1, "videos": [{"filename": "obj0"}, {"filename": "obj1"}]}],
        "complete_requests": [
            {"upload_id": f"u{i}", "status": 200} for i in range(len(SOURCES))
        ],
        "sessions": [{"upload_id": f"u{i}", "corrupt": None} for i in range(len(SOURCES))],
        "recordings": [[SOURCES[0].path, SOURCES[1].path]],  # archive 1 lists obj0, obj1
    }


def run(history: dict[str, Any]) -> Findings:
    return check(**history)


def only(found: Findings, category: str) -> list[str]:
    """The findings must be in ``category`` and nowhere else."""
    others = {k: v for k, v in found.counts().items() if v and k != category}
    assert not others, f"unexpected findings besides {category}: {found.render()}"
    items = getattr(found, category)
    assert items, f"expected a {category} finding: {found.render()}"
    return items


def test_a_clean_history_has_no_findings() -> None:
    found = run(clean())
    assert found.ok, found.render()
    assert found.objects == 3 and found.repeated_completion_requests == 0


def test_a_repeated_completion_of_the_same_upload_is_idempotent_not_a_duplicate() -> None:
    h = clean()
    h["complete_requests"] += [{"upload_id": "u1", "status": 200}, {"upload_id": "u1", "status": 200}]
    h["complete_requests"].append({"upload_id": "u2", "status": 503})  # failed ones do not count
    found = run(h)
    assert found.ok, found.render()
    assert found.repeated_completion_requests == 2


def test_a_part_that_never_completed_is_lost() -> None:
    h = clean()
    h["parts"][1]["state"] = "queued"
    h["uploads"].pop(1)
    (item,) = only(run(h), "lost")
    assert "p1.flv" in item and "queued" in item


def test_a_source_the_hub_never_recorded_is_lost() -> None:
    h = clean()
    h["parts"].pop(2)
    h["tasks"].pop(2)
    h["uploads"].pop(2)
    (item,) = only(run(h), "lost")
    assert "p2.flv" in item and "no part row" in item


def test_the_hub_claiming_an_object_the_simulator_lacks_is_lost() -> None:
    h = clean()
    h["uploads"].pop(2)
    (item,) = only(run(h), "lost")
    assert "obj2" in item and "no such object" in item


def test_a_second_object_with_the_same_bytes_is_a_duplicate_completion() -> None:
    h = clean()
    twin = dict(h["uploads"][0], filename="obj0-again", upload_id="u9")
    h["uploads"].append(twin)
    (item,) = only(run(h), "duplicate_completions")
    assert "p0.flv" in item and "obj0-again" in item


def test_one_object_completed_twice_is_a_duplicate_completion() -> None:
    h = clean()
    h["uploads"].append(copy.deepcopy(h["uploads"][2]))
    items = only(run(h), "duplicate_completions")
    assert any("obj2 completed 2 times" in i for i in items), items


def test_a_part_handed_to_the_hub_twice_is_a_duplicate() -> None:
    h = clean()
    h["parts"].append(dict(h["parts"][0], id=9, state="queued", filename=None))
    (item,) = only(run(h), "duplicate_completions")
    assert "p0.flv" in item and "2 part rows" in item


def test_an_object_in_two_archives_is_a_duplicate_submission() -> None:
    h = clean()
    h["submissions"].append({"aid": 2, "videos": [{"filename": "obj1"}]})
    found = run(h)
    items = found.duplicate_submissions
    assert any("obj1" in i and "2 archives" in i for i in items), found.render()
    assert any("recording 0: 2 archives" in i for i in items), found.render()


def test_a_recording_submitted_twice_is_a_duplicate_submission() -> None:
    h = clean()
    h["submissions"].append({"aid": 2, "videos": [{"filename": "obj0"}, {"filename": "obj1"}]})
    items = only(run(h), "duplicate_submissions")
    assert any("recording 0: 2 archives (aids [1, 2])" in i for i in items), items


def test_a_recording_never_submitted_is_a_lost_submission() -> None:
    h = clean()
    h["submissions"] = []
    (item,) = only(run(h), "lost_submissions")
    assert "recording 0" in item and "no archive" in item


def test_an_archive_missing_one_of_its_recordings_parts_is_a_lost_submission() -> None:
    h = clean()
    h["submissions"] = [{"aid": 1, "videos": [{"filename": "obj0"}]}]
    (item,) = only(run(h), "lost_submissions")
    assert "recording 0" in item and "obj1" in item


def test_one_archive_naming_an_object_twice_is_not_a_duplicate_submission() -> None:
    h = clean()
    h["recordings"] = []
    h["submissions"] = [{"aid": 1, "videos": [{"filename": "obj0"}, {"filename": "obj0"}]}]
    assert run(h).ok


@pytest.mark.parametrize("field,value", [("md5", "f" * 32), ("size", 999)])
def test_an_object_whose_bytes_differ_from_the_source_is_a_byte_mismatch(
    field: str, value: Any
) -> None:
    h = clean()
    h["uploads"][1][field] = value
    items = only(run(h), "byte_mismatches")
    assert any("p1.flv" in i for i in items), items


def test_an_object_matching_no_source_is_a_byte_mismatch() -> None:
    h = clean()
    h["uploads"].append({"filename": "stray", "size": 5, "md5": "e" * 32, "upload_id": "u7"})
    (item,) = only(run(h), "byte_mismatches")
    assert "stray" in item and "matches no source" in item


def test_a_corrupt_upos_session_is_a_byte_mismatch() -> None:
    h = clean()
    h["sessions"].append({"upload_id": "u8", "filename": "x", "corrupt": "part 2 sent again"})
    (item,) = only(run(h), "byte_mismatches")
    assert "u8" in item and "part 2 sent again" in item


@pytest.mark.parametrize("status", ["pending", "assigned", "uploading"])
def test_a_task_left_running_is_non_terminal(status: str) -> None:
    h = clean()
    h["tasks"].append({"task_id": "t9", "part_id": 1, "status": status})
    (item,) = only(run(h), "non_terminal")
    assert "t9" in item and status in item


def test_a_failed_task_is_a_finding_with_its_reason() -> None:
    h = clean()
    h["tasks"][0]["status"] = "failed"
    h["tasks"][0]["error_message"] = "network: gave up after 20 attempts"
    (item,) = only(run(h), "failed")
    assert "t0" in item and "gave up" in item


def test_a_part_the_campaign_never_added_is_reported() -> None:
    h = clean()
    h["parts"].append({"id": 7, "file_path": "/elsewhere.flv", "size": 1, "state": "queued",
                       "filename": None})
    (item,) = only(run(h), "lost")
    assert "/elsewhere.flv" in item


def test_a_penalised_account_must_have_been_alerted() -> None:
    h = clean()
    h["penalties"] = {"main": True}
    assert run(h).ok  # penalised, alerted, released by the heal step: nothing to find
    h["penalties"] = {"main": True, "sub": False}
    (item,) = only(run(h), "silent_penalties")
    assert "sub" in item
