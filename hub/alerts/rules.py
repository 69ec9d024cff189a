"""Alert rules (agent offline, failure rate, IP risk, low speed), as a pure evaluator
over snapshots of hub state.

The hub samples its state every ``evaluate_interval_seconds`` into a
``Snapshot`` (hub/alerts/loop.py) and asks ``AlertEvaluator.evaluate`` what
changed. The evaluator keeps which conditions are firing, so each condition
yields exactly one ``firing`` alert when it starts and one ``resolved`` alert
when it clears, however many evaluations it spans (de-duplication). It does no
IO and reads no clock: time comes in with each call, so tests drive it with a
fake clock. Delivery (log, webhook) is hub/alerts/delivery.py.

Rules (each condition has a stable ``key``):

- ``agent_offline:<agent id>``: an agent that was seen (it has a last
  heartbeat), is not disabled by an admin, and is offline, whose last
  heartbeat is ``agent_offline_seconds`` old or older. Resolved when the agent
  is back (any status but offline) or an admin disables it.
- ``failure_rate``: among tasks that ended in the last
  ``failure_window_seconds`` as completed or failed (cancelled ones are an
  admin's choice, not a failure), at least ``min_failures`` failed and the
  failed share exceeds ``failure_rate``. ``min_failures`` keeps one failure of
  two tasks from paging anyone.
- ``ip_risk:<ip>``: an IP the risk ledger holds in cooldown or disabled, i.e.
  Bilibili answered it with risk control (406 / 601). Resolved when the
  cooldown is over or an admin re-enables it.
- ``captcha:<voucher>``: Bilibili answered an upload with 601 and a captcha
  voucher, and no admin has marked it solved yet (``POST
  /api/manage/captchas/{voucher}/solved``). Names the IP, the account and the
  voucher. Resolved when solved (or the captcha expires: the throttle passed).
- ``account_penalty:<account>``: the account ledger holds the account
  penalised (21515 / 21590): its uploads and submissions stopped until an admin
  releases it. Resolved on release.
- ``account_throttle:<account>``: the account is cooling down (21566 / 137022,
  or preupload throttling found to be the account's). Resolved when it may go on.
- ``low_speed:<task id>``: "abnormally low upload speed" is defined as a task
  in ``uploading`` whose reported speed stays below ``low_speed_bps`` for
  ``low_speed_seconds`` in a row (every sample in between is slow). A fixed
  floor, not a comparison with the agent's median: a slow home line that is
  always slow is still worth knowing about, and a floor needs no history to be
  right after a restart. Resolved when the speed recovers or the task stops
  uploading. ``low_speed_bps = 0`` turns the rule off.
- ``data_dir_full``: a write found the hub's data directory full and writes are
  refused (hub/store/space.py). Resolved when the hub resumed writing.
- ``disk_low:<dir>``: a recorder directory (the recorders' work dirs, the watched
  folders) has less than ``retention.min_free_gb`` free; 0 turns the rule off. The
  recorder stops when its disk fills: this is the warning before that.
- ``archive_rejected:<recording id>``: the recording's archive was rejected in
  review (the hub reads review states, hub/submission/reviews.py); the alert
  names the recording, the archive and Bilibili's reason. Resolved when a later
  read finds it pending or approved (an appeal, a fixed and edited archive).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

FIRING = "firing"
RESOLVED = "resolved"

AGENT_OFFLINE = "agent_offline"
FAILURE_RATE = "failure_rate"
IP_RISK = "ip_risk"
LOW_SPEED = "low_speed"
DATA_DIR_FULL = "data_dir_full"
DISK_LOW = "disk_low"
CAPTCHA = "captcha"
ACCOUNT_PENALTY = "account_penalty"
ACCOUNT_THROTTLE = "account_throttle"
ARCHIVE_REJECTED = "archive_rejected"


@dataclass(frozen=True)
class AlertRules:
    agent_offline_seconds: float = 300
    failure_rate: float = 0.1
    failure_window_seconds: float = 3600
    min_failures: int = 3
    low_speed_bps: float = 100 * 1024
    low_speed_seconds: float = 300
    min_free_bytes: float = 0  # recorder directories; from retention.min_free_gb

    @classmethod
    def from_settings(cls, settings: Any, *, min_free_bytes: float = 0) -> AlertRules:
        """From ``hub.config.AlertSettings`` (or anything with the same attributes)."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__
                      if name != "min_free_bytes"}, min_free_bytes=min_free_bytes)


