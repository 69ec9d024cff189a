"""Prometheus metrics of one hub (served at ``GET /metrics``, ``hub.api.metrics``),
in a registry of its own.

Two kinds of figure:

* read at scrape time from state the hub already keeps (no hook): agents by
  status (the registry), tasks by status (the database, the record of truth),
  current upload speed per agent (the live tasks);
* counted as things happen, through small calls from the hub's parts: bytes
  uploaded per agent and IP (from Progress and the final Result), risk-control
  events per IP, retries, stream connects and reconnects, scheduler decisions,
  and hub->agent credit stalls (a task's stream had bytes ready but the agent
  had granted no credit).

Parts of the hub with figures of their own hand a reader to :meth:`HubMetrics.add_gauges`,
called at scrape time: the data directory's space alarm (:func:`storage_gauges`) and
retention with the recorder disks (:func:`retention_gauges`).

A registry per hub (never the global one) keeps hubs in one process, as tests
run them, from counting into each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from hub.core.history import History

if TYPE_CHECKING:
    from hub.core.lifecycle import TaskRecord
    from hub.core.registry import Registry

AGENT_STATUSES = ("online", "busy", "offline", "draining", "disabled")
TASK_STATUSES = ("pending", "assigned", "uploading", "completed", "failed", "cancelled")


class TaskCounts(Protocol):
    def count_tasks_by_status(self) -> Awaitable[dict[str, int]]: ...


class HubMetrics:
    """``agents``: the hub's registry; ``tasks``: its live tasks (read at scrape time);
    ``store``: counts every task by status; ``strategy``: the scheduler's, as a label;
    ``history``: where the console's charts get the same counts, bucketed in time."""

    def __init__(self, *, agents: Registry, tasks: Mapping[str, TaskRecord], store: TaskCounts,
                 strategy: str, history: History | None = None) -> None:
        self.history = history
        self.agents = agents
        self.tasks = tasks
        self.store = store
        self.strategy = strategy
        self.registry = CollectorRegistry(auto_describe=True)
        self._task_counts: dict[str, int] = {}
        self._seen_bytes: dict[str, tuple[int, int]] = {}  # task id -> (attempt, bytes counted)
        self._connected: set[str] = set()
        r = self.registry
        self.uploaded_bytes = Counter(
            "bupmesh_uploaded_bytes", "Bytes agents reported uploaded to Bilibili",
            ["agent", "ip"], registry=r)
        self.upload_starts = Counter(
            "bupmesh_upload_starts", "Uploads started per egress IP (what the hourly cap counts)",
            ["ip"], registry=r)
        self.risk_events = Counter(
            "bupmesh_risk_events", "Risk-control events (HTTP 406, code 601) per egress IP",
            ["ip", "kind"], registry=r)
        self.account_events = Counter(
            "bupmesh_account_events",
            "Account-level answers from Bilibili (account_throttle, account_penalty, "
            "risk control found to be the account's fault)", ["kind"], registry=r)
        self.sessions_dropped = Counter(
            "bupmesh_sessions_dropped",
            "Upos sessions refused (bound to another IP, or expired) and started afresh",
            registry=r)
        self.session_dropped_parts = Counter(
            "bupmesh_session_dropped_parts",
            "Committed upos parts lost with refused sessions (uploaded again)", registry=r)
        self.session_dropped_bytes = Counter(
            "bupmesh_session_dropped_bytes",
            "Committed bytes lost with refused sessions (uploaded again)", registry=r)
        self.retries = Counter(
            "bupmesh_task_retries", "Task attempts that ended in a re-queue, by error kind",
            ["kind"], registry=r)
        self.stream_connects = Counter(
            "bupmesh_stream_connects", "Agent streams opened (Hello accepted)",
            ["agent"], registry=r)
        self.stream_reconnects = Counter(
            "bupmesh_stream_reconnects",
            "Agent streams opened by an agent that had a stream before in this hub's life",
            ["agent"], registry=r)
        self.scheduler_decisions = Counter(
            "bupmesh_scheduler_decisions",
            "Scheduler choices for a pending task: an agent chosen, or none eligible",
            ["strategy", "result"], registry=r)
        self.credit_stalls = Counter(
            "bupmesh_credit_stalls",
            "Times a task's hub->agent stream had data ready but no credit from the agent",
            ["agent"], registry=r)
        r.register(_StateCollector(self))

    # -- hooks (called by the hub; cheap, never raise into it) ---------------------------

    def uploaded(self, task: TaskRecord, agent_id: str, ip: str, attempt: int,
                 before: int) -> None:
        """After Progress or Result moved ``task.uploaded_bytes`` (``before`` = its old value)."""
        seen = self._seen_bytes.get(task.task_id)
        last = seen[1] if seen is not None and seen[0] == attempt else before
        delta = task.uploaded_bytes - last
        if delta > 0:
            self.uploaded_bytes.labels(agent_id, ip or "unknown").inc(delta)
            if self.history is not None:
                self.history.uploaded(agent_id, delta)
        if task.status.terminal:
            self._seen_bytes.pop(task.task_id, None)
        else:
            self._seen_bytes[task.task_id] = (attempt, max(last, task.uploaded_bytes))

    def risk_event(self, ip: str, kind: str) -> None:
        self.risk_events.labels(ip or "unknown", kind).inc()

    def upload_started(self, ip: str) -> None:
        self.upload_starts.labels(ip or "unknown").inc()
        if self.history is not None:
            self.history.upload_started(ip)

    def account_event(self, kind: str) -> None:
        self.account_events.labels(kind or "unknown").inc()

    def session_dropped(self, parts: int, size: int) -> None:
        self.sessions_dropped.inc()
        self.session_dropped_parts.inc(max(0, parts))
        self.session_dropped_bytes.inc(max(0, size))

    def retry(self, kind: str) -> None:
        self.retries.labels(kind or "unknown").inc()

    def stream_connected(self, agent_id: str) -> Callable[[], None]:
        """Count an accepted Hello; returns the agent's credit-stall counter for its stream."""
        self.stream_connects.labels(agent_id).inc()
        if agent_id in self._connected:
            self.stream_reconnects.labels(agent_id).inc()
        self._connected.add(agent_id)
        # The agent's series is made at its first stall: most agents never stall, and a
        # labelled child per agent of a large fleet is memory the scrape does not need.
        return lambda: self.credit_stalls.labels(agent_id).inc()

    def decision(self, chosen: bool) -> None:
        self.scheduler_decisions.labels(self.strategy, "chosen" if chosen else "none").inc()

    def add_gauges(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Figures another part of the hub keeps, read when scraped."""
        self.registry.register(_Gauges(read))

    # -- scrape ---------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The text exposition, with task counts fresh from the database."""
        self._task_counts = await self.store.count_tasks_by_status()
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        metrics = self.metrics
        agents = GaugeMetricFamily("bupmesh_agents", "Known agents by status", labels=["status"])
        by_status = dict.fromkeys(AGENT_STATUSES, 0)
        speed: dict[str, float] = {}
        for info in metrics.agents.agents.values():
            by_status[info.status] = by_status.get(info.status, 0) + 1
            speed[info.agent_id] = 0.0
        for status, n in by_status.items():
            agents.add_metric([status], n)
        yield agents

        tasks = GaugeMetricFamily("bupmesh_tasks", "Tasks by status", labels=["status"])
        counts = {**dict.fromkeys(TASK_STATUSES, 0), **metrics._task_counts}
        for status, n in counts.items():
            tasks.add_metric([status], n)
        yield tasks

        for task in metrics.tasks.values():
            if task.status.leased and task.agent_id:
                speed[task.agent_id] = speed.get(task.agent_id, 0.0) + task.upload_speed
        gauge = GaugeMetricFamily("bupmesh_upload_speed_bytes_per_second",
                                  "Current upload speed to Bilibili per agent (sum of its tasks)",
                                  labels=["agent"])
        for agent_id, bps in sorted(speed.items()):
            gauge.add_metric([agent_id], bps)
        yield gauge


class _Gauges(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield from self.read()


def storage_gauges(space: Any) -> Iterator[Metric]:
    """The data directory's space alarm (hub/store/space.py)."""
    state = space.describe()
    full = GaugeMetricFamily("bupmesh_data_dir_full",
                             "1 while the data directory is full and new work is refused")
    full.add_metric([], 1.0 if state["full"] else 0.0)
    yield full
    waiting = GaugeMetricFamily("bupmesh_data_dir_waiting_writes",
                                "Writes of running state waiting for the data directory to "
                                "have room")
    waiting.add_metric([], float(state["waiting_writes"]))
    yield waiting
    trips = CounterMetricFamily("bupmesh_data_dir_full_events",
                                "Times the data directory was found full")
    trips.add_metric([], float(space.trips))
    yield trips


def retention_gauges(retention: Any) -> Iterator[Metric]:
    """Retention and the recorder disks (hub/retention/service.py), as of its last pass."""
    waiting = GaugeMetricFamily(
        "bupmesh_retention_waiting_bytes",
        "Bytes of recording files under a retention rule not acted on yet, by stage: "
        "trigger (not reached), delay (reached, delay_days running), kept (refused, flagged)",
        labels=["stage"])
    for stage in ("trigger", "delay", "kept"):
        waiting.add_metric([stage], float(retention.pending_bytes.get(stage, 0)))
    yield waiting
    actions = CounterMetricFamily("bupmesh_retention_actions",
                                  "Retention actions and refusals, by action and outcome",
                                  labels=["action", "outcome"])
    for (action, outcome), n in sorted(retention.actions.items()):
        actions.add_metric([action, outcome], float(n))
    yield actions
    disks = GaugeMetricFamily("bupmesh_recorder_disk_free_bytes",
                              "Free bytes under each recorder directory", labels=["path"])
    for path, free in sorted(retention.disk_free.items()):
        if free is not None:
            disks.add_metric([path], float(free))
    yield disks
