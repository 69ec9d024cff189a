"""Backoff with full jitter: bounds, growth, cap, determinism with an injected rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uploader.retry import RetryPolicy


class FixedRng:
    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def test_ceiling_doubles_then_caps() -> None:
    policy = RetryPolicy(attempts=10, initial=1, maximum=60)
    assert [policy.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.ceiling(10_000) == 60  # no overflow


def test_full_jitter_spans_zero_to_ceiling() -> None:
    policy = RetryPolicy(initial=2, maximum=100)
    assert policy.delay(3, FixedRng(0.0)) == 0.0
    assert policy.delay(3, FixedRng(1.0)) == 8.0
    assert policy.delay(3, FixedRng(0.5)) == 4.0


def test_no_jitter_is_a_fixed_schedule() -> None:
    policy = RetryPolicy(initial=1, maximum=10, jitter=0.0)
    assert [policy.delay(n, FixedRng(0.7)) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_same_seed_same_delays() -> None:
    policy = RetryPolicy()
    a = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    b = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    assert a == b


def test_allows_counts_retries_after_the_first_try() -> None:
    policy = RetryPolicy(attempts=2)
    assert [policy.allows(n) for n in (0, 1, 2, 3)] == [False, True, True, False]
    assert not RetryPolicy(attempts=0).allows(1)


@pytest.mark.parametrize(
    "kwargs", [{"attempts": -1}, {"initial": -1}, {"maximum": -0.1}, {"jitter": 1.5}]
)
def test_bad_policies(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(0, random.Random())


@given(
    attempt=st.integers(1, 200),
    initial=st.floats(0, 10),
    maximum=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_delay_always_within_bounds(
    attempt: int, initial: float, maximum: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(initial=initial, maximum=maximum, jitter=jitter)
    delay = policy.delay(attempt, random.Random(seed))
    ceiling = policy.ceiling(attempt)
    assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9
    assert ceiling <= maximum
