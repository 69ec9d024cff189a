"""The live view's change feed (hub/core/events.py); its SSE stream is in
tests/hub/api/test_sse.py."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from hub.core.events import AGENT, IPS, IPS_KEY, TASK, Batch, EventBus, Subscription

# ------------------------------------------------------------------ the bus (sans IO)


@pytest.mark.anyio
async def test_changes_are_coalesced_per_key_in_first_touched_order() -> None:
    bus = EventBus()
    bus.touch_task("t-before")  # nobody listening yet: not kept anywhere
    with bus.subscribe() as sub:
        bus.touch_task("t1")
        bus.touch_agent("a1")
        for _ in range(20):
            bus.touch_task("t1")  # twenty progress reports while the page was busy
        bus.touch_task("t2", "a1")  # a state change: its agent and the IP table too
        batch = await sub.next_batch()
    assert batch == Batch(False, ((TASK, "t1"), (AGENT, "a1"), (TASK, "t2"), (IPS, IPS_KEY)))
    assert bus.subscriber_count == 0  # leaving the block unsubscribes


@pytest.mark.anyio
async def test_a_subscriber_that_never_reads_stays_bounded_and_is_told_to_resync() -> None:
    bus = EventBus(limit=100)
    with bus.subscribe() as stalled, bus.subscribe() as reader:
        for i in range(10_000):  # publishing is synchronous: it cannot wait for anyone
            bus.touch_task(f"t{i}")
            if i == 50:
                assert (await reader.next_batch()).changes[-1] == (TASK, "t50")
        assert len(stalled._pending) == 0 and stalled.overflows == 1
        assert await stalled.next_batch() == Batch(True, ())  # send a snapshot instead
        bus.touch_task("t-new")  # after the resync it tracks changes again
        assert await stalled.next_batch() == Batch(False, ((TASK, "t-new"),))
        assert reader.overflows == 1  # 9,949 keys since its last read: it resyncs too


@pytest.mark.anyio
async def test_a_waiting_subscriber_wakes_on_a_touch_and_on_close() -> None:
    bus = EventBus()
    got: list[Batch | None] = []

    async def consume(sub: Subscription) -> None:
        while (batch := await sub.next_batch()) is not None:
            got.append(batch)
        got.append(None)

    with bus.subscribe() as sub:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, sub)
            await wait_all_tasks_blocked()
            assert got == []
            bus.touch_agent("a1")
            await wait_all_tasks_blocked()
            assert got == [Batch(False, ((AGENT, "a1"),))]
            bus.close()
    assert got[-1] is None and sub.closed
    with bus.subscribe() as late:  # after the hub stopped: closed from the start
        assert await late.next_batch() is None
    assert bus.subscriber_count == 0


def test_bad_limit_and_empty_keys() -> None:
    with pytest.raises(ValueError, match="limit"):
        Subscription(0)
    bus = EventBus()
    with bus.subscribe() as sub:
        bus.touch_task("")
        bus.touch_agent("")
        assert not sub.ready()
