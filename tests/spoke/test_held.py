"""Held tasks across a reconnect, the agent's part: which attempts outlive their stream and
until when (spoke/held.py, with a fake clock), the stream check restarting at the re-attach
point (spoke/source.py), and the setting that turns holding on.
"""

from __future__ import annotations

import hashlib
import zlib

import pytest

from protocol.credit import CreditBudget
from spoke.held import HeldTasks
from spoke.source import StreamError, StreamSource
from uploader.errors import UploadError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- agent side: which attempts are held, until when ------------------------------------------


def test_agent_holds_detached_tasks_until_the_grace_period_ends() -> None:
    clock = Clock()
    held = HeldTasks(15, clock)
    held.detach(["a", "b"])
    assert sorted(held.live()) == ["a", "b"] and "a" in held
    clock.now += 10
    held.detach(["a"])  # a second lost dial does not extend the deadline
    assert held.expired() == []
    clock.now += 5
    assert held.live() == []  # a Hello now would list none of them
    assert sorted(held.expired()) == ["a", "b"]
    assert len(held) == 0 and held.expired() == []


def test_agent_reattach_and_forget_end_holding() -> None:
    clock = Clock()
    held = HeldTasks(15, clock)
    held.detach(["a", "b", "c"])
    held.reattach(["a"])
    held.forget("b")  # the attempt ended on its own while detached
    assert held.live() == ["c"]
    clock.now += 15
    assert held.expired() == ["c"]


# -- the stream check across two streams -------------------------------------------------------


def _source(size: int, crc32: bool) -> tuple[CreditBudget, StreamSource]:
    budget = CreditBudget(1000)
    budget.open("t", need=size, min_window=size)
    return budget, StreamSource(size=size, start=0, budget=budget, key="t", crc32=crc32)


def _feed(budget: CreditBudget, src: StreamSource, data: bytes, start: int, end: int) -> None:
    budget.grants()
    for pos in range(start, end, 7):
        src.feed(pos, data[pos : min(pos + 7, end)])


@pytest.mark.anyio
@pytest.mark.parametrize("crc32", [True, False], ids=["crc32", "md5"])
async def test_a_held_attempt_checks_what_the_new_stream_sent(crc32: bool) -> None:
    data = bytes(range(200)) + bytes(range(100))
    budget, src = _source(len(data), crc32)
    _feed(budget, src, data, 0, 130)
    assert await src.read(0, 50) == data[:50]  # partly uploaded, partly still queued
    budget.forget_in_flight("t")
    assert src.restart_check() == 130  # the Hello asks for bytes from here
    _feed(budget, src, data, 130, len(data))
    tail = data[130:]
    src.end_of_data(hashlib.md5(tail).hexdigest(), zlib.crc32(tail))
    assert await src.read(50, 1000) == data[50:]
    src.verify()  # the hub vouches for the tail only, and that is what is checked
    if crc32:
        assert src.crc32() == zlib.crc32(tail)
    else:
        assert src.md5() == hashlib.md5(tail).hexdigest()


@pytest.mark.anyio
async def test_a_held_attempt_still_catches_a_corrupt_tail() -> None:
    data = bytes(range(200))
    budget, src = _source(len(data), True)
    _feed(budget, src, data, 0, 60)
    src.restart_check()
    _feed(budget, src, data, 60, 200)
    src.end_of_data("", zlib.crc32(data))  # a whole-attempt CRC: not what this stream sent
    with pytest.raises(UploadError):
        await src.read(0, 1000)


def test_a_stream_that_ended_cannot_be_resumed() -> None:
    data = bytes(50)
    budget, src = _source(len(data), True)
    _feed(budget, src, data, 0, 50)
    src.end_of_data("", zlib.crc32(data))
    with pytest.raises(StreamError):
        src.restart_check()


# -- settings ------------------------------------------------------------------------------------


def test_held_grace_settings_default_to_a_minute_and_parse(tmp_path) -> None:
    from bupmesh.config import ConfigError
    from spoke.config import load_agents

    base = "server:\n  url: hub:12382\nagent:\n  id: a1\n  token: psk\n"
    path = tmp_path / "agent.yml"
    path.write_text(base)
    (settings,) = load_agents(file=path, env={})
    assert settings.held_grace == 60.0  # as the hub's heartbeat.held_grace_seconds
    path.write_text(base + "  held_grace: 0\n")
    (settings,) = load_agents(file=path, env={})
    assert settings.held_grace == 0
    path.write_text(base + "  held_grace: 15s\n")
    (settings,) = load_agents(file=path, env={})
    assert settings.held_grace == 15.0
    path.write_text(base + "  held_grace: soon\n")
    with pytest.raises(ConfigError, match="held_grace"):
        load_agents(file=path, env={})
