"""Review, simulated: an archive waits, then is approved or rejected, computed when asked.

Each archive keeps ``review = {"due", "outcome", "reason"}``, set from
``archive.review`` in the config when it is submitted or edited (an edit sends
it back to review, as Bilibili re-reviews an edited archive) and overridable
per archive through ``POST /_sim/archives/{aid}/review``. Nothing runs in the
background: the state is a pure function of the record and the clock, so a
test waits on a condition, never on a timer of ours.
"""

from __future__ import annotations

from typing import Any

from uploader.sim.config import ReviewConfig
from uploader.sim.facts import (
    STATE_DESCS,
    STATE_OPEN,
    STATE_REJECTED,
    STATE_SCHEDULED,
    STATE_SUBMITTED,
)

OUTCOMES = ("approve", "reject", "pending")


def scheduled(config: ReviewConfig, now: float) -> dict[str, Any]:
    """The review a newly submitted or edited archive gets."""
    return {"due": now + config.delay_seconds, "outcome": config.outcome, "reason": config.reason}


def status(record: dict[str, Any], now: float, reason_field: str) -> dict[str, Any]:
    """``{"state", "state_desc", "reject_reason", "verdict"}`` of an archive at ``now``.

    ``verdict`` is pending, approved, rejected, or scheduled (approved, its
    ``dtime`` still ahead: state -40, not public yet).
    """
    review = record["review"]
    if review["outcome"] == "pending" or now < review["due"]:
        state, verdict = STATE_SUBMITTED, "pending"
    elif review["outcome"] == "reject":
        state, verdict = STATE_REJECTED, "rejected"
    else:
        dtime = record.get("dtime")
        waiting = bool(dtime) and now < dtime
        state = STATE_SCHEDULED if waiting else STATE_OPEN
        verdict = "scheduled" if waiting else "approved"
    desc = STATE_DESCS.get(state, "")
    reason = review["reason"] if verdict == "rejected" else ""
    if reason_field == "state_desc" and reason:
        desc, reason = reason, ""
    return {"state": state, "state_desc": desc, "reject_reason": reason, "verdict": verdict}
