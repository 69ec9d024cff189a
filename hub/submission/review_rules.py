"""When an archive's review is read, and what an answer changes (pure, fake-clock tested).

An archive is read every ``review_poll_seconds`` while its review is pending
(Bilibili's "scheduled" counts as pending: not public yet) or rejected (a
person may appeal and win); an approved one is final until an edit (an
appended part) sends it back to review. One poll asks about at most
``review_poll_batch`` archives, the longest-waiting first, so a hub with
thousands of archives spends a bounded number of requests per poll.

An answer read before an edit landed says nothing about the edited archive:
it is dropped when the archive was sent back to review after the question left
(:func:`stale`), so "approved" always means the archive as it is now.
"""

from __future__ import annotations

from typing import Any

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
POLLED = frozenset({PENDING, REJECTED})


def due(recordings: list[dict[str, Any]], reviews: dict[int, dict[str, Any]], now: float,
        limit: int) -> list[dict[str, Any]]:
    """The submitted recordings whose archive should be read now, longest-waiting first."""
    waiting = []
    for rec in recordings:
        if rec["submit_state"] != "submitted" or not rec.get("aid"):
            continue
        row = reviews.get(rec["id"])
        if row is not None and (row["review"] not in POLLED or row["next_check_at"] > now):
            continue
        waiting.append((row["next_check_at"] if row else 0.0, rec["id"], rec))
    waiting.sort(key=lambda item: item[:2])
    return [rec for _, _, rec in waiting[:limit]]


def under_review(aid: int, now: float, interval: float) -> dict[str, Any]:
    """A new or edited archive: pending, first read one interval from now."""
    return {"aid": aid, "review": PENDING, "state": None, "state_desc": "", "reason": "",
            "checked_at": None, "changed_at": now, "next_check_at": now + interval,
            "reset_at": now}


def asked(row: dict[str, Any] | None, aid: int, now: float, interval: float
          ) -> dict[str, Any]:  # fmt: skip
    """Written when a question leaves: the next one waits an interval, answered or not."""
    if row is None:
        return {"aid": aid, "review": PENDING, "changed_at": now, "next_check_at": now + interval}
    return {"aid": aid, "next_check_at": now + interval}


def stale(row: dict[str, Any] | None, asked_at: float) -> bool:
    """The archive went back to review after this question was asked."""
    return row is not None and float(row.get("reset_at") or 0) >= asked_at


def answered(row: dict[str, Any] | None, aid: int, review: str, state: int, state_desc: str,
             reason: str, now: float, interval: float) -> dict[str, Any]:
    """The row after an answer; ``changed_at`` moves only when the verdict does."""
    changed = row is None or row["review"] != review
    return {"aid": aid, "review": review, "state": state, "state_desc": state_desc,
            "reason": reason if review == REJECTED else "", "checked_at": now,
            "changed_at": now if changed else row["changed_at"],
            "next_check_at": now + interval}
