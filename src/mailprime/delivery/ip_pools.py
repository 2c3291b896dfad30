"""IP pools and warm-up: which source address a message leaves from, and how much each may send.

Theory of operation. Reputation is earned per sending address, so senders keep separate
addresses for separate streams (receipts must not share a reputation with a newsletter) and
bring a new address up slowly: providers distrust an unknown address that starts with volume.

* Pools. A pool is a named set of source addresses. `PoolSelector.choose` picks the pool of a
  message by its envelope sender's domain (a pool listing "example.com" also takes
  "news.example.com"), else by its class (domain.mail.Priority: transactional, normal, bulk),
  else the default pool, else none: the operating system picks the address.
* Warm-up. A `WarmupSchedule` gives an address a cap per UTC day counted from its start day
  (a list of caps, or a first cap multiplied by a factor each day); after the schedule it has
  none. `WarmupCounter.acquire` chooses an address of the pool under its cap (round robin,
  addresses with an idle connection to the destination first) and reserves the job's recipients
  on it; `commit` counts them once a transaction took place, `release` hands back a reservation
  that was never sent. When every address is at its cap the caller defers the job to the start
  of the next UTC day.
* Sharing across processes. The counts live in the SendingIpStore (one row per address and
  day). A write per message would cost the relay path a database transaction each, so counts
  are kept in memory and `sync()` — at most every `flush_seconds`, inline on the next acquire,
  and at close — adds them to the store and reads back the day's totals, which include the other
  processes' counts. An address may therefore overshoot its cap by what the other processes
  sent since their last sync: a few seconds of mail, a small fraction of any daily cap.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import count

from mailprime.domain.clock import Clock
from mailprime.domain.mail import Priority
from mailprime.logline import emit
from mailprime.storage.ports import SendingIpStore

log = logging.getLogger("mailprime.delivery.ip_pools")


@dataclass(frozen=True, slots=True)
class IpPool:
    name: str
    addresses: tuple[str, ...]
    sender_domains: frozenset[str] = frozenset()
    priorities: frozenset[Priority] = frozenset()


class PoolSelector:
    def __init__(self, pools: Iterable[IpPool], default: str = "") -> None:
        self.pools = {pool.name: pool for pool in pools}
        self.default = self.pools.get(default) if default else None

    def choose(self, sender: str, priority: Priority) -> IpPool | None:
        domain = sender.rpartition("@")[2].lower().rstrip(".") if "@" in sender else ""
        if domain:
            for pool in self.pools.values():
                if any(domain == d or domain.endswith("." + d) for d in pool.sender_domains):
                    return pool
        for pool in self.pools.values():
            if priority in pool.priorities:
                return pool
        return self.default


@dataclass(frozen=True, slots=True)
class WarmupSchedule:
    start: date
    caps: tuple[int, ...] = ()
    first: int = 50
    factor: float = 0.0
    days: int = 0

    def cap(self, day: date) -> int | None:
        """Messages the address may send on `day`; None: no cap (the warm-up is over)."""
        n = (day - self.start).days
        if n < 0:
            return 0  # not started: the address is not used yet
        if self.caps:
            return self.caps[n] if n < len(self.caps) else None
        if n < self.days:
            return int(self.first * self.factor ** n)
        return None


@dataclass(frozen=True, slots=True)
class Reservation:
    address: str
    day: date
    messages: int


class WarmupCounter:
    def __init__(self, store: SendingIpStore, schedules: dict[str, WarmupSchedule], clock: Clock, *,
                 flush_seconds: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.schedules = schedules
        self.clock = clock
        self.flush_seconds = flush_seconds
        self._mono = monotonic
        self._day: date | None = None
        self._totals: dict[str, int] = {}  # the store's counts for _day, as last read
        self._unflushed: dict[tuple[date, str], int] = defaultdict(int)
        self._reserved: dict[str, int] = defaultdict(int)  # acquired, not yet committed
        self._synced_at = -1e18
        self._syncing = False
        self._turn = count()
        self.capped_days: dict[str, date] = {}  # address -> day it reached its cap (logged once)

    def today(self) -> date:
        return self.clock.now().astimezone(UTC).date()

    def next_day(self) -> datetime:
        """Start of the next UTC day: when capped addresses may send again."""
        return datetime.combine(self.today() + timedelta(days=1), datetime.min.time(), UTC)

    def used(self, address: str) -> int:
        """Messages counted or reserved on `address` today, as far as this process knows."""
        day = self.today()
        return (self._totals.get(address, 0) if self._day == day else 0) \
            + self._unflushed.get((day, address), 0) + self._reserved.get(address, 0)

    def cap(self, address: str) -> int | None:
        schedule = self.schedules.get(address)
        return None if schedule is None else schedule.cap(self.today())

    async def acquire(self, addresses: Sequence[str], messages: int,
                      prefer: Collection[str] = ()) -> Reservation | None:
        """Reserves `messages` on an address of `addresses` under its cap today (one in
        `prefer` if possible); None when every address is at its cap."""
        day = self.today()
        if self._day != day or self._mono() - self._synced_at >= self.flush_seconds:
            await self.sync()
        turn = next(self._turn)
        ordered = [addresses[(turn + i) % len(addresses)] for i in range(len(addresses))]
        ordered.sort(key=lambda a: a not in prefer)  # stable: round robin within each half
        for address in ordered:
            cap = self.cap(address)
            if cap is None or self.used(address) < cap:
                self._reserved[address] += messages
                return Reservation(address, day, messages)
            if self.capped_days.get(address) != day:
                self.capped_days[address] = day
                emit(log, "warmup", address=address, state="capped", cap=cap, day=day.isoformat())
        return None

    def commit(self, reservation: Reservation) -> None:
        self._unreserve(reservation)
        self._unflushed[(reservation.day, reservation.address)] += reservation.messages

    def release(self, reservation: Reservation) -> None:
        self._unreserve(reservation)

    def _unreserve(self, reservation: Reservation) -> None:
        left = self._reserved[reservation.address] - reservation.messages
        if left > 0:
            self._reserved[reservation.address] = left
        else:
            self._reserved.pop(reservation.address, None)

    async def sync(self) -> None:
        """Adds this process's counts to the store and reads back today's totals. One sync at a
        time; a caller arriving during one goes on with the numbers it has."""
        if self._syncing:
            return
        self._syncing = True
        try:
            pending = dict(self._unflushed)
            self._unflushed.clear()
            by_day: dict[date, dict[str, int]] = defaultdict(dict)
            for (day, address), n in pending.items():
                by_day[day][address] = n
            try:
                for day, counts in sorted(by_day.items()):
                    await self.store.add_ip_usage(day, counts)
                    for address in counts:  # written: not to be added again after a failure
                        del pending[(day, address)]
                today = self.today()
                self._totals = dict(await self.store.ip_usage(today))
                self._day = today
            except Exception:  # the store is down: keep the counts for the next sync
                for key, n in pending.items():
                    self._unflushed[key] += n
                log.exception("warm-up counts: writing to the store failed; kept in memory")
            self._synced_at = self._mono()
        finally:
            self._syncing = False


__all__ = ["IpPool", "PoolSelector", "Reservation", "WarmupCounter", "WarmupSchedule"]
