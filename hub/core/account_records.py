"""What the account ledger keeps per account, and its JSON form (pure).

:class:`hub.core.account_risk.AccountLedger` owns the rules; these are its
plain records, kept apart so the ledger's module is about the rules alone. The
JSON form is the ``accounts`` snapshot the hub's store keeps; records written
by an older hub (no ``accepted_at``, ``ip_starts`` ... fields) read with the
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREUPLOAD, SUBMIT = "preupload", "submit"


@dataclass
class AccountEvent:
    time: float
    kind: str  # risk_control | account_throttle | account_penalty
    what: str  # preupload | submit
    ip: str = ""
    agent_id: str = ""
    code: int = 0  # Bilibili's code, 0 unknown
    retry_after: float | None = None
    voucher: str = ""
    starts_last_hour: int = 0  # the account's preuploads in the hour up to the event
    blamed: bool = False  # a risk-control answer found to be the account's fault
    evidence: bool = False  # ... the first of its streak: shows the account's hourly rate
    message: str = ""
    ip_starts: int = 0  # the IP's upload starts in the hour up to a risk-control answer
    ip_own: bool = False  # ... which came from an IP already throttled on its own

    @property
    def account(self) -> str:  # learning.EventLike: the subject is the account itself
        return ""


@dataclass
class AccountRecord:
    account: str
    preuploads: list[float] = field(default_factory=list)  # sorted, about the last day
    submits: list[float] = field(default_factory=list)
    submits_total: int = 0  # varies the gap before the next submission
    events: list[AccountEvent] = field(default_factory=list)
    preupload_cooldown_until: float | None = None
    submit_cooldown_until: float | None = None
    throttle_streak: int = 0  # throttles since the last accepted submission
    penalised: bool = False
    penalised_at: float | None = None
    penalty: str = ""  # what Bilibili said
    released_at: float | None = None  # an admin's release: earlier answers stop counting
    accepted_at: float | None = None  # latest preupload Bilibili accepted (its start)


def event_dict(e: AccountEvent) -> dict[str, Any]:
    return {"time": e.time, "kind": e.kind, "what": e.what, "ip": e.ip, "agent_id": e.agent_id,
            "code": e.code, "retry_after": e.retry_after, "voucher": e.voucher,
            "starts_last_hour": e.starts_last_hour, "blamed": e.blamed,
            "evidence": e.evidence, "message": e.message, "ip_starts": e.ip_starts,
            "ip_own": e.ip_own}


def record_dict(rec: AccountRecord) -> dict[str, Any]:
    return {"preuploads": list(rec.preuploads), "submits": list(rec.submits),
            "submits_total": rec.submits_total,
            "events": [event_dict(e) for e in rec.events],
            "preupload_cooldown_until": rec.preupload_cooldown_until,
            "submit_cooldown_until": rec.submit_cooldown_until,
            "throttle_streak": rec.throttle_streak, "penalised": rec.penalised,
            "penalised_at": rec.penalised_at, "penalty": rec.penalty,
            "released_at": rec.released_at, "accepted_at": rec.accepted_at}


def record_from(account: str, d: dict[str, Any]) -> AccountRecord:
    def opt(key: str) -> float | None:
        value = d.get(key)
        return float(value) if value is not None else None

    events = []
    for e in d.get("events") or ():
        retry = e.get("retry_after")
        events.append(AccountEvent(
            float(e["time"]), str(e["kind"]), str(e.get("what") or PREUPLOAD),
            str(e.get("ip") or ""), str(e.get("agent_id") or ""), int(e.get("code") or 0),
            float(retry) if retry is not None else None, str(e.get("voucher") or ""),
            int(e.get("starts_last_hour") or 0), bool(e.get("blamed")),
            bool(e.get("evidence")), str(e.get("message") or ""),
            int(e.get("ip_starts") or 0), bool(e.get("ip_own"))))
    return AccountRecord(
        account,
        preuploads=sorted(float(t) for t in d.get("preuploads") or ()),
        submits=sorted(float(t) for t in d.get("submits") or ()),
        submits_total=int(d.get("submits_total") or 0),
        events=events,
        preupload_cooldown_until=opt("preupload_cooldown_until"),
        submit_cooldown_until=opt("submit_cooldown_until"),
        throttle_streak=int(d.get("throttle_streak") or 0),
        penalised=bool(d.get("penalised")),
        penalised_at=opt("penalised_at"),
        penalty=str(d.get("penalty") or ""),
        released_at=opt("released_at"),
        accepted_at=opt("accepted_at"),
    )
