"""Sizing the reconnect window: the admission rate measured, the window, when to tell."""

from __future__ import annotations

import pytest

from hub.agents.reconnect_window import (
    ANNOUNCE_EVERY_SECONDS,
    DEFAULT_RATE,
    MIN_SAMPLE,
    AdmissionMeter,
    WindowAnnouncer,
    window_seconds,
)


class Clocks:
    def __init__(self) -> None:
        self.wall = 1000.0
        self.cpu = 5.0


def meter(clocks: Clocks, fixed: float = 0.0) -> AdmissionMeter:
    return AdmissionMeter(clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu,
                          fixed_rate=fixed)


def admit(m: AdmissionMeter, clocks: Clocks, n: int, cpu_each: float, over: float = 0.9) -> None:
    for _ in range(n):
        clocks.wall += over / n
        clocks.cpu += cpu_each
        m.admitted()


def test_before_a_busy_second_the_default_rate_stands() -> None:
    clocks = Clocks()
    m = meter(clocks)
    assert m.rate() == DEFAULT_RATE
    admit(m, clocks, MIN_SAMPLE - 1, 0.002)
    clocks.wall += 1.0
    m.admitted()  # closes a bin too thin to say anything
    assert m.cost is None and m.rate() == DEFAULT_RATE


def test_a_busy_second_sets_the_cost_and_the_rate_follows_it() -> None:
    clocks = Clocks()
    m = meter(clocks)
    admit(m, clocks, 400, 0.001)  # 1 ms of CPU each
    clocks.wall += 0.2
    m.admitted()  # the next second begins: the first is measured
    assert m.cost == pytest.approx(0.001, rel=0.01)
    assert m.rate() == pytest.approx(500, rel=0.02)  # half a core's worth at 1 ms each
    # A cheaper second moves the smoothed cost part of the way.
    admit(m, clocks, 400, 0.0005)
    clocks.wall += 0.2
    m.admitted()
    assert 0.0005 < m.cost < 0.001


def test_a_second_spread_over_an_idle_minute_is_not_a_sample() -> None:
    clocks = Clocks()
    m = meter(clocks)
    admit(m, clocks, 100, 0.001, over=60.0)  # 100 admissions, but over a minute
    clocks.wall += 1.0
    m.admitted()
    assert m.cost is None


def test_a_configured_rate_wins() -> None:
    clocks = Clocks()
    m = meter(clocks, fixed=250.0)
    admit(m, clocks, 400, 0.001)
    clocks.wall += 1
    m.admitted()
    assert m.rate() == 250.0


def test_the_window_is_the_fleet_over_the_rate_within_bounds() -> None:
    assert window_seconds(10_000, 800, low=5, high=60) == pytest.approx(12.5)
    assert window_seconds(3, 800, low=5, high=60) == 5
    assert window_seconds(200_000, 800, low=5, high=60) == 60
    assert window_seconds(10_000, 800, low=5, high=0) == 0  # no advice


def test_connected_agents_hear_of_a_window_that_moved_a_quarter_at_most_every_few_s() -> None:
    now = [0.0]
    a = WindowAnnouncer(lambda: now[0])
    assert a.due(5.0)  # the first window is news
    now[0] += 1
    assert not a.due(5.0)
    assert not a.due(6.0)  # < 25 % and too soon
    now[0] += ANNOUNCE_EVERY_SECONDS
    assert not a.due(6.0)  # old enough, but < 25 %
    assert a.due(6.5)
    assert a.announced == 6.5
    now[0] += 1
    assert not a.due(20.0)  # a big change, but the last was 1 s ago
    now[0] += ANNOUNCE_EVERY_SECONDS
    assert a.due(20.0)
