"""Who gets a pending task, and the Offer that leases it.

A pass looks at every pending task (oldest first). An upload starts only when
both ledgers allow it: the task's *account* may preupload now (the account
ledger: gaps, caps, cooldowns, a penalty; checked first, it holds the task
whatever the agent), and the strategy finds an agent whose egress *IP* may
(the risk ledger, inside the strategy's shared gate), among the agents that may
carry the task's account (``allowed_accounts``). A chosen task is leased (a new
attempt), written, and only then offered over the agent's stream, with the
cookies the upload needs and nothing else of the account (no app access key:
uploads never use it).
Passes run when something may have changed (``poke``) and at least once a
second, for backoffs and cooldowns that simply run out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hub.core import lifecycle as lc
from hub.core.account_keys import AccountKeys
from hub.core.agent_views import FleetViews, agent_view
from hub.core.lifecycle import Status, TaskRecord
from hub.core.outcomes import Outcomes
from hub.core.ports import Accounts
from hub.core.recovery import RestartGrace
from hub.core.registry import AgentInfo
from hub.core.state import HubState
from hub.core.strategies import AgentView, PartView, Strategy, why_not
from protocol import mesh_pb2 as pb

if TYPE_CHECKING:
    from uploader.credentials import Credentials

log = logging.getLogger("bupmesh.hub")


class Scheduler:
    def __init__(
        self,
        state: HubState,
        *,
        strategy: Strategy,
        accounts: Accounts,
        outcomes: Outcomes,
        restart: RestartGrace,
        request_hash: Callable[[int], None],
        member_url: str,
    ) -> None:
        self.state = state
        self.strategy = strategy  # one instance for the hub's life: round robin keeps state
        self.accounts = accounts
        self.outcomes = outcomes
        self.restart = restart
        self.member_url = member_url
        # Asks for a part's digest to be computed (a no-op while a pass over it runs).
        self.request_hash = request_hash
        self._fleet = FleetViews()  # the strategy's agent views, kept as agents change
        self.keys = AccountKeys(accounts, state.clock)  # the account ledger's key of a task
        # Every name each task account key goes by (its name and id), for allowlists;
        # refreshed by each pass that needs it.
        self._account_names: dict[str | None, tuple[str, ...]] = {}

    async def run(self) -> None:
        """A pass whenever the state is poked, and at least once a second."""
        while True:
            try:
                await self.dispatch_pending()
            except Exception:  # never let one bad task stop scheduling for all
                log.exception("scheduling pass failed")
            await self.state.changed(within=1.0)

    def part_view(self, task: TaskRecord, now: float) -> PartView:
        only_ip = self.state.lifecycle.completion_ip(task)
        return PartView(
            task.part_id, task.file_size, {}, task.file_path,
            excluded_agents=frozenset(a for a, t in task.excluded.items() if t > now),
            excluded_ips=frozenset(ip for ip, t in task.excluded_ips.items() if t > now),
            pinned_agent=task.pinned_agent or task.retry_agent,
            force=task.force and task.pinned_agent is not None,
            # A network retry on the same agent continues the same upos session (no new
            # preupload), and so does a re-offer after the hub let an attempt complete
            # (on the IP it let it complete on).
            resuming=(task.retry_agent is not None and task.pinned_agent is None)
            or only_ip is not None,
            only_ip=only_ip,
            granted_agent=(task.proceed_agent or None) if only_ip is not None else None,
        )

    def why_waiting(self, task: TaskRecord) -> dict[str, str]:
        """Why each connected agent cannot take a pending task now (admin UI, logs):
        ``account ...`` when the account holds it back, whatever the agent, else each
        agent's own reason (``IP ...`` when its egress IP does)."""
        state = self.state
        now = state.clock()
        infos = [a for a in state.registry.agents.values() if a.session is not None]
        views = [agent_view(a, state.active_count(a.agent_id)) for a in infos]
        part = self.part_view(task, now)
        account = self.keys.cached(task.account)
        reasons: dict[str, str] | None = None
        if account is not None and not part.resuming:
            fit, reason = state.account_ledger.preupload_fit(account, now, force=part.force)
            if not fit:
                reasons = {v.agent_id: reason for v in views}
        if reasons is None:
            reasons = why_not(part, views, state.ledger, now, adaptive=self.strategy.adaptive)
        names = self._names(task.account)
        for info in infos:
            if not info.may_use(*names):
                reasons[info.agent_id] = (f"may not use account {task.account or 'default'} "
                                          "(not in its allowed accounts)")
        return reasons

    def _names(self, account: str | None) -> tuple[str, ...]:
        return self._account_names.get(account) or ((account,) if account else ())

    async def _learn_account_names(self, tasks: list[TaskRecord]) -> None:
        """Look up every name of the accounts ``tasks`` use (one lookup per account)."""
        names: dict[str | None, tuple[str, ...]] = {}
        for account in {t.account for t in tasks}:
            try:
                row = await self.accounts.resolve(account)
                names[account] = (str(row["name"]), str(row["account_id"]))
            except Exception:  # unknown account: the offer fails on its credentials
                names[account] = (account,) if account else ()
        self._account_names = names

    async def dispatch_pending(self) -> None:
        state = self.state
        async with state.lock:
            pending = [t for t in state.tasks.values() if t.status is Status.PENDING]
            if not pending:
                return
            now = state.clock()
            if self.restart.holding(now):
                return
            for task in pending:
                # A retry pinned to an agent that is gone would wait forever: let it go.
                if task.retry_agent is not None:
                    info = state.registry.get(task.retry_agent)
                    if info is None or not info.schedulable:
                        task.retry_agent = None
            # The schedulable agents as the registry keeps them: this pass pays for what
            # changed since the last one, not a walk of the fleet.
            fleet = self._fleet.refresh(state.registry, state.active_counts())
            if not fleet:
                return
            views = list(fleet.values())
            # Only when some agent has an allowlist: the common mesh pays nothing for it.
            restricted = state.registry.restricted()
            if restricted:
                await self._learn_account_names(pending)
            # Only these can read a file themselves (_wait_for_local_hash asks per part).
            local_views = self._fleet.local()
            for task in sorted(pending, key=lambda t: t.created_at):
                if task.not_before > now or task.status is not Status.PENDING:
                    continue
                if self._wait_for_local_hash(task, local_views):
                    continue
                part = self.part_view(task, now)
                account = await self.keys.key(task.account)
                if not part.resuming and not state.account_ledger.preupload_fit(
                        account, now, force=part.force)[0]:
                    state.counters.decision(False)
                    continue  # the account may not preupload now, from any IP
                candidates = views
                if restricted:
                    names = self._names(task.account)
                    candidates = [v for v in views if v.agent_id not in restricted
                                  or restricted[v.agent_id].may_use(*names)]
                chosen = self.strategy.choose(part, candidates, state.ledger, now)
                state.counters.decision(chosen is not None)
                if chosen is None:
                    continue
                info = state.registry.agents[chosen.agent_id]
                if not await self._offer(task, info, account):
                    continue
                if not part.resuming and task.status.leased:
                    # Before choosing for the next task: the IP and the account now rest.
                    state.ledger.upload_started(chosen.ip, chosen.agent_id, now)
                    state.counters.upload_started(chosen.ip)
                    state.account_ledger.preupload_started(account, now)
                    await state.save_ledger()
                # Only the chosen agent's view changed: not a rebuild of all N.
                if chosen.agent_id in fleet:
                    self._fleet.leased(chosen.agent_id)
                    views = list(fleet.values())

    def _wait_for_local_hash(self, task: TaskRecord, views: list[AgentView]) -> bool:
        """Hold a part a connected local/hybrid agent could read until its digest is known.

        Such an agent reads the file itself only against a known digest
        (Accept.local_read); hashing on the hub takes a fraction of the time streaming
        the file would, so the first attempt waits for it instead of streaming a file
        the agent has on disk.
        """
        if task.file_digest or task.file_md5 \
                or not any(v.can_read(task.file_path) for v in views):
            return False
        self.request_hash(task.part_id)
        return True

    async def _offer(self, task: TaskRecord, agent: AgentInfo, account: str) -> bool:
        """Lease ``task`` to ``agent`` and send the Offer (caller holds the lock).

        True if an Offer went out (False: the agent left, or the task failed for want
        of credentials).
        """
        state = self.state
        session = agent.session
        if session is None or not agent.may_use(*self._names(task.account)):
            return False
        try:
            creds = await self.accounts.credentials(task.account)
        except Exception as exc:  # no such account, undecryptable, several and none chosen
            state.lifecycle.offer(task, agent.agent_id)
            ruling = state.lifecycle.result(task, agent.agent_id, task.attempt, success=False,
                                            error_kind=lc.AUTH,
                                            error_message=f"no credentials: {exc}")
            await self.outcomes.finish(task, ruling, agent.agent_id, agent.risk_ip)
            return False
        if session.closed:  # the stream ended while we looked up credentials
            return False
        attempt = state.lifecycle.offer(task, agent.agent_id)
        state.lease_session[task.task_id] = session.session_id
        state.lease_risk[task.task_id] = (agent.risk_ip, account)
        state.assigned_total[agent.agent_id] = state.assigned_total.get(agent.agent_id, 0) + 1
        await state.save(task, agent.agent_id, "offer",
                         f"attempt {attempt} offered (resume at byte {task.committed_offset})",
                         ip=agent.risk_ip, part_state="assigned")
        offer = pb.Offer(
            task_id=task.task_id,
            attempt=attempt,
            part_id=task.part_id,
            file_name=Path(task.file_path).name,
            file_size=task.file_size,
            file_md5=task.file_md5,
            file_digest=task.file_digest,
            credentials=upload_credentials(creds),
            line="auto",
            member_url=self.member_url,
            resume_session=task.resume_session or b"",
            resume_offset=task.committed_offset,
            file_path=task.file_path,
            await_proceed=agent.finish_handshake,
            crc32_integrity=session.crc32_integrity,
        )
        session.send(pb.HubMessage(offer=offer))  # a no-op if it closed meanwhile: re-queued
        log.info("task %s attempt %d offered to %s", task.task_id, attempt, agent.agent_id)
        return True


def upload_credentials(creds: Credentials) -> pb.BiliCredentials:
    """What an Offer carries of an account: the cookies upos needs (preupload, chunks,
    completion) and the user id. Never the app access key: no upload uses it."""
    return pb.BiliCredentials(cookies=creds.cookie_header(), mid=int(creds.mid or 0))
