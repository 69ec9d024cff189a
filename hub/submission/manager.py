"""Drives submissions: picks the agent, writes, sends Submit, applies SubmitResult.

The decisions are :mod:`hub.submission.machine`'s; this module does the IO in
the order the hub always keeps: write the state, then act. A submission goes
out only while its account may submit (the account ledger: gaps, caps, a
throttle's wait, a penalty); then the agent chosen is the one that uploaded
most of the recording's parts (its IP already spoke to Bilibili for this
account), if it is online, announced ``Capabilities.submit``, may use the
recording's account (``allowed_accounts``) and its egress IP is neither excluded
for this recording (a risk-control answer) nor cooling/disabled in the risk
ledger; else any such agent. A Submit carries only what its operation needs of
the account (:func:`submit_credentials`).

Hooks the hub calls (:class:`hub.core.ports.Submissions`): ``on_hello``
(capability), ``on_result`` (``AgentMessage.submit_result``) and ``poke``;
agent loss is noticed by the tick (the session that carried the Submit is gone).

The same loop carries the archive's later life (:func:`machine.next_operation`):
the batches of a long recording and late parts are appended, the archive joins
its collection; those Submits, like one with a cover, go only to agents that
announced ``Capabilities.archive_operations``. Review states are read by
:class:`hub.submission.reviews.ReviewPoller`, whose answers come back through
``on_result`` too.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.to_thread
import msgspec

from hub.config import HubConfig, SubmissionSettings
from hub.core import account_risk
from hub.core.account_keys import AccountKeys
from hub.core.account_risk import AccountLedger
from hub.core.errors import Conflict, NotFound, StorageFull
from hub.core.ports import Accounts
from hub.core.registry import Registry
from hub.core.risk import RiskLedger
from hub.core.state import HubState
from hub.store.recordings import RecordingStore
from hub.submission import machine as m
from hub.submission.covers import cover_for
from hub.submission.reviews import ReviewPoller
from hub.submission.settings import build_submission, room_settings
from protocol import mesh_pb2 as pb
from uploader.credentials import Credentials
from uploader.submit import Submission

log = logging.getLogger("bupmesh.hub.submission")

TICK_SECONDS = 1.0
BAD_IP_STATES = frozenset({"cooling", "disabled"})


class Hub(Protocol):
    """What of the hub a submission needs: agents, their IPs' and accounts' standing,
    credentials, and the state whose lock and store keep the ledgers."""

    config: HubConfig
    registry: Registry
    ledger: RiskLedger
    account_ledger: AccountLedger
    accounts: Accounts
    state: HubState


class SubmissionManager:
    def __init__(self, hub: Hub, recordings: RecordingStore, *,
                 clock: Callable[[], float]) -> None:
        self.hub = hub
        self.recordings = recordings
        self.clock = clock
        cfg = hub.config
        self.timing = m.Timing(
            settle_seconds=cfg.submission.settle_seconds,
            unknown_wait_seconds=cfg.submission.unknown_wait_seconds,
            retry_seconds=cfg.submission.retry_seconds,
            exclude_seconds=cfg.risk.cooldown_seconds,
            agent_deadline=cfg.submission.agent_deadline_seconds,
        )
        self.capable: dict[str, str] = {}  # agent id -> session id that announced submit
        self.archive_capable: dict[str, str] = {}  # ... that announced archive_operations
        self.keys = AccountKeys(hub.accounts, clock)
        self._held: dict[int, str] = {}  # recording id -> why it is not sent now
        self._inflight: dict[int, Any] = {}  # recording id -> session carrying its Submit
        # Why each waiting recording waits, as last shown: a change (a part uploaded)
        # writes nothing, so the live view is told here.
        self._waiting_for: dict[int, str] = {}
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self.reviews = ReviewPoller(self, recordings, clock=clock)
        self._unstored: list[tuple[Any, pb.SubmitResult]] = []  # results met a full disk

    # -- hooks ----------------------------------------------------------------------------

    def on_hello(self, session: Any, hello: pb.Hello) -> None:
        for table, capable in ((self.capable, hello.capabilities.submit),
                               (self.archive_capable, hello.capabilities.submit
                                and hello.capabilities.archive_operations)):
            if capable:
                table[session.agent_id] = session.session_id
            else:
                table.pop(session.agent_id, None)
        self.poke()

    def poke(self) -> None:
        self._wake.set()

    async def on_result(self, session: Any, msg: pb.SubmitResult) -> None:
        if self.reviews.owns(msg.submit_id):
            await self.reviews.on_result(session, msg)
            return
        try:
            await self._apply_result(session, msg)
        except StorageFull as exc:
            # The archive exists (or the attempt failed) whether or not the hub can write
            # it down now: keep the answer and apply it once space returns, before the
            # recording could be taken for lost and submitted again.
            self._unstored.append((session, msg))
            log.warning("recording with Submit %s: result kept until the data directory "
                        "has room: %s", msg.submit_id, exc)

    async def _apply_result(self, session: Any, msg: pb.SubmitResult) -> None:
        async with self._lock:
            rec = await self.recordings.with_submit_id(msg.submit_id)
            if rec is None or rec["submit_state"] not in (m.SUBMITTING, m.UNKNOWN) \
                    or rec["submit_attempt"] != msg.attempt or rec["submit_agent"] != \
                    session.agent_id:
                log.info("agent %s: ignoring SubmitResult for %s attempt %d (not current)",
                         session.agent_id, msg.submit_id, msg.attempt)
                return
            now = self.clock()
            account_until = await self._account_answer(rec, session.agent_id, msg, now)
            update = m.result(rec, msg.success, msg.aid, msg.bvid, msg.error_kind,
                              msg.error_message, now, self.timing, problem=msg.problem,
                              account_until=account_until)
            operation = rec["submit_op"] or m.ADD
            archived: list[int] = []
            if msg.success and operation in (m.ADD, m.APPEND):
                archived = list(rec["submit_parts"])
                if operation == m.ADD and room_settings(self.hub.config,
                                                        rec["room_id"]).season_id:
                    update["season_state"] = m.SEASON_PENDING
            await self.recordings.update_submission(rec["id"], archived=archived, **update)
            self._inflight.pop(rec["id"], None)
            if msg.success and operation in (m.ADD, m.APPEND):
                # A new archive, or one an edit may have changed (this one, or a lost
                # attempt before it that added what this one found): Bilibili reviews it
                # again, and "approved" must not outlive the edit.
                await self.reviews.under_review(rec["id"], int(update["aid"]))
        if msg.success:
            log.info("recording %d: %s by %s done: aid %d, %s%s", rec["id"], operation,
                     session.agent_id, update["aid"], update["bvid"],
                     f" (+{len(msg.added)} video(s), {msg.videos} in all)"
                     if operation == m.APPEND else "")
        else:
            log.warning("recording %d: submit attempt %d on %s: %s: %s -> %s", rec["id"],
                        msg.attempt, session.agent_id, msg.error_kind, msg.error_message,
                        update["submit_state"])
        self.poke()

    async def _account_answer(self, rec: dict[str, Any], agent_id: str, msg: pb.SubmitResult,
                              now: float) -> float | None:
        """What the answer teaches the ledgers; for an account throttle, when the account
        may submit again."""
        state, hub = self.hub.state, self.hub
        account = await self.keys.key(rec["account"])
        ip = rec["submit_ip"] or "unknown"
        code = int(msg.error_code)
        retry_after = float(msg.retry_after_seconds) or None
        message = msg.error_message[:200]
        until: float | None = None
        async with state.lock:
            if msg.success:
                hub.account_ledger.submit_accepted(account, now)
            elif msg.error_kind == m.ACCOUNT_THROTTLE:
                until = hub.account_ledger.throttled(
                    account, now, what=account_risk.SUBMIT, code=code,
                    retry_after=retry_after if retry_after and retry_after < 1e9 else None,
                    ip=ip, agent_id=agent_id, message=message)
                state.counters.account_event(msg.error_kind)
                log.warning("recording %d: account %s throttled (%s); may submit again at "
                            "%.0f", rec["id"], account, message, until)
            elif msg.error_kind == m.ACCOUNT_PENALTY:
                hub.account_ledger.penalised(account, now, what=account_risk.SUBMIT, code=code,
                                             ip=ip, agent_id=agent_id, message=message)
                state.counters.account_event(msg.error_kind)
                log.error("recording %d: account %s penalised (%s): submissions and uploads "
                          "stop until an admin releases it", rec["id"], account, message)
            elif msg.error_kind == m.RISK_CONTROL:
                hub.ledger.risk_event(ip, agent_id, str(code or 21540), now, account=account,
                                      voucher=msg.voucher[:200])
                if msg.voucher:
                    state.captchas.raised(msg.voucher[:200], ip=ip, account=account,
                                          agent_id=agent_id, now=now)
            else:
                return None
            await state.save_ledger()
        return until

    # -- admin ----------------------------------------------------------------------------

    async def request(self, recording_id: int) -> dict[str, Any]:
        async with self._lock:
            rec = await self.recordings.get(recording_id)
            if rec is None:
                raise NotFound(f"no recording {recording_id}")
            update = m.requested(rec)
            if not update:
                raise Conflict(f"recording {recording_id} is already submitted as {rec['bvid']}")
            await self.recordings.update_submission(recording_id, **update)
        self.poke()
        return await self.describe(recording_id)

    async def describe(self, recording_id: int) -> dict[str, Any]:
        rec = await self.recordings.get(recording_id)
        if rec is None:
            raise NotFound(f"no recording {recording_id}")
        review = (await self.recordings.reviews()).get(recording_id)
        return self._public(rec, await self.recordings.parts(recording_id), review)

    async def list(self, *, newest: int | None = None) -> list[dict[str, Any]]:
        """Recordings as the API shows them, oldest first; ``newest``: only that many of
        the latest (the live view's, whatever the length of the history)."""
        reviews = await self.recordings.reviews()
        return [self._public(r, await self.recordings.parts(r["id"]), reviews.get(r["id"]))
                for r in await self.recordings.list(newest=newest)]

    def _public(self, rec: dict[str, Any], parts: list[dict[str, Any]],
                review: dict[str, Any] | None = None) -> dict[str, Any]:
        waiting_for = m.readiness(rec, parts, self.clock(), self.timing) \
            if rec["submit_state"] == m.WAITING else ""
        if rec["submit_state"] == m.QUEUED:
            waiting_for = self._queued_reason(rec)
        return {**self._public_submission(rec, parts, waiting_for),
                **archive_view(rec, parts, review)}

    def _public_submission(self, rec: dict[str, Any], parts: list[dict[str, Any]],
                           waiting_for: str) -> dict[str, Any]:
        return {
            "recording_id": rec["id"], "source": rec["source"], "room_id": rec["room_id"],
            "streamer": rec["streamer"], "title": rec["title"],
            "area": rec["area_child"] or rec["area_parent"],
            "started_at": rec["started_at"], "ended_at": rec["ended_at"],
            "account": rec["account"], "state": rec["submit_state"],
            "waiting_for": waiting_for, "submit_requested": bool(rec["submit_requested"]),
            "submit_attempt": rec["submit_attempt"], "submit_agent": rec["submit_agent"],
            "error_message": rec["submit_error"], "aid": rec["aid"], "bvid": rec["bvid"],
            "parts": [{"index": n, "part_id": p["part_id"], "path": p["path"],
                       "size": p["size"], "md5": p["md5"], "digest": p["digest"],
                       "upload_state": p["upload_state"],
                       "filename": p["filename"], "biz_id": p["biz_id"],
                       "task_id": p["task_id"], "agent_id": p["agent_id"],
                       "started_at": p["started_at"], "ended_at": p["ended_at"],
                       "archived": p["archived"]}
                      for n, p in enumerate(parts, start=1)],
        }

    def _account_holds(self, account: str, operation: str, now: float) -> str:
        """Why the account may not do ``operation`` now ("" = it may). A new archive is
        paced per account (gaps, caps, a throttle's wait); an edit of an existing one
        (append, collection) waits only for a penalised account."""
        ledger = self.hub.account_ledger
        fit, reason = ledger.submit_fit(account, now)
        if fit or (operation != m.ADD and ledger.state(account, now) != account_risk.PENALISED):
            return ""
        return reason

    def _queued_reason(self, rec: dict[str, Any]) -> str:
        """Why a queued recording is not being submitted now ("" = it is about to be)."""
        now = self.clock()
        account = self.keys.cached(rec["account"])
        if account is not None:
            fit, reason = self.hub.account_ledger.submit_fit(account, now)
            if not fit:
                return reason
        not_before = float(rec.get("submit_not_before") or 0)
        if now < not_before:
            return f"next try in {not_before - now:.0f} s"
        return self._held.get(rec["id"], "")

    # -- loop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """After a restart no Submit is in flight any more: those are outcome unknown.

        (On a full data directory a recording stays ``submitting`` here; the first tick
        after space returns finds no Submit in flight for it and marks it the same way.)
        """
        now = self.clock()
        for rec in await self.recordings.in_state(m.SUBMITTING):
            try:
                await self.recordings.update_submission(
                    rec["id"], **m.lost("hub restarted", now, self.timing,
                                   float(rec.get("submit_sent_at") or 0)))
            except StorageFull:
                continue
            log.warning("recording %d: submit attempt %d outcome unknown after a restart; "
                        "will check for the archive before submitting again", rec["id"],
                        rec["submit_attempt"])

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad recording must not stop submissions for all
                log.exception("submission pass failed")
            with anyio.move_on_after(TICK_SECONDS):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def tick(self) -> None:
        space = getattr(self.hub, "space", None)
        if space is not None and space.raised:
            return  # every step writes before it acts: nothing can move until space returns
        unstored, self._unstored = self._unstored, []
        for session, msg in unstored:
            await self.on_result(session, msg)
        async with self._lock:
            now = self.clock()
            for rec in await self.recordings.open_work():
                await self._step(rec, now)

    async def _step(self, rec: dict[str, Any], now: float) -> None:
        settings = room_settings(self.hub.config, rec["room_id"])
        if rec["submit_state"] == m.SUBMITTING:
            session = self._inflight.get(rec["id"])
            info = self.hub.registry.get(rec["submit_agent"])
            if session is None or info is None or info.session is not session:
                update = m.lost(f"agent {rec['submit_agent']} lost", now, self.timing,
                                float(rec.get("submit_sent_at") or 0))
                await self.recordings.update_submission(rec["id"], **update)
                self._inflight.pop(rec["id"], None)
                log.warning("recording %d: agent %s lost with Submit attempt %d in flight",
                            rec["id"], rec["submit_agent"], rec["submit_attempt"])
                return
        parts: list[dict[str, Any]] = []
        ready = False
        if rec["submit_state"] == m.WAITING:
            parts = await self.recordings.parts(rec["id"])
            why = m.readiness(rec, parts, now, self.timing)
            ready = why == ""
            if self._waiting_for.get(rec["id"]) != why:
                self._waiting_for[rec["id"]] = why
                self.recordings.notify(rec["id"])
        else:
            self._waiting_for.pop(rec["id"], None)
        update = m.decide(rec, ready, settings.auto_submit, now, self.timing)
        if rec["submit_state"] == m.SUBMITTED:
            parts = await self.recordings.parts(rec["id"])
            update = m.follow_up(rec, m.work_left(rec, parts, now, self.timing), now)
        if update is not None:
            await self.recordings.update_submission(rec["id"], **update)
            rec = {**rec, **update}
            if update.get("submit_state") == m.UNKNOWN:
                self._inflight.pop(rec["id"], None)
        if rec["submit_state"] == m.QUEUED and now >= float(rec["submit_not_before"] or 0):
            await self._send(rec, settings, parts or await self.recordings.parts(rec["id"]), now)

    def choose_reader(self, recs: list[dict[str, Any]], now: float,
                      account_names: tuple[str, ...] | None = None) -> Any:
        """An agent to read these archives' review states: one that submitted them first."""
        prefer = [r["submit_agent"] for r in recs if r["submit_agent"]]
        return self._choose({"submit_excluded_ips": {}}, [], now, archive_ops=True,
                            prefer=prefer, account_names=account_names)

    async def account_names(self, account: str | None) -> tuple[str, ...]:
        """Every name the account goes by (name, id), to match agents' allowlists."""
        try:
            row = await self.hub.accounts.resolve(account)
        except Exception:  # no such account: the send fails on its credentials
            return (account,) if account else ()
        return str(row["name"]), str(row["account_id"])

    def _choose(self, rec: dict[str, Any], parts: list[dict[str, Any]], now: float, *,
                archive_ops: bool = False, prefer: list[str] | None = None,
                account_names: tuple[str, ...] | None = None) -> Any:
        excluded = {ip for ip, until in (rec["submit_excluded_ips"] or {}).items()
                    if until > now}
        capable = self.archive_capable if archive_ops else self.capable
        prefer = prefer or []

        def usable(agent_id: str) -> Any:
            info = self.hub.registry.get(agent_id)
            if info is None or info.session is None or not info.schedulable:
                return None
            if account_names is not None and not info.may_use(*account_names):
                return None  # it may not carry this account's credentials
            if capable.get(agent_id) != info.session_id:
                return None
            ip = info.risk_ip
            if ip in excluded or self.hub.ledger.state(ip, now) in BAD_IP_STATES:
                return None
            return info

        counts = Counter(p["agent_id"] for p in parts if p.get("agent_id"))
        for agent_id in [*prefer, *(a for a, _n in counts.most_common())]:
            info = usable(agent_id)
            if info is not None:
                return info
        for agent_id in sorted(capable):
            info = usable(agent_id)
            if info is not None:
                return info
        return None

    async def _send(self, rec: dict[str, Any], settings: SubmissionSettings,
                    parts: list[dict[str, Any]], now: float) -> None:
        choice = m.next_operation(rec, parts, parts_per_request=settings.parts_per_request)
        if choice is None or (choice[0] == m.SEASON and not settings.season_id):
            # Nothing left (the collection setting was removed meanwhile): back to rest.
            await self.recordings.update_submission(
                rec["id"], submit_state=m.SUBMITTED,
                **({"season_state": ""} if rec["season_state"] == m.SEASON_PENDING else {}))
            return
        operation, part_ids = choice
        if not part_ids and operation != m.SEASON:
            return  # nothing uploaded to carry yet; the next tick looks again
        account = await self.keys.key(rec["account"])
        held = self._account_holds(account, operation, now)
        if held:
            self._held[rec["id"]] = held
            return  # the account may not do this now, from any IP; the next tick looks again
        with_cover = operation == m.ADD and bool(settings.cover)
        info = self._choose(rec, parts, now, archive_ops=operation != m.ADD or with_cover,
                            account_names=await self.account_names(rec["account"]))
        if info is None:
            self._held[rec["id"]] = "no agent that may submit is online"
            return  # no agent may submit now; the next tick looks again
        self._held.pop(rec["id"], None)
        try:
            creds = await self.hub.accounts.credentials(rec["account"])
            submission = build_submission(settings, rec, parts, now=now)
            cover = await anyio.to_thread.run_sync(cover_for, settings.cover, rec, parts) \
                if with_cover else None
        except Exception as exc:  # no such account, bad template data, unusable cover, dtime
            await self.recordings.update_submission(
                rec["id"], submit_state=m.FAILED, submit_requested=0,
                submit_error=f"cannot submit: {exc}")
            log.warning("recording %d: cannot submit: %s", rec["id"], exc)
            return
        submission = carrying(submission, parts, part_ids if operation != m.SEASON
                              else [int(parts[0]["part_id"])] if parts else [])
        api = settings.api
        if api == "auto":
            api = "web" if creds.cookies.get("bili_jct") else "app"
        submit_id = f"sub-{uuid.uuid4().hex[:16]}"
        update = m.sending(rec, submit_id, info.agent_id, info.risk_ip, now,
                           operation, part_ids)
        await self.recordings.update_submission(rec["id"], **update)  # write, then act
        if operation == m.ADD:  # a new archive is what Bilibili paces per account
            async with self.hub.state.lock:
                self.hub.account_ledger.submit_sent(account, now)
                await self.hub.state.save_ledger()
        self._inflight[rec["id"]] = info.session
        info.session.send(pb.HubMessage(submit=pb.Submit(
            submit_id=submit_id, attempt=update["submit_attempt"],
            credentials=submit_credentials(creds, api, operation,
                                           attempt=update["submit_attempt"],
                                           cover=bool(cover)),
            member_url=self.hub.config.bilibili.member_url, api=api,
            submission=msgspec.json.encode(submission),
            deadline_seconds=self.timing.agent_deadline, sent_at_unix=now,
            operation=operation, aid=int(rec["aid"] or 0), cover=cover or b"",
            season_id=settings.season_id if operation == m.SEASON else 0,
            section_id=settings.section_id if operation == m.SEASON else 0,
            since_unix=float(update.get("submit_first_at") or rec["submit_first_at"] or now),
            parts_per_request=settings.parts_per_request)))
        log.info("recording %d: Submit attempt %d (%s, %s) sent to %s: %r with %d part(s)%s",
                 rec["id"], update["submit_attempt"], operation, submit_id, info.agent_id,
                 submission.title, len(submission.videos),
                 f" and a {len(cover)}-byte cover" if cover else "")


def carrying(submission: Submission, parts: list[dict[str, Any]], part_ids: list[int]
             ) -> Submission:  # fmt: skip
    """``submission`` with only the videos of ``part_ids``, numbered as among all parts."""
    videos = dict(zip((int(p["part_id"]) for p in parts), submission.videos, strict=True))
    return msgspec.structs.replace(submission, videos=[videos[i] for i in part_ids
                                                       if i in videos])


def archive_view(rec: dict[str, Any], parts: list[dict[str, Any]],
                 review: dict[str, Any] | None) -> dict[str, Any]:
    """The archive side of a recording for the API: link, operation, collection, review."""
    return {
        "archive_url": f"https://www.bilibili.com/video/{rec['bvid']}" if rec["bvid"] else "",
        "operation": rec["submit_op"] if rec["submit_state"] != m.SUBMITTED else "",
        "parts_archived": sum(1 for p in parts if p["archived"] == 1
                              or (p["archived"] is None and rec["aid"])),
        "parts_kept_out": sum(1 for p in parts if p["archived"] == -1),
        "season": {"state": rec["season_state"], "error": rec["season_error"]},
        "review": {"state": review["review"], "reason": review["reason"],
                   "state_code": review["state"], "state_desc": review["state_desc"],
                   "checked_at": review["checked_at"], "changed_at": review["changed_at"]}
        if review else {"state": "", "reason": ""},
    }


def submit_credentials(creds: Credentials, api: str, operation: str, *, attempt: int = 1,
                       cover: bool = False) -> pb.BiliCredentials:
    """What a Submit carries of its account: only what the agent will use.

    The app access key goes only with an app submission of a new archive (app/add);
    everything else is the web API, on the cookies (bili_jct is its csrf): web
    submissions, cover uploads, the archive lookup a later attempt starts with, and
    appends, collections and review reads. So a first app submission without a
    cover carries the access key alone, and no Submit carries both unless it needs both.
    """
    app_add = api == "app" and operation == m.ADD
    cookies = "" if app_add and attempt <= 1 and not cover else creds.cookie_header()
    return pb.BiliCredentials(cookies=cookies,
                              access_key=(creds.access_key or "") if app_add else "",
                              mid=int(creds.mid or 0))
