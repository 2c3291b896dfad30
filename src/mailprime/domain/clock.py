"""Time as a port: services ask a Clock instead of reading the wall clock themselves."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC now."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def unix_time(clock: Clock) -> Callable[[], float]:
    """Seconds since the epoch by `clock`, as a function to call again and again: time.time
    itself for the system clock (a tenth of the cost of now().timestamp(), on paths that ask
    once per message signed), else the clock's now()."""
    if type(clock) is SystemClock:
        return time.time
    return lambda: clock.now().timestamp()
