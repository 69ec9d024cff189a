"""Lines chosen by measured throughput: the pure estimator on a fake clock and rng."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from uploader.line_choice import BusyTime, LineEstimator


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedRng:
    """``random()`` answers from a script (then 0.99: never explore); ``choice`` the first."""

    draws: list[float] = field(default_factory=list)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.99

    def choice(self, seq: list) -> object:
        return seq[0]


def estimator(clock: FakeClock, rng: ScriptedRng, **kw: float) -> LineEstimator:
    return LineEstimator(rng=rng, clock=clock, **kw)


def test_the_probe_only_seeds_until_uploads_measure() -> None:
    clock, rng = FakeClock(), ScriptedRng()
    lines = estimator(clock, rng, explore_rate=0.0)
    assert lines.needs_probe() and lines.choose() is None and lines.best() is None
    lines.seed({"cs_bda2": 0.01, "cs_tx": 0.5, "cs_alia": None}, probe_bytes=100_000)
    assert not lines.needs_probe()
    assert lines.choose() == "cs_bda2"  # nothing measured: the fastest probe
    assert lines.estimate("cs_bda2") == pytest.approx(10_000_000)
    assert lines.estimate("cs_alia") == 0.0  # its probe failed
    lines.observe("cs_bda2", 2_000_000, 2.0)  # the quick prober uploads at 1 MB/s
    lines.observe("cs_tx", 8_000_000, 2.0)  # the slow prober at 4 MB/s
    assert lines.choose() == "cs_tx"
    best = lines.best()
    assert best is not None and best.name == "cs_tx" and best.measured
    assert best.bps == pytest.approx(4_000_000)  # the first measurement replaces the seed


def test_measurements_blend_as_an_exponentially_weighted_mean() -> None:
    lines = estimator(FakeClock(), ScriptedRng(), weight=0.5, explore_rate=0.0)
    lines.observe("cs_tx", 4_000_000, 1.0)
    lines.observe("cs_tx", 2_000_000, 1.0)
    assert lines.estimate("cs_tx") == pytest.approx(3_000_000)
    lines.observe("cs_tx", 60_000, 0.001)  # too small to mean anything: ignored
    lines.observe("cs_tx", 3_000_000, 0.0)
    assert lines.estimate("cs_tx") == pytest.approx(3_000_000)
    [stats] = lines.stats()
    assert stats.samples == 2


def test_exploration_tries_unmeasured_lines_then_the_stalest() -> None:
    clock = FakeClock()
    rng = ScriptedRng([0.05, 0.5, 0.05, 0.05])
    lines = estimator(clock, rng, explore_rate=0.1)
    lines.seed({"a": 0.01, "b": 0.02, "c": None}, probe_bytes=100_000)
    lines.observe("a", 5_000_000, 1.0)
    assert lines.choose() == "b"  # draw 0.05 < 0.1: explore; b was never measured
    assert lines.choose() == "a"  # draw 0.5: exploit
    clock.now = 10
    lines.observe("b", 1_000_000, 1.0)
    clock.now = 20
    lines.observe("a", 5_000_000, 1.0)
    assert lines.choose() == "b"  # explore: b was measured longest ago (c's probe failed)
    lines.seed({"a": 0.01, "b": 0.02, "c": 0.03}, probe_bytes=100_000)
    assert lines.choose() == "c"  # a probe answers for c now: worth a try


def test_a_new_probe_round_keeps_measurements_and_drops_gone_lines() -> None:
    clock, rng = FakeClock(), ScriptedRng()
    lines = estimator(clock, rng, reprobe_seconds=3600)
    lines.seed({"a": 0.01, "b": 0.02}, probe_bytes=100_000, lines={"a": "A", "b": "B"})
    lines.observe("b", 9_000_000, 1.0)
    assert lines.line("b") == "B"
    clock.now = 3599
    assert not lines.needs_probe()
    clock.now = 3600
    assert lines.needs_probe()
    lines.seed({"b": 5.0, "c": 0.01}, probe_bytes=100_000)
    assert {s.name for s in lines.stats()} == {"b", "c"}
    assert lines.estimate("b") == pytest.approx(9_000_000)  # measured: the probe changes nothing
    assert lines.line("a") is None and lines.line("b") == "B"


def test_bad_knobs_are_refused() -> None:
    for kw in ({"weight": 0.0}, {"explore_rate": 1.5}, {"reprobe_seconds": 0.0}):
        with pytest.raises(ValueError):
            LineEstimator(**kw)


def test_busy_time_counts_only_while_something_is_in_flight() -> None:
    clock = FakeClock()
    busy = BusyTime(clock)
    busy.start()  # t=0
    clock.now = 1
    busy.start()  # overlapping request
    clock.now = 2
    busy.stop()
    clock.now = 3
    busy.stop()  # busy 0..3
    clock.now = 10  # idle: waiting for bytes from the hub
    busy.start()
    clock.now = 12
    busy.stop()
    assert busy.seconds == pytest.approx(5.0)
    with pytest.raises(RuntimeError):
        busy.stop()
