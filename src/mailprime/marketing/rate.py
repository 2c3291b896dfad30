"""The campaign rate: a token bucket in front of every accept of a rate-limited campaign
(marketing.dispatch), on an injectable monotonic clock and sleep, so tests need no real time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """`per_minute` messages a minute (0: no limit), at most one second's worth at once."""

    def __init__(self, per_minute: int, *, monotonic: Monotonic = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.per_second = per_minute / 60.0
        self.capacity = max(1.0, self.per_second)
        self._tokens = self.capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = monotonic()

    async def take(self) -> None:
        if self.per_second <= 0:
            return
        self._refill()
        if self._tokens < 1.0:
            await self._sleep((1.0 - self._tokens) / self.per_second)
            self._refill()
        # Taken even if rounding left the refill a hair short of 1: the sleep was exactly the
        # time one token takes, and waiting again for 1e-16 of one would never end.
        self._tokens -= 1.0

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.per_second)
        self._last = now


__all__ = ["Monotonic", "Sleep", "TokenBucket"]
