"""Drives submissions: picks the agent, writes, sends Submit, applies SubmitResult.

The decisions are :mod:`hub.submission.machine`'s; this module does the IO in
the order the hub always keeps: write the state, then act. The agent chosen is
the one that uploaded most of the recording's parts (its IP already spoke to
Bilibili for this account), if it is online, announced ``Capabilities.submit``,
may use the recording's account (``allowed_accounts``) and its IP is neither
excluded for this recording (a risk-control answer) nor cooling/disabled in the
risk ledger; else any such agent. A Submit carries only what its API needs of
the account: the cookies for ``web``, the access key for ``app``.

Hooks the hub calls (:class:`hub.core.ports.Submissions`): ``on_hello``
(capability), ``on_result`` (``AgentMessage.submit_result``) and ``poke``;
agent loss is noticed by the tick (the session that carried the Submit is gone).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import msgspec

from hub.config import HubConfig
from hub.core.errors import Conflict, NotFound
from hub.core.ports import Accounts
from hub.core.registry import Registry
from hub.core.risk import RiskLedger
from hub.store.recordings import RecordingStore
from hub.submission import machine as m
from hub.submission.settings import build_submission, room_settings
from protocol import mesh_pb2 as pb
from uploader.credentials import Credentials

log = logging.getLogger("bupmesh.hub.submission")

TICK_SECONDS = 1.0
BAD_IP_STATES = frozenset({"cooling", "disabled"})


class LedgerStore(Protocol):
    async def save_ledger(self, snapshot: dict[str, Any]) -> None: ...


class Hub(Protocol):
    """What of the hub a submission needs: agents, their IPs' standing, credentials."""

    config: HubConfig
    registry: Registry
    ledger: RiskLedger
    accounts: Accounts
    store: LedgerStore


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
        self._inflight: dict[int, Any] = {}  # recording id -> session carrying its Submit
        self._lock = anyio.Lock()
        self._wake = anyio.Event()

    async def _account_names(self, account: str | None) -> tuple[str, ...]:
        """Every name the account goes by (name, id), to match agents' allowlists."""
        try:
            row = await self.hub.accounts.resolve(account)
        except Exception:  # no such account: the send fails on its credentials
            return (account,) if account else ()
        return str(row["name"]), str(row["account_id"])

    # -- hooks ----------------------------------------------------------------------------

    def on_hello(self, session: Any, hello: pb.Hello) -> None:
        if hello.capabilities.submit:
            self.capable[session.agent_id] = session.session_id
        else:
            self.capable.pop(session.agent_id, None)
        self.poke()

    def poke(self) -> None:
        self._wake.set()

    async def on_result(self, session: Any, msg: pb.SubmitResult) -> None:
        async with self._lock:
            rec = next((r for r in await self.recordings.list()
                        if r["submit_id"] == msg.submit_id and msg.submit_id), None)
            if rec is None or rec["submit_state"] not in (m.SUBMITTING, m.UNKNOWN) \
                    or rec["submit_attempt"] != msg.attempt or rec["submit_agent"] != \
                    session.agent_id:
                log.info("agent %s: ignoring SubmitResult for %s attempt %d (not current)",
                         session.agent_id, msg.submit_id, msg.attempt)
                return
            now = self.clock()
            update = m.result(rec, msg.success, msg.aid, msg.bvid, msg.error_kind,
                              msg.error_message, now, self.timing)
            await self.recordings.update_submission(rec["id"], **update)
            self._inflight.pop(rec["id"], None)
            if msg.error_kind == m.RISK_CONTROL:
                ip = rec["submit_ip"] or "unknown"
                self.hub.ledger.risk_event(ip, session.agent_id, "21540", now)
                await self.hub.store.save_ledger(self.hub.ledger.snapshot())
        if msg.success:
            log.info("recording %d submitted by %s: aid %d, %s", rec["id"], session.agent_id,
                     msg.aid, msg.bvid)
        else:
            log.warning("recording %d: submit attempt %d on %s: %s: %s -> %s", rec["id"],
                        msg.attempt, session.agent_id, msg.error_kind, msg.error_message,
                        update["submit_state"])
        self.poke()

    # -- admin ----------------------------------------------------------------------------

    async def request(self, recording_id: int) -> dict[str, Any]:
        async with self._lock:
            rec = await self.recordings.get(recording_id)
            if rec is None:
                raise NotFound(f"no recording {recording_id}")
            if rec["submit_state"] == m.SUBMITTED:
                raise Conflict(f"recording {recording_id} is already submitted as {rec['bvid']}")
            await self.recordings.update_submission(recording_id, **m.requested(rec))
        self.poke()
        return await self.describe(recording_id)

    async def describe(self, recording_id: int) -> dict[str, Any]:
        rec = await self.recordings.get(recording_id)
        if rec is None:
            raise NotFound(f"no recording {recording_id}")
        return self._public(rec, await self.recordings.parts(recording_id))

    async def list(self) -> list[dict[str, Any]]:
        return [self._public(r, await self.recordings.parts(r["id"]))
                for r in await self.recordings.list()]

    def _public(self, rec: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
        waiting_for = m.readiness(rec, parts, self.clock(), self.timing) \
            if rec["submit_state"] == m.WAITING else ""
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
                       "size": p["size"], "md5": p["md5"], "upload_state": p["upload_state"],
                       "filename": p["filename"], "biz_id": p["biz_id"],
                       "task_id": p["task_id"], "agent_id": p["agent_id"],
                       "started_at": p["started_at"], "ended_at": p["ended_at"]}
                      for n, p in enumerate(parts, start=1)],
        }

    # -- loop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """After a restart no Submit is in flight any more: those are outcome unknown."""
        now = self.clock()
        for rec in await self.recordings.list():
            if rec["submit_state"] == m.SUBMITTING:
                await self.recordings.update_submission(
                    rec["id"], **m.lost("hub restarted", now, self.timing,
                                   float(rec.get("submit_sent_at") or 0)))
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
        async with self._lock:
            now = self.clock()
            for rec in await self.recordings.list():
                if rec["submit_state"] in (m.SUBMITTED, m.FAILED):
                    continue
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
            ready = m.readiness(rec, parts, now, self.timing) == ""
        update = m.decide(rec, ready, settings.auto_submit, now, self.timing)
        if update is not None:
            await self.recordings.update_submission(rec["id"], **update)
            rec = {**rec, **update}
            if update.get("submit_state") == m.UNKNOWN:
                self._inflight.pop(rec["id"], None)
        if rec["submit_state"] == m.QUEUED and now >= float(rec["submit_not_before"] or 0):
            await self._send(rec, settings, parts or await self.recordings.parts(rec["id"]), now)

    def _choose(self, rec: dict[str, Any], parts: list[dict[str, Any]], now: float,
                account_names: tuple[str, ...]) -> Any:
        excluded = {ip for ip, until in (rec["submit_excluded_ips"] or {}).items()
                    if until > now}

        def usable(agent_id: str) -> Any:
            info = self.hub.registry.get(agent_id)
            if info is None or info.session is None or not info.schedulable:
                return None
            if not info.may_use(*account_names):
                return None
            if self.capable.get(agent_id) != info.session_id:
                return None
            ip = info.ip_address or "unknown"
            if ip in excluded or self.hub.ledger.state(ip, now) in BAD_IP_STATES:
                return None
            return info

        counts = Counter(p["agent_id"] for p in parts if p.get("agent_id"))
        for agent_id, _n in counts.most_common():
            info = usable(agent_id)
            if info is not None:
                return info
        for agent_id in sorted(self.capable):
            info = usable(agent_id)
            if info is not None:
                return info
        return None

    async def _send(self, rec: dict[str, Any], settings: Any, parts: list[dict[str, Any]],
                    now: float) -> None:
        info = self._choose(rec, parts, now, await self._account_names(rec["account"]))
        if info is None:
            return  # no agent may submit now; the next tick looks again
        try:
            creds = await self.hub.accounts.credentials(rec["account"])
            submission = build_submission(settings, rec, parts)
        except Exception as exc:  # no such account, bad template data
            await self.recordings.update_submission(
                rec["id"], submit_state=m.FAILED, submit_requested=0,
                submit_error=f"cannot submit: {exc}")
            log.warning("recording %d: cannot submit: %s", rec["id"], exc)
            return
        api = settings.api
        if api == "auto":
            api = "web" if creds.cookies.get("bili_jct") else "app"
        submit_id = f"sub-{uuid.uuid4().hex[:16]}"
        update = m.sending(rec, submit_id, info.agent_id, info.ip_address or "", now)
        await self.recordings.update_submission(rec["id"], **update)  # write, then act
        self._inflight[rec["id"]] = info.session
        info.session.send(pb.HubMessage(submit=pb.Submit(
            submit_id=submit_id, attempt=update["submit_attempt"],
            credentials=submit_credentials(creds, api),
            member_url=self.hub.config.bilibili.member_url, api=api,
            submission=msgspec.json.encode(submission),
            deadline_seconds=self.timing.agent_deadline, sent_at_unix=now)))
        log.info("recording %d: Submit attempt %d (%s) sent to %s: %r with %d part(s)",
                 rec["id"], update["submit_attempt"], submit_id, info.agent_id,
                 submission.title, len(submission.videos))


def submit_credentials(creds: Credentials, api: str) -> pb.BiliCredentials:
    """What a Submit carries of an account: ``web`` (add/v3) needs the cookies (bili_jct
    is its csrf), ``app`` (app/add) the access key and no cookie."""
    if api == "app":
        return pb.BiliCredentials(access_key=creds.access_key or "", mid=int(creds.mid or 0))
    return pb.BiliCredentials(cookies=creds.cookie_header(), mid=int(creds.mid or 0))
