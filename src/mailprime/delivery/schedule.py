"""The retry schedule: when a deferred recipient is tried next, and when it expires. Pure.

After the n-th failed attempt (n >= 1) the next one waits `first * factor**(n-1)`, capped at
`max_interval`, optionally spread by ±`jitter` (a fraction) so that a burst of deferrals to one
destination does not return as a burst. A message lives `lifetime` from its creation: the last
attempt is made at the moment it expires (the wait is shortened to land there), and once that
moment has passed `next_attempt` returns None — the caller bounces the recipient as expired.

RFC 5321 4.5.4.1 advises retrying for at least 4-5 days, at intervals of at least 30 minutes;
`DeliverySettings` defaults to 5 days, and a shorter first retry (5 minutes) that grows past
30 minutes within a few attempts, because most deferrals (greylisting) clear within minutes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The smallest wait we ever schedule, whatever jitter does: never retry in a tight loop.
MIN_INTERVAL = timedelta(seconds=1)


def _default_uniform() -> float:
    # Not for security: jitter only spreads retries in time.
    return random.random()


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Durations in seconds, as `DeliverySettings` gives them (retry_first, retry_factor,
    retry_max_interval, max_queue_lifetime)."""

    first: float
    factor: float
    max_interval: float
    lifetime: float
    jitter: float = 0.0  # 0.1 spreads each wait uniformly over ±10 %
    # A source of uniform floats in [0, 1): injectable so tests are deterministic.
    uniform: Callable[[], float] = field(default=_default_uniform, compare=False)

    def __post_init__(self) -> None:
        if self.first < MIN_INTERVAL.total_seconds():
            raise ValueError("retry first interval must be at least one second")
        if self.factor < 1:
            raise ValueError("retry factor must be at least 1")
        if self.max_interval < self.first:
            raise ValueError("retry max interval must be at least the first interval")
        if self.lifetime <= 0:
            raise ValueError("queue lifetime must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("retry jitter must be in [0, 1)")

    def expires_at(self, created_at: datetime) -> datetime:
        return created_at + timedelta(seconds=self.lifetime)

    def interval(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt, before jitter."""
        if attempts < 1:
            return timedelta(seconds=self.first)
        try:
            scaled = self.first * self.factor ** (attempts - 1)
        except OverflowError:  # a huge attempt count: long past the cap
            scaled = self.max_interval
        return timedelta(seconds=min(scaled, self.max_interval))

    def next_attempt(self, attempts: int, now: datetime, created_at: datetime) -> datetime | None:
        """When to try again after `attempts` failed attempts, or None once the lifetime is over.

        The result is never later than `expires_at(created_at)`: the last attempt lands exactly
        on the expiry, and the failure of that one returns None. `now` and `created_at` must
        both be timezone-aware (or both naive)."""
        expires = self.expires_at(created_at)
        if now >= expires:
            return None
        wait = self.interval(attempts)
        if self.jitter:
            spread = (2 * self.uniform() - 1) * self.jitter  # in [-jitter, +jitter)
            wait = max(MIN_INTERVAL, wait * (1 + spread))
        return min(now + wait, expires)


__all__ = ["MIN_INTERVAL", "RetrySchedule"]
