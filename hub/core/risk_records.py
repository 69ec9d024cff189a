"""What the risk ledger keeps per egress IP, its rules, and their JSON form (pure).

:class:`hub.core.risk.RiskLedger` owns the behaviour; these are its plain
records, kept apart so the ledger's module is about the rules alone. The JSON
form is what the hub's store writes per IP (``risk_ledger_ips``) and what a
restart reads back; records written by an older hub (no ``account``,
``shared`` ... fields) read with the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0
DAY = 86400.0

BLAME_IP, BLAME_ACCOUNT = "ip", "account"


@dataclass(frozen=True)
class RiskRules:
    """The limits. The first four are the public config; the rest are tuning with defaults.

    ``cooldown_growth``: each strike within ``strike_memory_seconds`` multiplies
    the cooldown (1 h, 2 h, 4 h ... by default), capped at ``cooldown_max_seconds``;
    Bilibili throttles for "hours", so an IP that is hit again right after its
    cooldown was cooled too briefly. ``record_half_life_seconds``: how fast a past
    event stops counting against an IP in :meth:`RiskLedger.score`.
    ``learned_clean_seconds`` and ``mesh_quorum``: see :mod:`hub.core.learning`.
    """

    min_interval_seconds: float = 300.0
    max_uploads_per_hour: int = 6
    cooldown_seconds: float = 3600.0
    disable_after_events: int = 3  # <= 0: never disable
    cooldown_growth: float = 2.0
    cooldown_max_seconds: float = DAY
    strike_memory_seconds: float = DAY
    record_half_life_seconds: float = DAY
    learned_clean_seconds: float = DAY  # a learned limit is forgotten after this long clean
    mesh_quorum: int = 3  # IPs that must have learned a limit before every IP is held to it
    idle_cap_seconds: float = DAY  # idleness beyond this earns no extra preference

    @classmethod
    def from_settings(cls, settings: Any, **tuning: float) -> RiskRules:
        """Build from ``hub.config.RiskSettings`` (or anything with the same attributes)."""
        return cls(
            min_interval_seconds=float(settings.min_interval_seconds),
            max_uploads_per_hour=int(settings.max_uploads_per_hour),
            cooldown_seconds=float(settings.cooldown_seconds),
            disable_after_events=int(settings.disable_after_events),
            learned_clean_seconds=float(getattr(settings, "learned_clean_seconds", DAY)),
            mesh_quorum=int(getattr(settings, "mesh_quorum", 3)),
            **tuning,
        )


@dataclass
class RiskEvent:
    time: float
    agent_id: str
    kind: str  # e.g. "406", "601", "risk_control"
    strike: bool  # False when it arrived during an ongoing cooldown (same episode)
    starts_last_hour: int = 0  # uploads the IP started in the hour up to the event
    evidence: bool = False  # first strike of a clean IP: tells us Bilibili's hourly rate
    account: str = ""  # the account the refused upload was for ("" unknown)
    shared: bool = False  # evidence that also counts toward the mesh-wide limit
    blamed: str = BLAME_IP  # "account" once the account ledger put it on the account
    voucher: str = ""  # a 601's captcha
    cooldown_until: float | None = None  # the cooldown this strike set


@dataclass
class IPRecord:
    ip: str
    agents: set[str] = field(default_factory=set)
    last_start: float | None = None
    last_finish: float | None = None
    last_ok: float | None = None  # last upload Bilibili accepted from this IP
    starts: list[float] = field(default_factory=list)  # sorted start times, about the last hour
    uploads_ok: int = 0
    uploads_failed: int = 0
    events: list[RiskEvent] = field(default_factory=list)
    cooldown_until: float | None = None
    disabled: bool = False
    disabled_at: float | None = None
    reenabled_at: float | None = None


def ip_dict(rec: IPRecord) -> dict[str, Any]:
    return {
        "agents": sorted(rec.agents),
        "last_start": rec.last_start,
        "last_finish": rec.last_finish,
        "last_ok": rec.last_ok,
        "starts": list(rec.starts),
        "uploads_ok": rec.uploads_ok,
        "uploads_failed": rec.uploads_failed,
        "events": [event_dict(e) for e in rec.events],
        "cooldown_until": rec.cooldown_until,
        "disabled": rec.disabled,
        "disabled_at": rec.disabled_at,
        "reenabled_at": rec.reenabled_at,
    }


def event_dict(e: RiskEvent) -> dict[str, Any]:
    return {
        "time": e.time,
        "agent_id": e.agent_id,
        "kind": e.kind,
        "strike": e.strike,
        "starts_last_hour": e.starts_last_hour,
        "evidence": e.evidence,
        "account": e.account,
        "shared": e.shared,
        "blamed": e.blamed,
        "voucher": e.voucher,
        "cooldown_until": e.cooldown_until,
    }


def event_from(e: dict[str, Any]) -> RiskEvent:
    evidence = bool(e.get("evidence", False))
    until = e.get("cooldown_until")
    return RiskEvent(
        float(e["time"]),
        str(e["agent_id"]),
        str(e["kind"]),
        bool(e.get("strike", True)),
        int(e.get("starts_last_hour", 0)),
        evidence,
        account=str(e.get("account") or ""),
        shared=bool(e.get("shared", evidence)),
        blamed=BLAME_ACCOUNT if e.get("blamed") == BLAME_ACCOUNT else BLAME_IP,
        voucher=str(e.get("voucher") or ""),
        cooldown_until=float(until) if until is not None else None,
    )
