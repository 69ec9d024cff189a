"""Limits learned from Bilibili's risk-control answers, and how they fade (pure).

Bilibili does not publish how many uploads it tolerates, so a configured cap
is a guess. A risk-control answer is evidence of the real figure: when a clean
IP's ``n``-th upload start within an hour is refused, about ``n - 1`` an hour
is what Bilibili allows there. The question is how far one answer reaches:

* **That IP.** An answer teaches the IP it came from, and nothing else: one
  406 may be about that address alone (a shared NAT, a noisy neighbour), and
  holding every IP of the mesh to it for days throttles healthy IPs.
* **The mesh.** Only when ``quorum`` IPs (three by default) have each learned
  a limit is the mesh held to what they agree on: the ``quorum``-th lowest of
  their figures, the rate at least that many IPs were refused at.
* **The account** (hub/core/account_risk.py): when the same account is refused
  on several IPs in a short time the evidence points at the account; those
  answers are then taken off the IPs (see ``RiskLedger.blame_account``).

Every learned limit keeps its evidence (who was refused when, after how many
starts) for the admin API, and **fades**: a limit whose IP has gone
``clean_seconds`` without a risk event is forgotten, since Bilibili's throttles
last hours, not weeks. An admin can also forget a limit at once.

Functions here read plain event records and a time, and return values; the
ledger (hub/core/risk.py) decides which events count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

IP, MESH, ACCOUNT = "ip", "mesh", "account"


class EventLike(Protocol):
    time: float
    agent_id: str
    kind: str
    starts_last_hour: int
    account: str


@dataclass(frozen=True)
class Evidence:
    """One risk-control answer that taught a limit."""

    time: float
    ip: str
    agent_id: str
    kind: str
    starts_last_hour: int  # upload starts in the hour up to the answer (the refused one too)
    account: str = ""

    @property
    def cap(self) -> int:
        """The hourly rate this answer shows Bilibili allows: one less than it refused."""
        return max(1, self.starts_last_hour - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "ip": self.ip, "agent_id": self.agent_id, "kind": self.kind,
                "starts_last_hour": self.starts_last_hour, "account": self.account,
                "shows_hourly_cap": self.cap}


@dataclass(frozen=True)
class LearnedLimit:
    """An hourly cap learned for one IP, the whole mesh or one account, with its evidence."""

    scope: str  # ip | mesh | account
    subject: str  # the IP, "*" for the mesh, or the account
    hourly_cap: int
    evidence: tuple[Evidence, ...]
    last_event: float  # the latest risk event that keeps it alive
    decays_at: float  # forgotten then, unless a new risk event comes first

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "subject": self.subject, "hourly_cap": self.hourly_cap,
                "learned_at": min((e.time for e in self.evidence), default=self.last_event),
                "last_event": self.last_event, "decays_at": self.decays_at,
                "evidence": [e.to_dict() for e in self.evidence]}


def streak_start(times: Sequence[float], clean_seconds: float) -> float | None:
    """Start of the latest run of events with no gap of ``clean_seconds`` or more
    (``times`` sorted; ``None`` when empty): what came before a clean gap is forgotten."""
    if not times:
        return None
    start = times[0]
    for before, after in zip(times, times[1:], strict=False):
        if after - before >= clean_seconds:
            start = after
    return start


def ip_limit(ip: str, events: Sequence[tuple[EventLike, bool]], clean_seconds: float
             ) -> LearnedLimit | None:
    """The limit ``ip`` learned, from its events as ``(event, counts_as_evidence)`` in
    time order (events blamed on something else are left out by the caller).

    The limit is the lowest rate shown by the evidence of the latest streak of
    events; it lives until the IP has gone ``clean_seconds`` without any event
    (``decays_at``: the caller compares it with the time).
    """
    return limit_of(IP, ip, [(e, counts, ip) for e, counts in events], clean_seconds)


def limit_of(scope: str, subject: str, events: Sequence[tuple[EventLike, bool, str]],
             clean_seconds: float) -> LearnedLimit | None:
    """:func:`ip_limit` for any scope: events as ``(event, counts_as_evidence, ip)``."""
    times = [e.time for e, _, _ in events]
    start = streak_start(times, clean_seconds)
    if start is None:
        return None
    proof = tuple(Evidence(e.time, ip, e.agent_id, e.kind, e.starts_last_hour, e.account)
                  for e, counts, ip in events if counts and e.time >= start)
    if not proof:
        return None
    last = times[-1]
    return LearnedLimit(scope, subject, min(p.cap for p in proof), proof, last,
                        last + clean_seconds)


def mesh_limit(limits: Iterable[LearnedLimit], quorum: int, now: float
               ) -> LearnedLimit | None:
    """The limit every IP is held to: ``quorum`` IPs with a live limit of their own, and the
    ``quorum``-th lowest of their figures (the rate at least ``quorum`` IPs were refused
    at). It lives while ``quorum`` of them do."""
    live = sorted((lim for lim in limits if lim.decays_at > now),
                  key=lambda lim: (lim.hourly_cap, lim.subject))
    if quorum < 1 or len(live) < quorum:
        return None
    cap = live[quorum - 1].hourly_cap
    agreeing = live[:quorum]
    # It fades when the quorum does: with the (quorum)-th latest decay among all live
    # limits at or below the cap gone, fewer than quorum IPs still agree.
    at_or_below = sorted((lim.decays_at for lim in live if lim.hourly_cap <= cap), reverse=True)
    decays_at = at_or_below[quorum - 1]
    evidence = tuple(sorted((e for lim in agreeing for e in lim.evidence), key=lambda e: e.time))
    return LearnedLimit(MESH, "*", cap, evidence, max(lim.last_event for lim in agreeing),
                        decays_at)
