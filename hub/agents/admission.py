"""Which agent ids the hub admits, and which accounts each may carry credentials of.

Approval (``agents.require_approval``): an id first seen through the shared PSK
waits as ``pending``, visible with its address and what it reported, and gets
no work until an admin approves it; ``reject`` turns it away (its stream is
closed, its registrations and JWTs are refused) until an admin clears the
decision. An id admitted with a per-agent token is approved by that token: an
admin created it for this id. Agents known before approval was switched on stay
approved.

Account allowlists: per agent id, the accounts (names or ids) whose credentials
it may receive in an Offer or a Submit; none set means every account. Set in
``hub.yml`` (``agents.allowed_accounts``, which then owns that agent's list) or
over the API (kept in the database).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from hub.core.errors import BadRequest, Conflict, NotFound
from hub.core.registry import APPROVED, PENDING, REJECTED, AgentInfo
from hub.core.state import HubState
from hub.store.identity import IdentityStore

log = logging.getLogger("bupmesh.hub")

ACTIONS = ("approve", "reject", "clear")
MAX_ACCOUNTS = 256
_ACCOUNT = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


def check_accounts(accounts: Any, *, setting: str) -> list[str] | None:
    """An allowlist as given (None: every account), each entry an account name or id."""
    if accounts is None:
        return None
    if not isinstance(accounts, list) or len(accounts) > MAX_ACCOUNTS:
        raise BadRequest(f"{setting}: expected a list of at most {MAX_ACCOUNTS} account "
                         "names, or null for every account")
    out = []
    for value in accounts:
        name = str(value).strip() if isinstance(value, str | int) else ""
        if not _ACCOUNT.fullmatch(name):
            raise BadRequest(f"{setting}: account names are 1-64 printable characters")
        out.append(name)
    return sorted(set(out))


class Admission:
    def __init__(self, state: HubState, store: IdentityStore, *, require_approval: bool,
                 configured: dict[str, list[str]]) -> None:
        self.state = state
        self.store = store
        self.require_approval = require_approval
        self.configured = {agent: frozenset(accounts) for agent, accounts in configured.items()}
        self._approval: dict[str, str] = {}  # stored decisions, by agent id
        self._accounts: dict[str, frozenset[str] | None] = {}  # stored allowlists

    async def load(self) -> None:
        """Stored decisions and allowlists onto the agents the registry knows."""
        for agent_id, (approval, accounts) in (await self.store.load_admission()).items():
            self._approval[agent_id] = approval
            self._accounts[agent_id] = None if accounts is None else frozenset(accounts)
        for info in self.state.registry.agents.values():
            self.apply(info)

    def apply(self, info: AgentInfo) -> None:
        """Give a (newly known) agent its stored decision and allowlist."""
        info.approval = self._approval.get(info.agent_id, info.approval)
        if info.agent_id in self.configured:
            info.allowed_accounts = self.configured[info.agent_id]
            info.accounts_from_config = True
        else:
            info.allowed_accounts = self._accounts.get(info.agent_id)
            info.accounts_from_config = False

    async def first_seen(self, info: AgentInfo, *, by_psk: bool) -> None:
        """A registration from an id the hub never saw: pending if it came with the PSK
        and approval is required."""
        self.apply(info)
        if by_psk and self.require_approval and info.agent_id not in self._approval:
            await self._set(info, PENDING)
            log.warning("agent %s (%s) waits for an admin's approval", info.agent_id,
                        info.ip_address or "?")

    async def admitted_by_token(self, info: AgentInfo) -> None:
        """A per-agent token registered: an admin made it for this id, so it is approved."""
        if info.approval == PENDING:
            await self._set(info, APPROVED)

    async def decide(self, agent_id: str, action: str) -> AgentInfo:
        """``approve``, ``reject`` (closes its stream) or ``clear`` (forget the decision)."""
        if action not in ACTIONS:
            raise BadRequest(f"unknown agent action {action!r} ({' | '.join(ACTIONS)})")
        info = self.state.registry.get(agent_id)
        if info is None:
            raise NotFound(f"no agent {agent_id}")
        if action == "approve":
            await self._set(info, APPROVED)
        elif action == "reject":
            await self._set(info, REJECTED)
            if info.session is not None:
                info.session.close("rejected by an admin")
        else:
            await self._set(info, PENDING if self.require_approval else APPROVED)
        log.info("agent %s: %s by admin", agent_id, action)
        self.state.poke()
        return info

    async def set_accounts(self, agent_id: str, accounts: list[str] | None) -> dict[str, Any]:
        """Set (or, with None, lift) an agent's allowlist; refused for one hub.yml sets."""
        if agent_id in self.configured:
            raise Conflict(f"the accounts of agent {agent_id} are set in the hub config "
                           "(agents.allowed_accounts); change them there")
        allowed = None if accounts is None else frozenset(accounts)
        await self.store.set_allowed_accounts(agent_id, accounts)
        self._accounts[agent_id] = allowed
        info = self.state.registry.get(agent_id)
        if info is not None:
            info.allowed_accounts = allowed
            self.state.events.touch_agent(agent_id)
        log.info("agent %s may use %s", agent_id,
                 "every account" if allowed is None else ", ".join(sorted(allowed)) or "no account")
        self.state.poke()
        return {"agent_id": agent_id, "allowed_accounts": accounts}

    async def _set(self, info: AgentInfo, approval: str) -> None:
        await self.store.set_approval(info.agent_id, approval)
        self._approval[info.agent_id] = approval
        info.approval = approval
        await self.state.store.set_agent_status(info.agent_id, info.status)
        self.state.events.touch_agent(info.agent_id)
