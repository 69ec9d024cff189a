"""HubService: builds the hub's parts, hands each what it needs, and is what the edges call.

The parts, from the inside out:

* :class:`hub.core.state.HubState`: the registry, the task lifecycle, the risk
  ledger, the live tasks and their leases, and the write-then-act ``save``;
* :class:`hub.core.scheduler.Scheduler` (who gets a pending task),
  :class:`hub.core.admin.Admin` (admin commands), :class:`hub.core.views.Views`
  (JSON rows), :func:`hub.core.recovery.recover` (a restart);
* :class:`hub.parts.Parts`: parts, their tasks and hashing their files;
* the agent side: :class:`hub.agents.auth.AgentAuth` (registration, JWTs),
  :class:`hub.agents.agent_tokens.AgentTokens` (per-agent tokens),
  :class:`hub.agents.admission.Admission` (approval, account allowlists),
  :class:`hub.agents.sessions.Sessions` and :class:`hub.agents.messages.Messages`
  (one stream's events and messages), :class:`hub.agents.timeouts.Timeouts`.

The HTTP layer calls the public methods below, each passing straight to the
part that owns the job; the gRPC link is handed the agent side's parts
(``auth`` and ``sessions``) directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from hub.accounts.store import AccountStore
from hub.agents.admission import Admission, check_accounts
from hub.agents.agent_tokens import AgentTokens
from hub.agents.auth import AgentAuth, StreamGrant
from hub.agents.messages import Messages
from hub.agents.reconnect_window import AdmissionMeter
from hub.agents.sessions import Sessions
from hub.agents.timeouts import Timeouts
from hub.config import HubConfig
from hub.core.account_risk import AccountLedger, AccountRules
from hub.core.admin import Admin
from hub.core.errors import NotFound
from hub.core.events import EventBus
from hub.core.held import HeldLeases
from hub.core.history import History
from hub.core.lifecycle import Lifecycle, Policy, TaskRecord
from hub.core.outcomes import Outcomes
from hub.core.ports import Submissions
from hub.core.recovery import RestartGrace, recover
from hub.core.registry import Registry
from hub.core.reports import HeartbeatReport, ProgressReport
from hub.core.retry_policy import RetryRules, TaskRetryPolicy
from hub.core.risk import RiskLedger, RiskRules
from hub.core.risk_admin import RiskAdmin
from hub.core.scheduler import Scheduler
from hub.core.spawner import Spawner
from hub.core.state import HubState
from hub.core.strategies import Strategy, make_strategy
from hub.core.task_pages import TaskQuery
from hub.core.views import Views
from hub.media_roots import MediaRoots
from hub.metrics import HubMetrics, storage_gauges
from hub.parts import Parts
from hub.rooms.book import RoomBook
from hub.store.identity import IdentityStore
from hub.store.space import MiB, SpaceAlarm
from hub.store.tasks import Store
from protocol.tokens import TokenIssuer

HEARTBEAT_FLUSH_SECONDS = 1.0


class HubService:
    def __init__(
        self,
        config: HubConfig,
        *,
        store: Store,
        accounts: AccountStore,
        tokens: TokenIssuer,
        clock: Callable[[], float] = time.time,
        strategy: Strategy | None = None,
        rooms: RoomBook | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.accounts = accounts
        self.rooms = rooms  # None: rooms only from hub.yml, no room API (tests' hubs)
        self.tokens = tokens
        self.clock = clock
        hb = config.heartbeat
        self.registry = Registry(heartbeat_interval=hb.interval_seconds,
                                 offline_after=hb.offline_after_seconds, clock=clock)
        # Retry timing lives in the TaskRetryPolicy alone; Policy keeps what is lifecycle's.
        lifecycle = Lifecycle(Policy(exclude_seconds=config.risk.cooldown_seconds,
                                     completion_wait=config.retry.completion_wait_seconds),
                              clock=clock,
                              retry=TaskRetryPolicy(RetryRules.from_settings(config.retry)))
        self.ledger = RiskLedger(RiskRules.from_settings(config.risk))
        self.account_ledger = AccountLedger(AccountRules.from_settings(config.risk))
        self.events = EventBus()  # what changed, for the web UI's live view
        self.tasks: dict[str, TaskRecord] = {}  # active tasks; the state's own dict
        strategy = strategy or make_strategy(config.scheduler.strategy)
        self.history = History(clock)  # the console's charts
        self.metrics = HubMetrics(agents=self.registry, tasks=self.tasks, store=store,
                                  strategy=config.scheduler.strategy, history=self.history)
        self.state = state = HubState(
            registry=self.registry, lifecycle=lifecycle, ledger=self.ledger,
            held=HeldLeases(hb.held_grace_seconds, clock), store=store, events=self.events,
            counters=self.metrics, clock=clock, tasks=self.tasks,
            account_ledger=self.account_ledger)
        self.held = state.held
        self._spawn = Spawner()
        self._restart = RestartGrace(self.registry)
        self._outcomes = Outcomes(state)
        self.parts = Parts(state, store, accounts, self._spawn, MediaRoots.from_config(config))
        self.scheduler = Scheduler(state, strategy=strategy, accounts=accounts,
                                   outcomes=self._outcomes, restart=self._restart,
                                   request_hash=self.parts.request_hash,
                                   member_url=config.bilibili.member_url)
        self.views = Views(state, self.scheduler.why_waiting)
        self.admin = Admin(state, self.views, self.parts.new_task)
        # What admitting agents costs (registrations and sessions): sizes the reconnect window.
        self.admission_meter = AdmissionMeter(clock=time.monotonic, cpu_clock=time.process_time,
                                        fixed_rate=config.reconnect.admission_rate)
        self.risk_admin = RiskAdmin(state, accounts)
        self.identity = IdentityStore(store.db_path, clock=clock)
        self.agent_tokens = AgentTokens(self.identity, clock)
        self.admission = Admission(state, self.identity,
                                   require_approval=config.agents.require_approval,
                                   configured=config.agents.allowed_accounts)
        self.auth = AgentAuth(psk=config.psk, tokens=tokens, agent_tokens=self.agent_tokens,
                              admission=self.admission, registry=self.registry, store=store,
                              events=self.events, clock=clock,
                              allow_psk=config.agents.allow_psk,
                              admission_meter=self.admission_meter)
        self.messages = Messages(state, outcomes=self._outcomes, parts=self.parts,
                                 metrics=self.metrics, spawn=self._spawn)
        self.sessions = Sessions(state, auth=self.auth, messages=self.messages,
                                 metrics=self.metrics, spawn=self._spawn,
                                 heartbeat_interval=hb.interval_seconds,
                                 reconnect=config.reconnect,
                                 admission_meter=self.admission_meter)
        self._timeouts = Timeouts(state, self.auth, heartbeat_interval=hb.interval_seconds)
        self._submissions: Submissions | None = None
        # The recording pipeline's read side (list, describe), for the live view.
        self.recording_views: Any = None
        # The data directory's NOSPACE alarm; every database of this hub reports to it.
        self.space = SpaceAlarm(config.data_path,
                                resume_free_bytes=int(config.storage.resume_free_mb * MiB),
                                probe_interval=config.storage.probe_interval_seconds,
                                clock=clock)
        self.space.watch(store)
        self.space.watch(self.identity)
        self.space.on_cleared(self.poke)
        self.metrics.add_gauges(lambda: storage_gauges(self.space))

    @property
    def submissions(self) -> Submissions | None:
        """The recording pipeline's hooks (set by hub/app.py once it is attached)."""
        return self._submissions

    @submissions.setter
    def submissions(self, hooks: Submissions | None) -> None:
        self._submissions = hooks
        self._outcomes.submissions = self.sessions.submissions = hooks
        self.messages.submissions = hooks

    # -- running --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load agents and unfinished tasks; leases from before a restart are void."""
        await recover(self.state, self._restart,
                      offline_after=self.config.heartbeat.offline_after_seconds)
        self.auth.remember_rows()
        await self.identity.open()
        await self.agent_tokens.load()
        await self.admission.load()

    def close(self) -> None:
        """Close what ``start`` opened (the store and accounts belong to the caller)."""
        self.identity.close()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Background work: scheduling, the clock, and what the parts spawn."""
        async with anyio.create_task_group() as tg:
            self._spawn.bind(tg)
            tg.start_soon(self.scheduler.run)
            tg.start_soon(self._timeouts.run)
            tg.start_soon(self.sessions.advise_periodically)
            tg.start_soon(self._flush_heartbeats)
            tg.start_soon(self.space.run)
            task_status.started()

    async def _flush_heartbeats(self) -> None:
        """Agents' heartbeats reach the database in batches (``Store.note_heartbeat``)."""
        try:
            while True:
                await anyio.sleep(HEARTBEAT_FLUSH_SECONDS)
                await self.store.flush_heartbeats()
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.flush_heartbeats()

    def poke(self) -> None:
        """Something changed that may let a pending task be offered."""
        self.state.poke()

    # -- agents ---------------------------------------------------------------------------

    async def register_agent(self, credential: str, agent_id: str, agent_name: str,
                             ip_address: str, capabilities: dict[str, Any],
                             tags: dict[str, str], *, instance_id: str = "", peer: str = ""
                             ) -> tuple[str, int]:
        return await self.auth.register_agent(credential, agent_id, agent_name, ip_address,
                                              capabilities, tags, instance_id=instance_id,
                                              peer=peer)

    def verify_agent_token(self, token: str) -> str:
        return self.auth.verify_agent_token(token)

    def authenticate_stream(self, token: str) -> StreamGrant:
        return self.auth.authenticate_stream(token)

    # -- who may be an agent ----------------------------------------------------------------

    async def create_agent_token(self, agent_id: str, expires_in: float | None = None
                                 ) -> dict[str, Any]:
        """A new per-agent token: its row and, this once, the token itself."""
        self.auth.check_agent_id(agent_id)
        row, token = await self.agent_tokens.create(agent_id, expires_in)
        return {**row.public(self.clock()), "token": token}

    def list_agent_tokens(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        return self.agent_tokens.list(agent_id)

    async def revoke_agent_token(self, token_id: str) -> dict[str, Any]:
        return await self.auth.revoke_token(token_id)

    async def set_agent_approval(self, agent_id: str, action: str) -> dict[str, Any]:
        """``approve``, ``reject`` or ``clear`` an agent id -> the agent row."""
        return self.views.agent(await self.admission.decide(agent_id, action))

    async def set_agent_accounts(self, agent_id: str, accounts: Any) -> dict[str, Any]:
        """The accounts ``agent_id`` may carry credentials of (None: every account)."""
        self.auth.check_agent_id(agent_id)
        return await self.admission.set_accounts(agent_id,
                                                 check_accounts(accounts, setting="accounts"))

    def agent_duplicates(self) -> list[dict[str, Any]]:
        """Agent ids a second process tried to claim lately (both addresses)."""
        return [c.row() for c in self.registry.duplicates.current(self.clock())]

    async def agent_heartbeat(self, agent_id: str, report: HeartbeatReport) -> None:
        await self.messages.agent_heartbeat(agent_id, report)

    async def agent_progress(self, agent_id: str, report: ProgressReport) -> None:
        await self.messages.agent_progress(agent_id, report)

    # -- parts and admin commands ---------------------------------------------------------

    async def create_part(self, file_path: str, *, account: str | None, title: str | None,
                          auto_upload: bool = True) -> dict[str, Any]:
        return await self.parts.create_part(file_path, account=account, title=title,
                                            auto_upload=auto_upload)

    async def assign_task(self, part_id: int, agent_id: str, *, force: bool = False) -> str:
        return await self.admin.assign_task(part_id, agent_id, force=force)

    async def retry_task(self, task_id: str) -> dict[str, Any]:
        return await self.admin.retry_task(task_id)

    async def cancel_task(self, task_id: str) -> None:
        await self.admin.cancel_task(task_id)

    async def set_agent_state(self, agent_id: str, action: str,
                              reconnect_after_seconds: int = 0) -> dict[str, Any]:
        return await self.admin.set_agent_state(agent_id, action, reconnect_after_seconds)

    async def reenable_ip(self, ip: str) -> dict[str, Any]:
        return await self.admin.reenable_ip(ip)

    async def account_risk(self, account: str | int) -> dict[str, Any]:
        return await self.risk_admin.account_risk(account)

    async def release_account(self, account: str | int) -> dict[str, Any]:
        return await self.risk_admin.release_account(account)

    async def forget_learned(self, scope: str, subject: str | None = None
                             ) -> list[dict[str, Any]]:
        return await self.risk_admin.forget(scope, subject)

    def learned_limits(self) -> list[dict[str, Any]]:
        return self.risk_admin.learned()

    def list_captchas(self) -> list[dict[str, Any]]:
        return self.risk_admin.captchas()

    async def solve_captcha(self, voucher: str) -> dict[str, Any]:
        return await self.risk_admin.solve_captcha(voucher)

    async def risk_overview(self) -> dict[str, Any]:
        """Learned limits, open captchas and every account's standing (the web UI's live
        view of both ledgers beside the IP table)."""
        accounts = []
        for row in await self.accounts.list():
            try:
                accounts.append(await self.risk_admin.account_risk(row["account_id"]))
            except NotFound:  # deleted meanwhile
                continue
        return {"learned": self.risk_admin.learned(),
                "captchas": [c for c in self.risk_admin.captchas() if c["open"]],
                "accounts": accounts}

    # -- read models ----------------------------------------------------------------------

    async def list_agents(self) -> list[dict[str, Any]]:
        return await self.views.list_agents()

    async def list_tasks(self, query: TaskQuery | None = None) -> dict[str, Any]:
        """One page of tasks: ``{tasks, next_cursor}`` (hub/core/task_pages.py)."""
        return await self.views.list_tasks(query)

    async def live_and_recent_tasks(self, ended: int) -> list[dict[str, Any]]:
        return await self.views.live_and_recent_tasks(ended)

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self.views.get_task(task_id)

    async def task_logs(self, task_id: str) -> list[dict[str, Any]]:
        return await self.views.task_logs(task_id)

    async def list_ips(self) -> list[dict[str, Any]]:
        return await self.views.list_ips()

    def chart_history(self) -> dict[str, Any]:
        """Per-agent throughput (last hour) and per-IP uploads and risk events (last day)."""
        return self.history.view(self.ledger.event_times())
