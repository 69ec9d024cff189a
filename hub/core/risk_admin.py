"""What an admin may do about Bilibili's verdicts: read an account's standing, release
it, forget a learned limit, mark a captcha solved.

The ledgers decide on their own; these are the levers for when a person knows
better: a limit learned from an answer that was about something else, a
penalty appealed, a captcha solved in a browser. Each lever changes the ledger,
writes it, and wakes the scheduler, in the hub's usual order.
"""

from __future__ import annotations

import logging
from typing import Any

from hub.core.account_keys import ledger_key
from hub.core.errors import BadRequest, NotFound
from hub.core.ports import Accounts
from hub.core.state import HubState

log = logging.getLogger("bupmesh.hub")

SCOPES = ("ip", "mesh", "account")


class RiskAdmin:
    def __init__(self, state: HubState, accounts: Accounts) -> None:
        self.state = state
        self.accounts = accounts

    async def _account(self, account: str | int) -> tuple[dict[str, Any], str]:
        """The account's public row and its ledger key; NotFound for no such account."""
        try:
            row = await self.accounts.resolve(account)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        return row, ledger_key(row)

    async def account_risk(self, account: str | int) -> dict[str, Any]:
        """The account ledger's view of one account, with its open captchas."""
        state = self.state
        row, key = await self._account(account)
        now = state.clock()
        view = state.account_ledger.describe(key, now)
        view["captchas"] = [c.to_dict() for c in state.captchas.open(now) if c.account == key]
        return {"account_id": row.get("account_id"), "name": row.get("name"),
                "mid": row.get("mid"), **view}

    async def release_account(self, account: str | int) -> dict[str, Any]:
        """An admin vouches for the account: penalty and cooldowns lifted, lessons forgotten."""
        state = self.state
        row, key = await self._account(account)
        async with state.lock:
            state.account_ledger.admin_release(key, state.clock())
            state.account_ledger.mark_changed()
            await state.save_ledger()
        log.info("account %s (%s) released by admin", row.get("name"), key)
        state.poke()
        return await self.account_risk(account)

    async def forget(self, scope: str, subject: str | None = None) -> list[dict[str, Any]]:
        """Forget a learned limit: one IP's (``ip``), the mesh-wide one (``mesh``) or one
        account's (``account``). The answers stay in the history. -> the live limits."""
        state = self.state
        if scope not in SCOPES:
            raise BadRequest(f"scope: one of {', '.join(SCOPES)}")
        if scope != "mesh" and not subject:
            raise BadRequest(f"subject: the {scope} whose learned limit to forget")
        async with state.lock:
            if scope == "ip":
                if not state.ledger.forget_ip(str(subject)):
                    raise NotFound(f"no IP {subject} in the risk ledger")
            elif scope == "mesh":
                state.ledger.forget_mesh()
            else:
                _, key = await self._account(str(subject))
                state.account_ledger.forget(key)
            await state.save_ledger()
        log.info("learned limit forgotten by admin: %s %s", scope, subject or "")
        state.poke()
        return self.learned()

    def learned(self) -> list[dict[str, Any]]:
        """Every live learned limit: each IP's, the mesh-wide one, each account's."""
        state = self.state
        now = state.clock()
        out = state.ledger.learned_limits(now)
        for key in state.account_ledger.known():
            lim = state.account_ledger.learned_limit(key, now)
            if lim is not None:
                out.append(lim.to_dict())
        return out

    def captchas(self) -> list[dict[str, Any]]:
        return self.state.captchas.describe(self.state.clock())

    async def solve_captcha(self, voucher: str) -> dict[str, Any]:
        """An admin solved the captcha: the cooldowns it caused end now (the IP's, and the
        account's when it was at fault); a disabled IP stays disabled."""
        state = self.state
        async with state.lock:
            captcha = state.captchas.solve(voucher, state.clock())
            if captcha is None:
                raise NotFound(f"no open captcha {voucher}")
            state.ledger.captcha_solved(captcha.ip, state.clock())
            state.unexclude_ips([captcha.ip])
            if captcha.account:
                state.account_ledger.lift_cooldown(captcha.account)
            await state.save_ledger()
        log.info("captcha %s (IP %s, account %s) solved by admin", voucher, captcha.ip,
                 captcha.account or "?")
        state.poke()
        return captcha.to_dict()