@dataclass(frozen=True)
class AgentSample:
    agent_id: str
    status: str  # online | busy | offline | draining | disabled
    last_heartbeat: float | None
    disabled: bool = False
    ip_address: str = ""


@dataclass(frozen=True)
class TaskSample:
    task_id: str
    status: str
    agent_id: str | None = None
    speed_bps: float = 0.0


@dataclass(frozen=True)
class IpSample:
    ip: str
    state: str  # hub.core.risk: ok | resting | capped | cooling | disabled
    reason: str = ""
    cooldown_until: float | None = None
    disabled: bool = False
    agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskSample:
    path: str
    free_bytes: int | None  # None: could not be read (missing directory)


@dataclass(frozen=True)
class StorageSample:
    """The hub's data directory, as its space alarm sees it."""

    directory: str
    full: bool
    free_bytes: int | None = None
    since: float | None = None
    waiting_writes: int = 0


@dataclass(frozen=True)
class CaptchaSample:
    voucher: str
    ip: str
    account: str
    raised_at: float
    refusals: int = 1


@dataclass(frozen=True)
class AccountSample:
    account: str
    state: str  # hub.core.account_risk: ok | paced | cooling | penalised
    penalty: str = ""
    preupload_cooldown_until: float | None = None
    submit_cooldown_until: float | None = None


@dataclass(frozen=True)
class RejectedArchive:
    recording_id: int
    aid: int
    bvid: str = ""
    title: str = ""
    room_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Snapshot:
    agents: tuple[AgentSample, ...] = ()
    tasks: tuple[TaskSample, ...] = ()  # tasks that are not terminal
    ips: tuple[IpSample, ...] = ()
    captchas: tuple[CaptchaSample, ...] = ()  # open ones
    accounts: tuple[AccountSample, ...] = ()
    # Tasks that ended within the failure window, by outcome.
    window_completed: int = 0
    window_failed: int = 0
    storage: StorageSample | None = None
    recorder_disks: tuple[DiskSample, ...] = ()
    rejected: tuple[RejectedArchive, ...] = ()  # archives whose review is a rejection


