"""The hub's live state, shared by its parts, and the one way to change it.

The order is always the same: apply the event to the in-memory record under
``lock``, write it to the store (:meth:`HubState.save`), and only then act on
it (send an Offer/Cancel, start or stop streaming), so nothing the hub did is
unknown to the database after a crash.

Active tasks live here (``tasks``); terminal ones are read back from the
store on demand. Which session carries each lease (``lease_session``) lets a
stream that ended take only its own leases with it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import anyio

from hub.core.account_risk import AccountLedger
from hub.core.captchas import CaptchaBook
from hub.core.events import EventBus
from hub.core.held import HeldLeases
from hub.core.lifecycle import Lifecycle, TaskRecord
from hub.core.ports import Counters, HubStore
from hub.core.registry import Registry
from hub.core.risk import RiskLedger


class HubState:
    def __init__(
        self,
        *,
        registry: Registry,
        lifecycle: Lifecycle,
        ledger: RiskLedger,
        held: HeldLeases,
        store: HubStore,
        events: EventBus,
        counters: Counters,
        clock: Callable[[], float],
        tasks: dict[str, TaskRecord] | None = None,
        account_ledger: AccountLedger | None = None,
        captchas: CaptchaBook | None = None,
    ) -> None:
        self.registry = registry
        self.lifecycle = lifecycle
        self.ledger = ledger  # per egress IP: what Bilibili has seen from it
        # per Bilibili account, whatever the IP; and the captchas it asked for
        self.account_ledger = account_ledger or AccountLedger()
        self.captchas = captchas or CaptchaBook()
        self.held = held  # leases of ended streams waiting for their agent to dial back
        self.store = store
        self.events = events
        self.counters = counters
        self.clock = clock
        self.tasks: dict[str, TaskRecord] = {} if tasks is None else tasks  # active ones
        self.lease_session: dict[str, str] = {}  # task id -> session id carrying its lease
        # task id -> (egress IP, account key) its attempt started under: what the ledgers
        # judge when it ends, even if the agent's egress moved meanwhile
        self.lease_risk: dict[str, tuple[str, str]] = {}
        self.local_reads: dict[str, int] = {}  # task id -> attempt reading the file itself
        self.assigned_total: dict[str, int] = {}  # agent id -> offers made to it
        self.lock = anyio.Lock()
        self._wake = anyio.Event()

    def poke(self) -> None:
        """Something changed that may let a pending task be offered: wake the scheduler."""
        self._wake.set()

    async def changed(self, within: float) -> None:
        """Return at the next :meth:`poke` (or one since the last call), or after ``within`` s."""
        with anyio.move_on_after(within):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def save(self, task: TaskRecord, agent_id: str, event: str, message: str, *,
                   ip: str | None = None, part_state: str | None = None) -> None:
        """Write ``task`` with one log line; a terminal task leaves the live state.

        (On a full data directory the store keeps the write until space returns.)
        """
        if ip is None:
            info = self.registry.get(agent_id) if agent_id else None
            ip = info.risk_ip if info else ""
        await self.store.save_task(task, log=(agent_id or "", ip or "", event, message),
                                   part_state=part_state)
        if event == "retry":
            self.counters.retry(task.error_kind or "")
        self.events.touch_task(task.task_id, agent_id)
        if task.status.terminal:
            self.tasks.pop(task.task_id, None)
            self.lease_session.pop(task.task_id, None)
            self.lease_risk.pop(task.task_id, None)
            self.local_reads.pop(task.task_id, None)

    async def save_ledger(self) -> None:
        """Persist the IPs the last events changed (not the whole ledger: O(IPs) each),
        and the account ledger and captchas when they changed (a few rows, whole)."""
        changes = self.ledger.take_changes()
        try:
            await self.store.save_ledger_ips(changes)
        except BaseException:
            self.ledger.mark_changed(changes)
            raise
        for name, book in (("accounts", self.account_ledger), ("captchas", self.captchas)):
            if book.take_changed():
                try:
                    await self.store.save_risk_state(name, book.snapshot())
                except BaseException:
                    book.mark_changed()
                    raise
        self.events.touch_ips()

    def unexclude_ips(self, ips: list[str]) -> None:
        """IPs cleared of a risk answer (the account was at fault, a captcha was solved):
        live tasks that the answer kept off them, and off their agents, may use them."""
        freed = set(ips)
        if not freed:
            return
        agents = {a.agent_id for a in self.registry.agents.values() if a.risk_ip in freed}
        for task in self.tasks.values():
            for ip in freed & set(task.excluded_ips):
                del task.excluded_ips[ip]
            for agent_id in agents & set(task.excluded):
                del task.excluded[agent_id]

    def active_count(self, agent_id: str) -> int:
        """Leases ``agent_id`` holds now."""
        return sum(1 for t in self.tasks.values() if t.status.leased and t.agent_id == agent_id)

    def active_counts(self) -> collections.Counter[str]:
        """Leases per agent, counted in one sweep (not once per agent: O(agents x tasks))."""
        return collections.Counter(t.agent_id for t in self.tasks.values()
                                   if t.status.leased and t.agent_id)
