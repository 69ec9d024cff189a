"""Reading archives' review states through agents, every ``review_poll_seconds``.

The hub never talks to Bilibili's member API itself: a poll is a ``Submit`` with
operation ``review`` to an agent that announced ``archive_operations``
(preferably the one that submitted, whose IP already spoke for the account),
one per account, listing the archives due (:mod:`hub.submission.review_rules`).
The answer comes back as a ``SubmitResult`` with one ``ArchiveReview`` each;
the state is kept in ``archive_reviews`` (``RecordingStore.archive_of`` reads
it for retention), the API and web UI show it, and the alert rules raise one
alert per rejected archive. A lost answer costs nothing but one interval: the
question was marked asked when it left, and reading is safe to repeat.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio

from hub.store.recordings import RecordingStore
from hub.submission import review_rules as rules
from protocol import mesh_pb2 as pb

log = logging.getLogger("bupmesh.hub.submission")

PREFIX = "rev-"
LONGEST_WAKE = 30.0  # the loop looks for due archives at least this often


class ReviewPoller:
    def __init__(self, manager: Any, recordings: RecordingStore, *,
                 clock: Callable[[], float]) -> None:
        self.manager = manager  # SubmissionManager: the hub, agent choice
        self.recordings = recordings
        self.clock = clock
        # question id -> (when asked, aid -> recording id); answered or expired
        self._asked: dict[str, tuple[float, dict[int, int]]] = {}

    @property
    def interval(self) -> float:
        return self.manager.hub.config.submission.review_poll_seconds

    def owns(self, submit_id: str) -> bool:
        return submit_id.startswith(PREFIX)

    async def under_review(self, recording_id: int, aid: int) -> None:
        """A new archive, or one an edit sent back to review."""
        await self.recordings.save_review(
            recording_id, **rules.under_review(aid, self.clock(), self.interval))

    async def on_result(self, session: Any, msg: pb.SubmitResult) -> None:
        entry = self._asked.pop(msg.submit_id, None)
        if entry is None:
            return  # expired, or not ours
        asked_at, recordings = entry
        if not msg.success:
            log.warning("review poll on %s failed: %s: %s", session.agent_id, msg.error_kind,
                        msg.error_message)
            return
        now = self.clock()
        rows = await self.recordings.reviews()
        for answer in msg.reviews:
            recording_id = recordings.get(answer.aid)
            if recording_id is None:
                continue
            row = rows.get(recording_id)
            if rules.stale(row, asked_at):
                continue
            update = rules.answered(row, answer.aid, answer.review, answer.state,
                                    answer.state_desc, answer.reason, now, self.interval)
            await self.recordings.save_review(recording_id, **update)
            if update["changed_at"] == now:
                level = logging.WARNING if answer.review == rules.REJECTED else logging.INFO
                log.log(level, "recording %d: archive av%d is %s%s", recording_id, answer.aid,
                        answer.review, f": {answer.reason}" if answer.reason else "")

    async def run(self) -> None:
        while True:
            interval = self.interval
            if interval > 0:
                try:
                    await self.poll()
                except Exception:  # a bad row must not stop review polling for all
                    log.exception("review poll failed")
            await anyio.sleep(min(interval, LONGEST_WAKE) if interval > 0 else LONGEST_WAKE)

    async def poll(self) -> None:
        """Ask about the archives due now, one question per account."""
        settings = self.manager.hub.config.submission
        now = self.clock()
        expired = now - 2 * self.manager.timing.agent_deadline
        for key in [k for k, (at, _) in self._asked.items() if at < expired]:
            del self._asked[key]
        asking = {rid for _, recs in self._asked.values() for rid in recs.values()}
        rows = await self.recordings.reviews()
        due = [r for r in rules.due(await self.recordings.list(), rows, now,
                                    settings.review_poll_batch) if r["id"] not in asking]
        by_account: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for rec in due:
            by_account[rec["account"]].append(rec)
        for account, recs in by_account.items():
            await self._ask(account, recs, rows, now)

    async def _ask(self, account: str | None, recs: list[dict[str, Any]],
                   rows: dict[int, dict[str, Any]], now: float) -> None:
        info = self.manager.choose_reader(recs, now)
        if info is None:
            return  # no agent may read now; the next poll looks again
        try:
            creds = await self.manager.hub.accounts.credentials(account)
        except Exception as exc:  # the account was removed: nothing can read its archives
            log.warning("review poll: account %r unusable: %s", account, exc)
            return
        for rec in recs:
            await self.recordings.save_review(
                rec["id"], **rules.asked(rows.get(rec["id"]), int(rec["aid"]), now,
                                         self.interval))
        submit_id = f"{PREFIX}{uuid.uuid4().hex[:16]}"
        self._asked[submit_id] = (now, {int(r["aid"]): r["id"] for r in recs})
        info.session.send(pb.HubMessage(submit=pb.Submit(
            submit_id=submit_id, attempt=1, operation="review",
            credentials=pb.BiliCredentials(cookies=creds.cookie_header(),
                                           access_key=creds.access_key or "",
                                           mid=int(creds.mid or 0)),
            member_url=self.manager.hub.config.bilibili.member_url, api="web",
            submission=b'{"title":"","videos":[]}',
            deadline_seconds=self.manager.timing.agent_deadline, sent_at_unix=now,
            review_aids=[int(r["aid"]) for r in recs])))
        log.debug("review poll %s: %d archive(s) of %r asked of %s", submit_id, len(recs),
                  account, info.agent_id)
