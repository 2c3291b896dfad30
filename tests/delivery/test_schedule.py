"""The retry schedule is pure: plain datetimes in, a datetime or None out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.delivery.schedule import MIN_INTERVAL, RetrySchedule

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MIN = 60
HOUR = 3600
DAY = 86400


def schedule(*, first: float = 5 * MIN, factor: float = 2.0, max_interval: float = 4 * HOUR,
             lifetime: float = 5 * DAY, jitter: float = 0.0) -> RetrySchedule:
    return RetrySchedule(first, factor, max_interval, lifetime, jitter)


def test_intervals_grow_by_the_factor_up_to_the_cap() -> None:
    s = schedule()
    minutes = [s.interval(n).total_seconds() / MIN for n in range(1, 10)]
    assert minutes == [5, 10, 20, 40, 80, 160, 240, 240, 240]


def test_next_attempt_is_now_plus_interval() -> None:
    s = schedule()
    now = T0 + timedelta(hours=1)
    assert s.next_attempt(1, now, T0) == now + timedelta(minutes=5)
    assert s.next_attempt(3, now, T0) == now + timedelta(minutes=20)


def test_last_attempt_lands_on_the_expiry_then_none() -> None:
    s = schedule()
    expires = T0 + timedelta(days=5)
    assert s.expires_at(T0) == expires
    near_end = expires - timedelta(minutes=30)
    assert s.next_attempt(20, near_end, T0) == expires
    assert s.next_attempt(21, expires, T0) is None
    assert s.next_attempt(21, expires + timedelta(seconds=1), T0) is None


def test_a_whole_life_is_bounded_and_ends() -> None:
    s = schedule()
    now, attempts = T0, 1
    for _ in range(1000):
        nxt = s.next_attempt(attempts, now, T0)
        if nxt is None:
            break
        assert now < nxt <= s.expires_at(T0)
        now, attempts = nxt, attempts + 1
    else:
        pytest.fail("the schedule never expired")
    assert now == s.expires_at(T0)
    assert 25 < attempts < 40  # 5 days at up to 4 h, after a quick start


def test_huge_attempt_counts_do_not_overflow() -> None:
    s = schedule(factor=10.0)
    assert s.interval(10_000) == timedelta(hours=4)


def test_zero_attempts_waits_the_first_interval() -> None:
    assert schedule().interval(0) == timedelta(minutes=5)


def test_factor_one_is_a_fixed_interval() -> None:
    s = schedule(factor=1.0)
    assert {s.interval(n) for n in range(1, 50)} == {timedelta(minutes=5)}


def test_jitter_uses_the_injected_source() -> None:
    now = T0 + timedelta(hours=1)
    low = RetrySchedule(300, 2.0, 4 * HOUR, 5 * DAY, jitter=0.1, uniform=lambda: 0.0)
    high = RetrySchedule(300, 2.0, 4 * HOUR, 5 * DAY, jitter=0.1, uniform=lambda: 0.999999)
    mid = RetrySchedule(300, 2.0, 4 * HOUR, 5 * DAY, jitter=0.1, uniform=lambda: 0.5)
    assert low.next_attempt(1, now, T0) == now + timedelta(seconds=270)
    assert mid.next_attempt(1, now, T0) == now + timedelta(seconds=300)
    high_wait = high.next_attempt(1, now, T0)
    assert high_wait is not None
    assert timedelta(seconds=329) < high_wait - now < timedelta(seconds=330)


def test_default_jitter_source_stays_in_range() -> None:
    s = schedule(jitter=0.5)
    now = T0 + timedelta(hours=1)
    for _ in range(200):
        nxt = s.next_attempt(1, now, T0)
        assert nxt is not None
        assert timedelta(seconds=150) <= nxt - now <= timedelta(seconds=450)


@pytest.mark.parametrize("kwargs", [
    {"first": 0}, {"first": 0.5}, {"factor": 0.9}, {"max_interval": 60}, {"lifetime": 0},
    {"jitter": 1.0}, {"jitter": -0.1},
])
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        schedule(**kwargs)


@given(
    first=st.integers(1, 3600),
    factor=st.floats(1.0, 10.0),
    cap_extra=st.integers(0, 86400),
    lifetime=st.integers(1, 30 * DAY),
    jitter=st.floats(0.0, 0.99),
    u=st.floats(0.0, 0.999999),
    attempts=st.integers(0, 10_000),
    age=st.integers(0, 40 * DAY),
)
def test_properties(first: int, factor: float, cap_extra: int, lifetime: int, jitter: float,
                    u: float, attempts: int, age: int) -> None:
    s = RetrySchedule(first, factor, first + cap_extra, lifetime, jitter=jitter, uniform=lambda: u)
    now = T0 + timedelta(seconds=age)
    nxt = s.next_attempt(attempts, now, T0)
    if age >= lifetime:
        assert nxt is None
        return
    assert nxt is not None
    assert nxt <= s.expires_at(T0)
    assert nxt - now >= min(MIN_INTERVAL, s.expires_at(T0) - now)
    assert s.interval(attempts) <= timedelta(seconds=first + cap_extra)
    assert s.interval(attempts) <= s.interval(attempts + 1)
