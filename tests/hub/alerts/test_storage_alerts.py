"""The disk rules of hub/alerts/rules.py on a fake clock: the hub's data directory full
(``data_dir_full``) and a recorder directory below ``retention.min_free_gb``
(``disk_low:<dir>``), each firing once and resolving once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hub.alerts.loop import snapshot
from hub.alerts.rules import (
    AlertEvaluator,
    AlertRules,
    DiskSample,
    Snapshot,
    StorageSample,
)
from hub.config import HubConfig, IngestSettings
from hub.core.errors import StorageFull
from hub.store.space import SpaceAlarm

GiB = 1 << 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def states(alerts: list) -> list[tuple[str, str]]:
    return [(a.key, a.state) for a in alerts]


def test_a_full_data_directory_fires_once_and_resolves_when_writes_resume() -> None:
    ev = AlertEvaluator(AlertRules())
    full = Snapshot(storage=StorageSample("/data", full=True, free_bytes=0, since=5.0,
                                          waiting_writes=7))
    fired = ev.evaluate(full, 10.0)
    assert states(fired) == [("data_dir_full", "firing")]
    assert fired[0].severity == "critical" and "/data" in fired[0].summary
    assert fired[0].details["waiting_writes"] == 7
    assert ev.evaluate(full, 20.0) == []  # still full: no second alert
    back = Snapshot(storage=StorageSample("/data", full=False, free_bytes=GiB))
    assert states(ev.evaluate(back, 30.0)) == [("data_dir_full", "resolved")]
    assert ev.evaluate(Snapshot(), 40.0) == []  # a hub without the alarm: nothing


def test_low_recorder_disk_fires_per_directory_below_min_free() -> None:
    ev = AlertEvaluator(AlertRules(min_free_bytes=10 * GiB))
    snap = Snapshot(recorder_disks=(DiskSample("/rec/a", 2 * GiB), DiskSample("/rec/b", 50 * GiB),
                                    DiskSample("/gone", None)))
    fired = ev.evaluate(snap, 0.0)
    assert states(fired) == [("disk_low:/rec/a", "firing")]
    assert "2.0 GiB free" in fired[0].summary and "10.0 GiB" in fired[0].summary
    freed = Snapshot(recorder_disks=(DiskSample("/rec/a", 11 * GiB),))
    assert states(ev.evaluate(freed, 60.0)) == [("disk_low:/rec/a", "resolved")]


def test_min_free_zero_turns_the_disk_rule_off() -> None:
    ev = AlertEvaluator(AlertRules(min_free_bytes=0))
    assert ev.evaluate(Snapshot(recorder_disks=(DiskSample("/rec", 0),)), 0.0) == []


def test_rules_take_min_free_from_the_retention_setting() -> None:
    settings = SimpleNamespace(agent_offline_seconds=1, failure_rate=0.5,
                               failure_window_seconds=2, min_failures=1, low_speed_bps=0,
                               low_speed_seconds=3)
    rules = AlertRules.from_settings(settings, min_free_bytes=5 * GiB)
    assert rules.min_free_bytes == 5 * GiB and rules.low_speed_seconds == 3


@pytest.mark.anyio
async def test_the_loop_samples_the_alarm_and_the_recorder_disks(tmp_path: Path) -> None:
    class Store:
        async def count_ended_since(self, since: float) -> dict[str, int]:
            return {}

    class Service:
        config = HubConfig(ingest=IngestSettings(watch_dirs=[str(tmp_path)]))
        tasks: dict = {}
        store = Store()
        space = SpaceAlarm(tmp_path, resume_free_bytes=0, probe_interval=1, clock=lambda: 3.0)

        async def list_agents(self) -> list:
            return []

        async def list_ips(self) -> list:
            return []

        def list_captchas(self) -> list:
            return []

        account_ledger = SimpleNamespace(known=lambda: [])

    service = Service()
    service.space.trip(StorageFull(str(tmp_path), 12))
    snap = await snapshot(service, AlertRules(min_free_bytes=1), 5.0)
    assert snap.storage == StorageSample(str(tmp_path), True, 12, 3.0, 0)
    assert [d.path for d in snap.recorder_disks] == [str(tmp_path)]
    assert snap.recorder_disks[0].free_bytes and snap.recorder_disks[0].free_bytes > 0
    assert (await snapshot(service, AlertRules(), 5.0)).recorder_disks == ()
