"""The captcha book: one per voucher, open until solved or expired (fake clock)."""

from __future__ import annotations

import json

import pytest

from hub.core.captchas import CaptchaBook


def test_one_captcha_per_voucher_until_solved() -> None:
    book = CaptchaBook(expire_seconds=1000)
    c, new = book.raised("voucher_a", ip="10.0.0.1", account="1", agent_id="a1", now=0.0)
    assert new and (c.ip, c.account, c.agent_id, c.refusals) == ("10.0.0.1", "1", "a1", 1)
    again, new = book.raised("voucher_a", ip="10.0.0.2", account="1", agent_id="a2", now=5.0)
    assert not new and again is c and c.refusals == 2 and c.ip == "10.0.0.1"
    book.raised("voucher_b", ip="10.0.0.3", account="2", agent_id="a3", now=6.0)
    assert [x.voucher for x in book.open(7.0)] == ["voucher_a", "voucher_b"]
    solved = book.solve("voucher_a", 8.0)
    assert solved is not None and solved.solved_at == 8.0
    assert book.solve("voucher_a", 9.0) is None and book.solve("nope", 9.0) is None
    assert [x.voucher for x in book.open(9.0)] == ["voucher_b"]
    rows = book.describe(9.0)
    assert [(r["voucher"], r["open"]) for r in rows] == [("voucher_b", True),
                                                         ("voucher_a", False)]


def test_unsolved_captchas_expire_and_round_trip() -> None:
    book = CaptchaBook(expire_seconds=100)
    book.raised("v1", ip="10.0.0.1", account="1", agent_id="a1", now=0.0)
    assert book.take_changed() and not book.take_changed()
    assert book.open(99.0) and not book.open(100.0)
    book.raised("v2", ip="10.0.0.1", account="1", agent_id="a1", now=150.0)
    assert [r["voucher"] for r in book.describe(150.0)] == ["v2"]  # v1 dropped
    again = CaptchaBook(expire_seconds=100)
    again.restore(json.loads(json.dumps(book.snapshot())))
    assert again.describe(160.0) == book.describe(160.0)
    with pytest.raises(ValueError):
        again.restore({})