@dataclass(frozen=True)
class Alert:
    """One transition of one condition: what the log line and the webhook carry."""

    key: str
    kind: str
    state: Literal["firing", "resolved"]
    severity: Literal["warning", "critical"]
    subject: str  # agent id, IP, task id or "hub"
    summary: str  # one line for a person
    since: float  # when the condition started firing
    at: float  # when this transition was noticed
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The webhook payload. ``text`` repeats the summary for chat webhooks that
        show only that field (Slack-style)."""
        return {
            "source": "bupmesh",
            "key": self.key,
            "alert": self.kind,
            "state": self.state,
            "severity": self.severity,
            "subject": self.subject,
            "summary": self.summary,
            "text": f"[{self.state.upper()}] {self.summary}",
            "since": self.since,
            "at": self.at,
            "details": self.details,
        }


@dataclass(frozen=True)
class _Condition:
    key: str
    kind: str
    severity: Literal["warning", "critical"]
    subject: str
    summary: str
    details: dict[str, Any]


class AlertEvaluator:
    """Turns a stream of snapshots into firing/resolved transitions, one per condition."""

    def __init__(self, rules: AlertRules) -> None:
        self.rules = rules
        self.active: dict[str, Alert] = {}  # key -> its firing alert
        self._slow_since: dict[str, float] = {}  # task id -> first slow sample in a row

    def evaluate(self, snapshot: Snapshot, now: float) -> list[Alert]:
        """The alerts that started or cleared since the previous call (firing first)."""
        conditions = {c.key: c for c in self._conditions(snapshot, now)}
        out: list[Alert] = []
        for key, cond in conditions.items():
            if key in self.active:
                continue
            alert = Alert(key=key, kind=cond.kind, state=FIRING, severity=cond.severity,
                          subject=cond.subject, summary=cond.summary, since=now, at=now,
                          details=cond.details)
            self.active[key] = alert
            out.append(alert)
        for key in [k for k in self.active if k not in conditions]:
            fired = self.active.pop(key)
            out.append(Alert(
                key=key, kind=fired.kind, state=RESOLVED, severity=fired.severity,
                subject=fired.subject, since=fired.since, at=now,
                summary=f"resolved after {_duration(now - fired.since)}: {fired.summary}",
                details=fired.details,
            ))
        return out

    # -- rules ---------------------------------------------------------------------------

    def _conditions(self, snap: Snapshot, now: float) -> Iterable[_Condition]:
        yield from self._offline_agents(snap.agents, now)
        yield from self._failure_rate(snap)
        yield from self._risky_ips(snap.ips, now)
        yield from self._captchas(snap.captchas)
        yield from self._accounts(snap.accounts, now)
        yield from self._slow_tasks(snap.tasks, now)
        yield from self._storage(snap.storage)
        yield from self._low_disks(snap.recorder_disks)
        yield from self._rejected_archives(snap.rejected)

    def _offline_agents(self, agents: Iterable[AgentSample], now: float) -> Iterable[_Condition]:
        limit = self.rules.agent_offline_seconds
        for agent in agents:
            if agent.disabled or agent.status != "offline" or agent.last_heartbeat is None:
                continue
            silent = now - agent.last_heartbeat
            if silent >= limit:
                yield _Condition(
                    key=f"{AGENT_OFFLINE}:{agent.agent_id}", kind=AGENT_OFFLINE,
                    severity="critical", subject=agent.agent_id,
                    summary=(f"agent {agent.agent_id} offline for {_duration(silent)} "
                             f"(limit {_duration(limit)})"),
                    details={"agent_id": agent.agent_id, "ip_address": agent.ip_address,
                             "last_heartbeat": agent.last_heartbeat},
                )

    def _failure_rate(self, snap: Snapshot) -> Iterable[_Condition]:
        ended = snap.window_completed + snap.window_failed
        if not ended or snap.window_failed < self.rules.min_failures:
            return
        rate = snap.window_failed / ended
        if rate > self.rules.failure_rate:
            window = _duration(self.rules.failure_window_seconds)
            yield _Condition(
                key=FAILURE_RATE, kind=FAILURE_RATE, severity="critical", subject="hub",
                summary=(f"{snap.window_failed} of {ended} tasks failed in the last {window} "
                         f"({rate:.0%} > {self.rules.failure_rate:.0%})"),
                details={"failed": snap.window_failed, "completed": snap.window_completed,
                         "rate": round(rate, 4),
                         "window_seconds": self.rules.failure_window_seconds},
            )

    def _risky_ips(self, ips: Iterable[IpSample], now: float) -> Iterable[_Condition]:
        for ip in ips:
            if not (ip.disabled or ip.state in ("cooling", "disabled")):
                continue
            if ip.disabled or ip.state == "disabled":
                what = "disabled until an admin re-enables it"
            elif ip.cooldown_until is not None:
                what = f"cooling down for {_duration(max(0.0, ip.cooldown_until - now))}"
            else:
                what = "cooling down"
            yield _Condition(
                key=f"{IP_RISK}:{ip.ip}", kind=IP_RISK, severity="warning", subject=ip.ip,
                summary=f"IP {ip.ip} hit Bilibili risk control: {what}",
                details={"ip": ip.ip, "state": ip.state, "reason": ip.reason,
                         "cooldown_until": ip.cooldown_until, "agents": list(ip.agents)},
            )

    def _captchas(self, captchas: Iterable[CaptchaSample]) -> Iterable[_Condition]:
        for c in captchas:
            yield _Condition(
                key=f"{CAPTCHA}:{c.voucher}", kind=CAPTCHA, severity="critical",
                subject=c.account or c.ip,
                summary=(f"captcha needed: Bilibili throttles account {c.account or '?'} on IP "
                         f"{c.ip} until captcha {c.voucher} is solved; once solved, mark it "
                         f"(web UI, or POST /api/manage/captchas/{c.voucher}/solved)"),
                details={"voucher": c.voucher, "ip": c.ip, "account": c.account,
                         "raised_at": c.raised_at, "refusals": c.refusals},
            )

    def _accounts(self, accounts: Iterable[AccountSample], now: float
                  ) -> Iterable[_Condition]:
        for a in accounts:
            if a.state == "penalised":
                yield _Condition(
                    key=f"{ACCOUNT_PENALTY}:{a.account}", kind=ACCOUNT_PENALTY,
                    severity="critical", subject=a.account,
                    summary=(f"account {a.account} penalised by Bilibili ({a.penalty}): its "
                             "uploads and submissions are stopped until an admin releases it"),
                    details={"account": a.account, "penalty": a.penalty},
                )
            elif a.state == "cooling":
                until = max(t for t in (a.preupload_cooldown_until, a.submit_cooldown_until,
                                        now) if t is not None)
                what = ("submissions" if a.submit_cooldown_until else "uploads")
                yield _Condition(
                    key=f"{ACCOUNT_THROTTLE}:{a.account}", kind=ACCOUNT_THROTTLE,
                    severity="warning", subject=a.account,
                    summary=(f"account {a.account} throttled by Bilibili: its {what} wait "
                             f"{_duration(until - now)}"),
                    details={"account": a.account,
                             "preupload_cooldown_until": a.preupload_cooldown_until,
                             "submit_cooldown_until": a.submit_cooldown_until},
                )

    def _slow_tasks(self, tasks: Iterable[TaskSample], now: float) -> Iterable[_Condition]:
        floor, hold = self.rules.low_speed_bps, self.rules.low_speed_seconds
        slow_now: dict[str, float] = {}
        for task in tasks:
            if floor <= 0 or task.status != "uploading" or task.speed_bps >= floor:
                continue
            since = self._slow_since.get(task.task_id, now)
            slow_now[task.task_id] = since
            if now - since >= hold:
                yield _Condition(
                    key=f"{LOW_SPEED}:{task.task_id}", kind=LOW_SPEED, severity="warning",
                    subject=task.task_id,
                    summary=(f"task {task.task_id} on agent {task.agent_id or '?'} uploading at "
                             f"{_rate(task.speed_bps)} for {_duration(now - since)} "
                             f"(floor {_rate(floor)})"),
                    details={"task_id": task.task_id, "agent_id": task.agent_id,
                             "speed_bps": task.speed_bps, "low_speed_bps": floor},
                )
        # A fast sample (or the task ending) restarts the count.
        self._slow_since = slow_now


    def _rejected_archives(self, archives: Iterable[RejectedArchive]) -> Iterable[_Condition]:
        for a in archives:
            archive = a.bvid or f"av{a.aid}"
            yield _Condition(
                key=f"{ARCHIVE_REJECTED}:{a.recording_id}", kind=ARCHIVE_REJECTED,
                severity="warning", subject=str(a.recording_id),
                summary=(f"recording {a.recording_id} ({a.title or 'untitled'}, room "
                         f"{a.room_id or '?'}): archive {archive} rejected in review: "
                         f"{a.reason or 'no reason given'}"),
                details={"recording_id": a.recording_id, "aid": a.aid, "bvid": a.bvid,
                         "title": a.title, "room_id": a.room_id, "reason": a.reason},
            )

    def _storage(self, storage: StorageSample | None) -> Iterable[_Condition]:
        if storage is None or not storage.full:
            return
        free = "unknown" if storage.free_bytes is None else _size(storage.free_bytes)
        yield _Condition(
            key=DATA_DIR_FULL, kind=DATA_DIR_FULL, severity="critical", subject="hub",
            summary=(f"data directory {storage.directory} is full ({free} free): new parts "
                     "and admin actions are refused, running uploads go on"),
            details={"directory": storage.directory, "free_bytes": storage.free_bytes,
                     "since": storage.since, "waiting_writes": storage.waiting_writes},
        )

    def _low_disks(self, disks: Iterable[DiskSample]) -> Iterable[_Condition]:
        floor = self.rules.min_free_bytes
        if floor <= 0:
            return
        for disk in disks:
            if disk.free_bytes is None or disk.free_bytes >= floor:
                continue
            yield _Condition(
                key=f"{DISK_LOW}:{disk.path}", kind=DISK_LOW, severity="warning",
                subject=disk.path,
                summary=(f"recorder directory {disk.path} has {_size(disk.free_bytes)} free "
                         f"(below {_size(floor)}): the recorder stops when it is full"),
                details={"path": disk.path, "free_bytes": disk.free_bytes,
                         "min_free_bytes": floor},
            )


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(bps: float) -> str:
    return f"{bps / 1024:.0f} KiB/s"
