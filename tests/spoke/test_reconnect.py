"""The agent's reconnect schedule: the hub's window when it named one, else backoff."""

from __future__ import annotations

import random

import pytest

from spoke.backoff import Backoff
from spoke.reconnect import ReconnectSchedule


def schedule(seed: int = 1) -> ReconnectSchedule:
    rng = random.Random(seed)
    return ReconnectSchedule(Backoff(1.0, 60.0, rng), rng)


def test_without_a_window_the_agent_backs_off_as_before() -> None:
    s = schedule()
    s.lost(100.0, welcomed=True)
    delays = []
    for _ in range(8):
        delays.append(s.next_delay(100.0))
        s.lost(100.0, welcomed=False)
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert max(delays[5:]) > 4.0  # it grows: a sixth try may wait up to 60 s


def test_a_window_puts_the_first_dial_inside_it_and_later_ones_on_its_grid() -> None:
    s = schedule()
    s.set_window(10.0)
    s.lost(100.0, welcomed=True)
    first = 100.0 + s.next_delay(100.0)
    assert 100.0 <= first < 110.0
    # The dial fails at once (connection refused): the next is one window later.
    now = first + 0.01
    s.lost(now, welcomed=False)
    assert now + s.next_delay(now) == pytest.approx(first + 10.0)
    # A dial that took 25 s (a slow refusal) keeps its phase: the next grid point after it.
    now = first + 10.0 + 25.0
    s.lost(now, welcomed=False)
    assert now + s.next_delay(now) == pytest.approx(first + 40.0)


def test_a_welcome_starts_a_new_phase_and_a_zero_window_brings_back_the_backoff() -> None:
    s = schedule()
    s.set_window(4.0)
    s.lost(0.0, welcomed=True)
    first = s.next_delay(0.0)
    s.lost(50.0, welcomed=True)  # welcomed again, then lost again at 50
    assert 50.0 <= 50.0 + s.next_delay(50.0) < 54.0
    assert s.next_delay(50.0) != pytest.approx(first)  # a fresh random phase
    s.set_window(0.0)
    s.lost(60.0, welcomed=True)
    assert 1.0 <= s.next_delay(60.0) <= 2.0  # the backoff's first delay
    s.set_window(float("nan"))
    assert s.window == 0.0


@pytest.mark.parametrize("down_for", [0.5, 7.3, 31.0, 300.0])
def test_a_fleet_returns_within_one_window_of_the_hub_evenly(down_for: float) -> None:
    """10,000 agents lose the hub at t=0; it listens again at ``down_for``. Each dials on
    its grid; the first dial at or after that moment gets in. All are back within one
    window, and no second holds more than 1.3x the mean (the backoff gave 8x)."""
    window, n = 10.0, 10_000
    rng = random.Random(7)
    back = []
    for i in range(n):
        s = ReconnectSchedule(Backoff(1.0, 60.0, random.Random(i)), random.Random(rng.random()))
        s.set_window(window)
        s.lost(0.0, welcomed=True)
        now = s.next_delay(0.0)
        while now < down_for:  # refused: the hub is not listening yet
            s.lost(now, welcomed=False)
            now += s.next_delay(now)
        back.append(now - down_for)
    assert max(back) < window
    bins = [0] * int(window)
    for t in back:
        bins[int(t)] += 1
    assert max(bins) / (n / window) < 1.3
