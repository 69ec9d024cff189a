"""When to submit a recording, and what each outcome leads to (pure, fake-clock tested).

States (``recordings.submit_state``)::

    waiting --(all parts uploaded, session ended, settled; auto_submit or asked)--> queued
    queued --(an agent with the submit capability; write first)--> submitting (attempt n)
    submitting --SubmitResult ok--> submitted (aid, bvid)
    submitting --risk control--> queued (that IP excluded; retry later)
    submitting --account throttle (21566, 137022)--> queued (until the account may submit)
    submitting --account penalty (21515, 21590)--> queued (held until an admin releases
                                                   the account)
    submitting --auth / bad request--> failed (an admin's submit request re-queues it)
    submitting --network / agent lost / hub restart / no answer--> unknown
    unknown --(after unknown_wait)--> queued

Never twice: ``submitting`` is written before Submit is sent, so a crash leaves
it on disk; every attempt after the first (``attempt > 1``) makes the agent look
for an archive with these parts before it submits (``spoke/submitter.py``), and
``unknown`` waits long enough for a lost in-flight request to have landed. An
account-level refusal is a definite "no archive" from Bilibili, so the recording
is simply queued again; the account ledger (hub/core/account_risk.py) says when
the account may try, and the next attempt still looks for the archive first.

After the archive exists the same states carry the work left on it, one
operation at a time (:func:`next_operation`)::

    submitted --(parts it lacks, all uploaded and settled; or a collection to join)--> queued
    queued --> submitting (append | season) --> submitted | queued | unknown | ...

An append is safe to repeat (the agent views the archive and adds only what it
lacks), so it needs no lookup of its own; it keeps the rule that matters: one
operation in flight per archive, and a lost one retried only after the agent's
deadline, because two edits built from the same view would each drop the
other's videos. Whatever an add or append carries (``submit_parts``) stays the
same across attempts until one succeeds: a retried add must look for exactly the
archive the lost attempt may have made, whatever parts arrived since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WAITING, QUEUED, SUBMITTING, SUBMITTED, UNKNOWN, FAILED = (
    "waiting", "queued", "submitting", "submitted", "unknown", "failed")

SUBMIT_TIMEOUT = 300.0  # no SubmitResult this long after sending: outcome unknown

ADD, APPEND, SEASON = "add", "append", "season"
SEASON_PENDING, SEASON_ADDED, SEASON_FAILED = "pending", "added", "failed"
TOO_MANY_PARTS = "too_many_parts"  # uploader.errors.ArchiveProblem: 21058

RISK_CONTROL = "risk_control"
ACCOUNT_THROTTLE = "account_throttle"
ACCOUNT_PENALTY = "account_penalty"
ACCOUNT_KINDS = frozenset({ACCOUNT_THROTTLE, ACCOUNT_PENALTY})
RETRYABLE = frozenset({"agent", "cancelled"})  # the agent never sent it: plain retry
FATAL = frozenset({"auth", "bad_request", "file"})


@dataclass(frozen=True)
class Timing:
    settle_seconds: float
    unknown_wait_seconds: float
    retry_seconds: float
    exclude_seconds: float  # a risk-control IP is not used for this recording this long
    submit_timeout: float = SUBMIT_TIMEOUT
    agent_deadline: float = 90.0  # the agent abandons a Submit this long after receiving it


def readiness(recording: dict[str, Any], parts: list[dict[str, Any]], now: float,
              timing: Timing) -> str:
    """``""`` when the recording may be submitted now, else why not (for the API)."""
    if not parts:
        return "no parts yet"
    if recording.get("ended_at") is None:
        return "live session not ended"
    bad = [p for p in parts if p.get("upload_state") in ("failed", "cancelled")]
    if bad:
        return f"{len(bad)} part(s) failed to upload"
    waiting = [p for p in parts if p.get("upload_state") != "uploaded" or not p.get("filename")]
    if waiting:
        return f"{len(waiting)} of {len(parts)} part(s) still uploading"
    # Counted from the last change the hub recorded (its own clock), never from the
    # recorder's event times: a recorder whose clock runs hours ahead must not delay
    # the submission by as many hours. Those times only feed titles and templates.
    settle_from = float(recording.get("updated_at") or 0)
    if now < settle_from + timing.settle_seconds:
        return "settling"
    return ""


def decide(recording: dict[str, Any], ready: bool, auto_submit: bool, now: float,
           timing: Timing) -> dict[str, Any] | None:
    """The update a tick makes without an agent's answer (None: nothing to do).

    ``queued`` with ``submit_not_before`` passed is left alone here: sending is the
    manager's job (it needs an agent); see :func:`sending`.
    """
    state = recording["submit_state"]
    if state == WAITING and ready and (auto_submit or recording.get("submit_requested")):
        return {"submit_state": QUEUED, "submit_not_before": now, "submit_error": ""}
    if state == SUBMITTING:
        sent = float(recording.get("submit_sent_at") or 0)
        if now - sent > timing.submit_timeout:
            return lost("no answer to Submit", now, timing, sent)
    if state == UNKNOWN and now >= float(recording.get("submit_not_before") or 0):
        return {"submit_state": QUEUED, "submit_not_before": now}
    return None


def sending(recording: dict[str, Any], submit_id: str, agent_id: str, ip: str,
            now: float, operation: str = ADD, part_ids: list[int] | None = None
            ) -> dict[str, Any]:  # fmt: skip
    """Written before Submit goes out: attempt n of ``operation`` is in flight with this
    agent, carrying ``part_ids``."""
    update = {"submit_state": SUBMITTING, "submit_attempt": int(recording["submit_attempt"]) + 1,
              "submit_id": submit_id, "submit_agent": agent_id, "submit_ip": ip,
              "submit_sent_at": now, "submit_error": "", "submit_op": operation,
              "submit_parts": list(part_ids or [])}
    if operation == ADD and not recording.get("submit_first_at"):
        update["submit_first_at"] = now
    return update


def lost(reason: str, now: float, timing: Timing, sent_at: float = 0.0) -> dict[str, Any]:
    """The in-flight attempt's outcome is unknown (agent lost, hub restarted).

    The agent may still be running it (it sees a Submit through whatever its stream
    does, up to its deadline), so the next attempt, whose archive lookup decides
    whether to submit again, waits until that deadline has passed, plus the margin.
    """
    settled = max(now, sent_at + timing.agent_deadline)
    return {"submit_state": UNKNOWN, "submit_not_before": settled + timing.unknown_wait_seconds,
            "submit_error": f"outcome unknown: {reason}"}


def result(recording: dict[str, Any], success: bool, aid: int, bvid: str, error_kind: str,
           error_message: str, now: float, timing: Timing, *, problem: str = "",
           account_until: float | None = None) -> dict[str, Any]:
    """What a SubmitResult for the current attempt means.

    Two refusals are not the end of a recording: more parts than Bilibili takes in
    one request (``too_many_parts``) halves the batch and tries again, and a
    collection that cannot be joined leaves the archive submitted, the reason kept.
    ``account_until``: after an account-level refusal, when the account ledger lets
    the account submit again (None: it is penalised, and holds the recording itself).
    """
    operation = recording.get("submit_op") or ADD
    if success:
        update = {"submit_state": SUBMITTED, "aid": int(aid) or recording.get("aid"),
                  "bvid": bvid or recording.get("bvid") or "", "submit_error": "",
                  "submit_parts": []}
        if operation == SEASON:
            update.update(season_state=SEASON_ADDED, season_error="")
        return update
    message = f"{error_kind}: {error_message}"[:1000]
    if error_kind in ACCOUNT_KINDS:
        # Refused for the account, whatever the IP: no archive was made. Queued again
        # for when the account may submit; any agent then.
        when = account_until if account_until is not None else now + timing.retry_seconds
        return {"submit_state": QUEUED, "submit_not_before": when, "submit_error": message}
    if problem == TOO_MANY_PARTS and operation in (ADD, APPEND):
        batch = len(recording.get("submit_parts") or []) // 2
        if batch >= 1:  # refused whole: nothing was created or added
            return {"submit_state": QUEUED, "submit_not_before": now, "submit_batch": batch,
                    "submit_parts": [], "submit_error": message}
    if operation == SEASON and error_kind in FATAL:
        return {"submit_state": SUBMITTED, "season_state": SEASON_FAILED,
                "season_error": message, "submit_error": ""}
    if error_kind == RISK_CONTROL:
        excluded = dict(recording.get("submit_excluded_ips") or {})
        ip = recording.get("submit_ip") or ""
        if ip:
            excluded[ip] = now + timing.exclude_seconds
        return {"submit_state": QUEUED, "submit_not_before": now + timing.retry_seconds,
                "submit_excluded_ips": excluded, "submit_error": message}
    if error_kind in FATAL:
        return {"submit_state": FAILED, "submit_requested": 0, "submit_error": message}
    if error_kind in RETRYABLE:
        return {"submit_state": QUEUED, "submit_not_before": now + timing.retry_seconds,
                "submit_error": message}
    # network and anything else: the request may have reached Bilibili
    return {"submit_state": UNKNOWN, "submit_not_before": now + timing.unknown_wait_seconds,
            "submit_error": message}


def requested(recording: dict[str, Any]) -> dict[str, Any]:
    """An admin asked to submit: a failed recording is re-queued, others just flagged; a
    submitted one whose collection could not be joined tries the collection again."""
    if recording["submit_state"] == SUBMITTED:
        if recording.get("season_state") == SEASON_FAILED:
            return {"season_state": SEASON_PENDING, "season_error": ""}
        return {}
    update: dict[str, Any] = {"submit_requested": 1}
    if recording["submit_state"] == FAILED:
        update.update(submit_state=WAITING, submit_error="")
    return update


# -- the archive's later life --------------------------------------------------------------


def work_left(recording: dict[str, Any], parts: list[dict[str, Any]], now: float,
              timing: Timing) -> str:
    """What a submitted archive still needs (``""``: nothing now): ``append`` when parts
    it lacks (``archived`` 0) are all uploaded and settled, else ``season`` when a
    collection waits. A part kept out of the archive (``archived`` -1: it arrived
    after the submission while appending was off) needs nothing."""
    if recording["submit_state"] != SUBMITTED:
        return ""
    if any(p.get("archived") == 0 for p in parts) \
            and readiness(recording, parts, now, timing) == "":
        return APPEND
    if recording.get("season_state") == SEASON_PENDING:
        return SEASON
    return ""


def follow_up(recording: dict[str, Any], work: str, now: float) -> dict[str, Any] | None:
    """A submitted archive with ``work`` left goes back to the queue, to be sent as one
    operation like a submission (None: nothing to do)."""
    if recording["submit_state"] != SUBMITTED or not work:
        return None
    return {"submit_state": QUEUED, "submit_not_before": now, "submit_error": ""}


def next_operation(recording: dict[str, Any], parts: list[dict[str, Any]], *,
                   parts_per_request: int) -> tuple[str, list[int]] | None:
    """The operation a queued recording sends now and the part ids it carries.

    No archive yet: ``add`` with the first batch of uploaded parts (the same parts
    as the attempt before, while none has succeeded). An archive that lacks
    parts: ``append`` of the next batch. Then ``season``. None: nothing to send.
    """
    batch = int(recording.get("submit_batch") or 0) or parts_per_request
    carried = [int(p) for p in recording.get("submit_parts") or []]
    uploaded = [p for p in parts if p.get("upload_state") == "uploaded" and p.get("filename")
                and p.get("archived") != -1]
    if not recording.get("aid"):
        return ADD, carried or [int(p["part_id"]) for p in uploaded[:batch]]
    missing = [int(p["part_id"]) for p in uploaded if p.get("archived") == 0]
    if missing:
        return APPEND, [p for p in carried if p in missing] or missing[:batch]
    if recording.get("season_state") == SEASON_PENDING:
        return SEASON, []
    return None
