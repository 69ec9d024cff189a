"""Credit books: unit tests and hypothesis interleavings of hub, wire, agent and uploader.

protocol/credit.py is pure (no I/O, no clock, no event loop), so almost all of these are
plain functions. The one async test runs the books between concurrent hub, agent and
uploader tasks under both anyio backends (asyncio and trio), as both ends may use them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.credit import MAX_FRAME, CreditBudget, CreditError, CreditLedger

# -- CreditLedger --------------------------------------------------------------------------------


def test_ledger_sendable_and_refusal() -> None:
    ledger = CreditLedger()
    assert ledger.sendable() == 0
    ledger.grant(3 * MAX_FRAME // 2)
    assert ledger.sendable() == MAX_FRAME
    ledger.on_sent(MAX_FRAME)
    assert ledger.sendable() == MAX_FRAME // 2
    with pytest.raises(CreditError):
        ledger.on_sent(MAX_FRAME)
    assert ledger.sent == MAX_FRAME  # a refused frame is not accounted
    ledger.on_sent(MAX_FRAME // 2)
    assert ledger.sendable() == 0 and ledger.available == 0


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_ledger_rejects_bad_grants(bad: object) -> None:
    with pytest.raises(CreditError):
        CreditLedger().grant(bad)  # type: ignore[arg-type]


# -- CreditBudget --------------------------------------------------------------------------------


def test_budget_admission_and_windows() -> None:
    budget = CreditBudget(64)
    assert budget.can_admit(10)
    budget.open("a", need=1000, min_window=10)
    assert budget.window("a") == 64
    assert budget.grants() == [("a", 64)]
    budget.open("b", need=1000, min_window=10)
    assert budget.window("a") == budget.window("b") == 32
    # a holds its whole old window: b must wait until a drains.
    assert budget.grants() == []
    budget.on_received("a", 64)
    budget.on_released("a", 40)
    # b is furthest below its window and goes first; a's pipe is idle, so it gets its room.
    assert budget.grants() == [("b", 32), ("a", 8)]
    assert budget.outstanding <= budget.total
    budget.open("c", need=1000, min_window=20)
    assert not budget.can_admit(30)
    with pytest.raises(CreditError):
        budget.open("d", need=10, min_window=30)
    budget.close("a")
    assert budget.can_admit(30)


def test_budget_regrants_at_half_window_not_at_zero() -> None:
    budget = CreditBudget(100)
    budget.open("a", need=10_000, min_window=10)
    assert budget.grants() == [("a", 100)]
    budget.on_received("a", 90)  # 10 still in flight
    budget.on_released("a", 40)
    assert budget.grants() == []  # only 40 free: below half a window
    budget.on_released("a", 10)
    assert budget.grants() == [("a", 50)]


def test_budget_grants_the_tail_and_never_beyond_need() -> None:
    budget = CreditBudget(100)
    budget.open("a", need=130, min_window=10)
    assert budget.grants() == [("a", 100)]
    budget.on_received("a", 100)
    budget.on_released("a", 70)
    assert budget.grants() == [("a", 30)]
    budget.on_received("a", 30)
    budget.on_released("a", 60)
    assert budget.grants() == []


def test_budget_refuses_bytes_beyond_credit_and_bad_release() -> None:
    budget = CreditBudget(10)
    budget.open("a", need=100, min_window=5)
    [(_, n)] = budget.grants()
    with pytest.raises(CreditError):
        budget.on_received("a", n + 1)
    budget.on_received("a", n)
    with pytest.raises(CreditError):
        budget.on_released("a", n + 1)
    with pytest.raises(CreditError):
        budget.on_received("nope", 1)
    with pytest.raises(CreditError):
        budget.open("a", need=1, min_window=1)


def test_forget_in_flight_after_a_lost_stream() -> None:
    budget = CreditBudget(10)
    budget.open("a", need=100, min_window=5)
    budget.grants()
    budget.on_received("a", 4)
    assert budget.forget_in_flight("a") == 6
    assert budget.grants() == [("a", 6)]


def test_partial_chunk_with_nothing_in_flight_is_regranted() -> None:
    """The uploader cannot release a partial chunk, so an idle pipe must get credit."""
    budget = CreditBudget(10)
    budget.open("a", need=100, min_window=10)
    assert budget.grants() == [("a", 10)]
    budget.on_received("a", 10)
    budget.on_released("a", 8)  # uploader consumed 8, 2 left of a partial chunk
    assert budget.grants() == [("a", 8)]


# -- interleavings -------------------------------------------------------------------------------


@dataclass
class _Task:
    need: int
    chunk: int
    ledger: CreditLedger = field(default_factory=CreditLedger)
    sent: int = 0  # hub side
    received: int = 0  # agent side
    released: int = 0

    def releasable(self) -> int:
        """The uploader releases whole chunks (or the tail) once it holds them."""
        held = self.received - self.released
        if held >= self.chunk:
            return self.chunk
        if self.received == self.need and held > 0:
            return held
        return 0


class _World:
    def __init__(self, total: int, *, slots: int | None = None, reserve: int = 0) -> None:
        self.budget = CreditBudget(total, slots=slots, slot_reserve=reserve)
        self.tasks: dict[str, _Task] = {}
        self.stuck: set[str] = set()  # their uploader never releases anything
        self.credits: deque[tuple[str, int]] = deque()  # agent -> hub
        self.frames: deque[tuple[str, int]] = deque()  # hub -> agent
        self.done: set[str] = set()
        self.counter = 0

    def check(self) -> None:
        assert self.budget.outstanding <= self.budget.total
        for name, t in self.tasks.items():
            assert t.ledger.sent <= t.ledger.granted
            assert self.budget.granted(name) <= t.need

    # actions; each returns whether it did something
    def open(self, need: int, chunk: int) -> bool:
        if not self.budget.can_admit(chunk):
            return False
        name = f"t{self.counter}"
        self.counter += 1
        self.budget.open(name, need=need, min_window=chunk)
        self.tasks[name] = _Task(need=need, chunk=chunk)
        if need == 0:  # nothing to stream: the runner closes it at once
            self.close(name)
        return True

    def close(self, name: str) -> bool:
        self.budget.close(name)
        del self.tasks[name]
        return True

    def grant(self) -> bool:
        grants = self.budget.grants()
        for name, n in grants:
            assert n > 0
            self.credits.append((name, n))
        return bool(grants)

    def deliver_credit(self) -> bool:
        if not self.credits:
            return False
        name, n = self.credits.popleft()
        if name in self.tasks:
            self.tasks[name].ledger.grant(n)
        return True

    def hub_send(self, name: str, max_frame: int) -> bool:
        t = self.tasks[name]
        n = min(t.ledger.sendable(max_frame), t.need - t.sent)
        if n <= 0:
            return False
        t.ledger.on_sent(n)  # raises if beyond credit
        t.sent += n
        self.frames.append((name, n))
        return True

    def deliver_frame(self) -> bool:
        if not self.frames:
            return False
        name, n = self.frames.popleft()
        if name in self.tasks:  # frames of a closed task are discarded on arrival
            self.budget.on_received(name, n)  # raises if beyond credit
            self.tasks[name].received += n
        return True

    def release(self, name: str) -> bool:
        t = self.tasks[name]
        n = 0 if name in self.stuck else t.releasable()
        if not n:
            return False
        self.budget.on_released(name, n)
        t.released += n
        if t.released == t.need:
            self.close(name)
            self.done.add(name)
        return True

    def settle(self, max_frame: int, limit: int = 100_000) -> None:
        """Run every enabled action until all tasks finish; a quiescent unfinished world stalls."""
        for _ in range(limit):
            self.check()
            if not set(self.tasks) - self.stuck:
                return
            progressed = self.grant() | self.deliver_credit() | self.deliver_frame()
            for name in list(self.tasks):
                progressed |= self.hub_send(name, max_frame)
                if name in self.tasks:
                    progressed |= self.release(name)
            assert progressed, f"stall: {self.tasks} budget={self.budget.outstanding}"
        raise AssertionError("did not finish within the step limit")


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_random_interleavings_keep_every_invariant(data: st.DataObject) -> None:
    total = data.draw(st.integers(8, 200), label="budget")
    max_frame = data.draw(st.integers(1, 16), label="max_frame")
    world = _World(total)
    actions = ["open", "grant", "credit", "send", "frame", "release", "close"]
    for _ in range(data.draw(st.integers(0, 120), label="steps")):
        action = data.draw(st.sampled_from(actions))
        names = sorted(world.tasks)
        if action == "open":
            chunk = data.draw(st.integers(1, max(1, total // 2)))
            world.open(data.draw(st.integers(0, 400)), chunk)
        elif action == "grant":
            world.grant()
        elif action == "credit":
            world.deliver_credit()
        elif action == "frame":
            world.deliver_frame()
        elif names and action == "send":
            world.hub_send(data.draw(st.sampled_from(names)), max_frame)
        elif names and action == "release":
            world.release(data.draw(st.sampled_from(names)))
        elif names and action == "close" and data.draw(st.booleans()):
            world.close(data.draw(st.sampled_from(names)))
        world.check()
    # Whatever happened, every open task can still finish: no stall while data remains.
    world.settle(max_frame)
    assert not world.tasks


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_stuck_tasks_never_stall_the_others(data: st.DataObject) -> None:
    """With a slot reserve, tasks whose uploader hangs holding everything it was granted
    cannot keep a later task from progressing."""
    slots = data.draw(st.integers(1, 4), label="slots")
    reserve = data.draw(st.integers(1, 20), label="reserve")
    total = data.draw(st.integers(slots * reserve, slots * reserve + 100), label="budget")
    max_frame = data.draw(st.integers(1, 16), label="max_frame")
    world = _World(total, slots=slots, reserve=reserve)
    for _ in range(data.draw(st.integers(1, 8), label="arrivals")):
        chunk = data.draw(st.integers(1, reserve))
        if not world.open(data.draw(st.integers(1, 300)), chunk):
            continue
        name = f"t{world.counter - 1}"
        if name in world.tasks and data.draw(st.booleans(), label="stuck"):
            world.stuck.add(name)
        # let things run a while before the next arrival
        for _ in range(data.draw(st.integers(0, 50))):
            world.grant()
            world.deliver_credit()
            for n in list(world.tasks):
                world.hub_send(n, max_frame)
            world.deliver_frame()
            world.deliver_frame()
            for n in list(world.tasks):
                if n in world.tasks:
                    world.release(n)
    world.settle(max_frame)
    assert set(world.tasks) <= world.stuck


def test_a_lone_task_gets_most_of_the_budget_but_leaves_the_reserve() -> None:
    mib = 1 << 20
    budget = CreditBudget(64 * mib, slots=3, slot_reserve=10 * mib)
    budget.open("a", need=10**12, min_window=10 * mib)
    assert budget.window("a") == 44 * mib
    assert budget.grants() == [("a", 44 * mib)]
    budget.open("b", need=10**12, min_window=10 * mib)
    budget.open("c", need=10**12, min_window=10 * mib)
    grants = dict(budget.grants())
    assert grants["b"] >= 10 * mib and grants["c"] >= 10 * mib  # a holds 44 and is stuck
    assert not budget.can_admit(1)  # every slot taken
    assert budget.outstanding <= budget.total
    with pytest.raises(CreditError):
        CreditBudget(10, slots=3, slot_reserve=4)


def test_three_big_tasks_share_64_mib_with_10_mib_chunks() -> None:
    """The benchmark shape: every task admitted, finishes, budget never exceeded."""
    mib = 1 << 20
    world = _World(64 * mib)
    for _ in range(3):
        assert world.open(100 * mib, 10 * mib)
    assert not world.budget.can_admit(40 * mib)
    world.settle(MAX_FRAME, limit=10_000)
    assert len(world.done) == 3


# -- concurrent ends, either backend -------------------------------------------------------------


@pytest.mark.anyio
async def test_books_hold_between_concurrent_hub_agent_and_uploader() -> None:
    """A hub task sends only within its ledger, an agent task grants from its budget, an
    uploader task releases what it consumed: every byte arrives and the agent never holds
    or has granted more than its budget."""
    total, need, frame = 64, 1000, 16
    budget = CreditBudget(total)
    budget.open("t", need=need, min_window=8)
    ledger = CreditLedger()
    to_hub_send, to_hub = anyio.create_memory_object_stream[int](100)
    to_agent_send, to_agent = anyio.create_memory_object_stream[int](100)
    to_uploader_send, to_uploader = anyio.create_memory_object_stream[int](100)
    space = anyio.Event()
    uploaded = anyio.Event()
    got = 0
    peak = 0

    def grant() -> None:
        for _, n in budget.grants():
            to_hub_send.send_nowait(n)

    async def hub() -> None:
        sent = 0
        async with to_hub:
            while sent < need:
                ledger.grant(await to_hub.receive())
                while (n := min(ledger.sendable(frame), need - sent)) > 0:
                    ledger.on_sent(n)
                    sent += n
                    await to_agent_send.send(n)
                    await anyio.lowlevel.checkpoint()  # let the others run between frames

    async def agent() -> None:
        nonlocal got, peak
        async with to_agent:
            while got < need:
                n = await to_agent.receive()
                budget.on_received("t", n)
                got += n
                peak = max(peak, budget.outstanding)
                await to_uploader_send.send(n)

    async def uploader() -> None:
        nonlocal space
        done = 0
        async with to_uploader:
            while done < need:
                n = await to_uploader.receive()
                budget.on_released("t", n)
                done += n
                space.set()
        uploaded.set()

    async def pump() -> None:
        nonlocal space
        while True:
            grant()
            await space.wait()
            space = anyio.Event()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            tg.start_soon(agent)
            tg.start_soon(uploader)
            await hub()
            await uploaded.wait()
            tg.cancel_scope.cancel()
    assert got == need and ledger.sent == need
    assert 0 < peak <= total
