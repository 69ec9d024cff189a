"""The hub's alert loop: sample hub state, evaluate the rules, hand alerts to delivery.

Runs beside the service in the hub's task group. It reads the same views the
admin API serves (agents, IPs) plus the active tasks and the database's count
of tasks that ended in the failure window, so it needs no hooks in the
service's hot paths. A failing pass is logged and the next one tries again:
alerting must never take the hub down. After a hub restart the evaluator starts
empty, so a condition still true then fires once more (the receiver sees a
fresh "firing"; nothing is lost).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from hub.alerts.delivery import AlertDelivery
from hub.alerts.rules import (
    AccountSample,
    AgentSample,
    AlertEvaluator,
    AlertRules,
    CaptchaSample,
    DiskSample,
    IpSample,
    RejectedArchive,
    Snapshot,
    StorageSample,
    TaskSample,
)
from hub.ingest.files import recorder_dirs
from hub.store.database import free_bytes

log = logging.getLogger("bupmesh.alerts")


async def snapshot(service: Any, rules: AlertRules, now: float, *,
                   recordings: Any = None) -> Snapshot:
    """What the rules look at, read from a running ``HubService`` (and the recording
    store's archive reviews, when the hub has recordings)."""
    agents = tuple(
        AgentSample(agent_id=a["agent_id"], status=a["status"],
                    last_heartbeat=a.get("last_heartbeat"), disabled=bool(a.get("disabled")),
                    ip_address=a.get("ip_address") or "")
        for a in await service.list_agents()
    )
    tasks = tuple(
        TaskSample(task_id=t.task_id, status=t.status.value, agent_id=t.agent_id,
                   speed_bps=float(t.upload_speed or 0.0))
        for t in list(service.tasks.values())
    )
    ips = tuple(
        IpSample(ip=row["ip"], state=row.get("state", ""), reason=row.get("reason", ""),
                 cooldown_until=row.get("cooldown_until"), disabled=bool(row.get("disabled")),
                 agents=tuple(row.get("agents", ())))
        for row in await service.list_ips()
    )
    captchas = tuple(
        CaptchaSample(voucher=c["voucher"], ip=c["ip"], account=c["account"],
                      raised_at=c["raised_at"], refusals=c["refusals"])
        for c in service.list_captchas() if c["open"]
    )
    accounts = tuple(
        AccountSample(account=key, state=view["state"], penalty=view["penalty"],
                      preupload_cooldown_until=view["preupload"]["cooldown_until"],
                      submit_cooldown_until=view["submit"]["cooldown_until"])
        for key in service.account_ledger.known()
        if (view := service.account_ledger.describe(key, now))
    )
    ended = await service.store.count_ended_since(now - rules.failure_window_seconds)
    space = getattr(service, "space", None)
    storage = None
    if space is not None:
        storage = StorageSample(directory=space.directory, full=space.raised,
                                free_bytes=space.free_bytes, since=space.since,
                                waiting_writes=space.waiting_writes)
    disks: list[DiskSample] = []
    if rules.min_free_bytes > 0:
        for path in recorder_dirs(service.config.ingest):
            disks.append(DiskSample(path, await anyio.to_thread.run_sync(free_bytes, path)))
    rejected = tuple(
        RejectedArchive(recording_id=r["recording_id"], aid=r["aid"], bvid=r["bvid"] or "",
                        title=r["title"] or "", room_id=r["room_id"] or "",
                        reason=r["reason"] or r["state_desc"] or "")
        for r in (await recordings.rejected() if recordings is not None else [])
    )
    return Snapshot(agents=agents, tasks=tasks, ips=ips, captchas=captchas, accounts=accounts,
                    window_completed=ended.get("completed", 0),
                    window_failed=ended.get("failed", 0), rejected=rejected,
                    storage=storage, recorder_disks=tuple(disks))


async def run_alerts(
    service: Any,
    settings: Any,
    *,
    recordings: Any = None,
    task_status: anyio.abc.TaskStatus[AlertDelivery] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Evaluate every ``settings.evaluate_interval_seconds`` until cancelled."""
    retention = getattr(getattr(service, "config", None), "retention", None)
    min_free = float(getattr(retention, "min_free_gb", 0) or 0) * (1 << 30)
    rules = AlertRules.from_settings(settings, min_free_bytes=min_free)
    evaluator = AlertEvaluator(rules)
    delivery = AlertDelivery(settings.webhook_url, timeout=settings.webhook_timeout_seconds,
                             retries=settings.webhook_retries)
    async with anyio.create_task_group() as tg:
        await tg.start(delivery.run)
        task_status.started(delivery)
        while True:
            await anyio.sleep(settings.evaluate_interval_seconds)
            try:
                now = service.clock()
                snap = await snapshot(service, rules, now, recordings=recordings)
                for alert in evaluator.evaluate(snap, now):
                    delivery.deliver(alert)
            except Exception:
                log.exception("alert evaluation failed; trying again next interval")
