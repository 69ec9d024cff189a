"""Captchas Bilibili asks for, until an admin solves them (pure; plain data, a time in).

Since late 2025 a throttled preupload is answered with JSON code 601 and a
``v_voucher``: the throttle lasts until someone solves the captcha that
voucher names, in a browser or the official app, as that account. The hub
cannot solve it; it can say which IP and account it is for, raise an alert,
and, once an admin marks it solved, end the cooldowns it caused at once
rather than wait them out.

Every refusal during one throttle carries the same voucher, so a voucher is
raised once however many uploads it refused. A captcha no one solved is
dropped after ``expire_seconds``: by then the throttle has passed, or the
next refusal brings a fresh voucher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DAY = 86400.0


@dataclass
class Captcha:
    voucher: str
    ip: str
    account: str
    agent_id: str
    raised_at: float
    refusals: int = 1  # answers that carried this voucher
    solved_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaptchaBook:
    def __init__(self, expire_seconds: float = DAY) -> None:
        self.expire_seconds = expire_seconds
        self._captchas: dict[str, Captcha] = {}
        self._changed = False

    def raised(self, voucher: str, *, ip: str, account: str, agent_id: str, now: float
               ) -> tuple[Captcha, bool]:
        """A 601 carried ``voucher``; returns the captcha and whether it is new."""
        self._expire(now)
        self._changed = True
        known = self._captchas.get(voucher)
        if known is not None:
            known.refusals += 1
            return known, False
        captcha = self._captchas[voucher] = Captcha(voucher, ip, account, agent_id, now)
        return captcha, True

    def solve(self, voucher: str, now: float) -> Captcha | None:
        """An admin solved it; None when no such captcha is open."""
        captcha = self._captchas.get(voucher)
        if captcha is None or captcha.solved_at is not None:
            return None
        captcha.solved_at = now
        self._changed = True
        return captcha

    def open(self, now: float) -> list[Captcha]:
        """Unsolved captchas, oldest first."""
        return sorted((c for c in self._captchas.values()
                       if c.solved_at is None and now - c.raised_at < self.expire_seconds),
                      key=lambda c: (c.raised_at, c.voucher))

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Every captcha not yet dropped, open ones first (``GET /api/manage/captchas``)."""
        rows = [c.to_dict() | {"open": c.solved_at is None
                               and now - c.raised_at < self.expire_seconds}
                for c in self._captchas.values()]
        return sorted(rows, key=lambda r: (not r["open"], -r["raised_at"]))

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "captchas": [c.to_dict() for c in self._captchas.values()]}

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != 1:
            raise ValueError(f"unknown captcha snapshot version {data.get('version')!r}")
        self._captchas = {}
        for d in data.get("captchas") or ():
            solved = d.get("solved_at")
            c = Captcha(str(d["voucher"]), str(d.get("ip") or ""), str(d.get("account") or ""),
                        str(d.get("agent_id") or ""), float(d["raised_at"]),
                        int(d.get("refusals") or 1),
                        float(solved) if solved is not None else None)
            self._captchas[c.voucher] = c
        self._changed = False

    def take_changed(self) -> bool:
        changed, self._changed = self._changed, False
        return changed

    def mark_changed(self) -> None:
        self._changed = True

    def _expire(self, now: float) -> None:
        """Forget captchas past their time (solved or not): the book stays small."""
        old = [v for v, c in self._captchas.items() if now - c.raised_at >= self.expire_seconds]
        for voucher in old:
            del self._captchas[voucher]
