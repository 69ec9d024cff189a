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

from hub.alerts.delivery import AlertDelivery
from hub.alerts.rules import (
    AgentSample,
    AlertEvaluator,
    AlertRules,
    DuplicateSample,
    IpSample,
    Snapshot,
    TaskSample,
)

log = logging.getLogger("bupmesh.alerts")


async def snapshot(service: Any, rules: AlertRules, now: float) -> Snapshot:
    """What the rules look at, read from a running ``HubService``."""
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
    ended = await service.store.count_ended_since(now - rules.failure_window_seconds)
    duplicates = tuple(
        DuplicateSample(agent_id=d["agent_id"], live_address=d["live_address"],
                        refused_address=d["refused_address"], attempts=d["attempts"])
        for d in service.agent_duplicates()
    )
    return Snapshot(agents=agents, tasks=tasks, ips=ips, duplicates=duplicates,
                    window_completed=ended.get("completed", 0),
                    window_failed=ended.get("failed", 0))


async def run_alerts(
    service: Any,
    settings: Any,
    *,
    task_status: anyio.abc.TaskStatus[AlertDelivery] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Evaluate every ``settings.evaluate_interval_seconds`` until cancelled."""
    rules = AlertRules.from_settings(settings)
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
                for alert in evaluator.evaluate(await snapshot(service, rules, now), now):
                    delivery.deliver(alert)
            except Exception:
                log.exception("alert evaluation failed; trying again next interval")
