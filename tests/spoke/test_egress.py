"""The agent's egress watch: asks at start, every interval, soon after a network error.

Driven with a scripted lookup (no network) on both event loops; the lookup
against the simulator itself is tested in tests/uploader/test_uploader_rules.py
and, through a proxy from a real agent process, in tests/spoke/test_agent_reach.py.
"""

from __future__ import annotations

import anyio
import pytest

from spoke.config import AgentSettings
from spoke.egress import EgressWatch, zone_lookup
from uploader.errors import ErrorKind, UploadError

pytestmark = pytest.mark.anyio


class Script:
    """A lookup answering from a list: an address, or an UploadError to raise."""

    def __init__(self, *answers: str | UploadError) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.asked = anyio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.asked.set()
        self.asked = anyio.Event()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, UploadError):
            raise answer
        return answer


DOWN = UploadError(ErrorKind.NETWORK, "connection failed (ConnectError) on zone")


async def test_first_answer_then_changes_are_reported() -> None:
    script = Script("198.51.100.1", "198.51.100.1", "198.51.100.2")
    changes: list[str] = []
    moved = anyio.Event()

    def changed(address: str) -> None:
        changes.append(address)
        if len(changes) == 2:
            moved.set()

    watch = EgressWatch(600, script, on_change=changed)
    watch.poke_gap = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        with anyio.fail_after(5):
            await watch.first_answer.wait()
            assert watch.address == "198.51.100.1"
            for _ in range(2):  # a network error elsewhere: look again at once
                asked = script.asked
                watch.poke()
                await asked.wait()
            await moved.wait()
        tg.cancel_scope.cancel()
    assert changes == ["198.51.100.1", "198.51.100.2"]  # the same answer is no change
    assert script.calls == 3


async def test_failures_keep_the_last_address_and_back_off() -> None:
    script = Script("198.51.100.1", DOWN, DOWN, DOWN, "198.51.100.1")
    watch = EgressWatch(60, script)
    watch.retry_first = 5
    assert await watch.check() == 60
    assert [await watch.check() for _ in range(3)] == [5, 10, 20]  # then ... up to 60
    assert watch.address == "198.51.100.1" and watch.failures == 3
    assert await watch.check() == 60 and watch.failures == 0


async def test_a_bug_in_the_lookup_never_escapes() -> None:
    async def broken() -> str:
        raise KeyError("oops")

    watch = EgressWatch(60, broken)
    assert await watch.check() == 60 and watch.address == ""


async def test_interval_zero_never_asks() -> None:
    script = Script("198.51.100.1")
    watch = EgressWatch(0, script)
    with anyio.fail_after(1):
        await watch.run()  # returns at once
    assert watch.first_answer.is_set() and script.calls == 0 and not watch.enabled


async def test_lookup_uses_the_agents_proxy_and_source_address() -> None:
    made: list[dict] = []

    class Client:
        def __init__(self, credentials: object, **kw: object) -> None:
            made.append(kw)
            assert not credentials.cookies  # type: ignore[attr-defined]  # no login sent

        async def __aenter__(self) -> Client:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

        def api(self, path: str) -> str:
            return f"http://api.test/{path}"

        async def call(self, op: str, method: str, url: str, **kw: object) -> dict:
            assert (op, method, url) == ("zone", "GET", "http://api.test/x/web-interface/zone")
            return {"code": 0, "data": {"addr": "203.0.113.9"}}

    settings = AgentSettings(
        server_url="127.0.0.1:1", agent_id="a", agent_name="a", token="psk",
        proxy="socks5://127.0.0.1:1080", api_url="http://api.test",
    )  # fmt: skip
    assert await zone_lookup(settings, Client)() == "203.0.113.9"
    assert made == [
        {"api_url": "http://api.test", "source_ip": None, "proxy": "socks5://127.0.0.1:1080",
         "timeout": 30}
    ]  # fmt: skip
