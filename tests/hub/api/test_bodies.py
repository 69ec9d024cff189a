"""The agent API's bodies as the hub's report types (hub/api/bodies.py)."""

from __future__ import annotations

import msgspec
import pytest

from hub.api.bodies import (
    BodyError,
    HeartbeatBody,
    TaskStatusBody,
    decode_body,
    heartbeat_report,
    progress_report,
)
from hub.api.errors import status_of
from hub.core.reports import HeartbeatReport, ProgressReport


def test_a_heartbeat_body_becomes_a_report() -> None:
    body = decode_body(msgspec.json.encode({
        "agent_id": "a1", "status": "busy", "current_tasks": 2, "available_slots": 1,
        "memory_usage_mb": 77.6, "tasks_completed": 9}), HeartbeatBody)
    assert heartbeat_report(body) == HeartbeatReport(
        status="busy", current_tasks=2, free_slots=1, memory_mb=77, tasks_completed=9)
    # everything left out: the defaults the stream's Heartbeat has too
    assert heartbeat_report(decode_body(b"{}", HeartbeatBody)) == HeartbeatReport(
        status="online")


def test_a_task_status_body_becomes_a_report() -> None:
    body = decode_body(msgspec.json.encode({
        "task_id": "t1", "status": "failed", "uploaded_bytes": 2500, "upload_speed": 100,
        "eta_seconds": None, "error_kind": "network", "error_message": "reset",
        "attempt": 3, "total_bytes": 5000}), TaskStatusBody)
    assert progress_report(body) == ProgressReport(
        task_id="t1", uploaded_bytes=2500, speed_bps=100.0, eta_seconds=0.0, status="failed",
        error_kind="network", error_message="reset")


@pytest.mark.parametrize("field", ["uploaded_bytes", "upload_speed", "eta_seconds"])
def test_a_field_that_is_not_a_number_is_a_400_naming_it(field: str) -> None:
    raw = msgspec.json.encode({"task_id": "t1", "status": "uploading", field: "lots"})
    with pytest.raises(BodyError) as caught:
        decode_body(raw, TaskStatusBody)
    status, message = status_of(caught.value) or (0, "")
    assert status == 400 and message.startswith(f"{field}: Expected `")
    assert message.endswith("got `str`") and "lots" not in message
