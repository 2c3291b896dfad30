"""Outbound connections per provider group: a cap on open connections, and idle ones reused.

Theory of operation. A provider sees connections, not jobs: its limit counts every socket we
hold open to it, busy or idle. So the cap of a group (delivery.shaping.GroupLimits.connections)
counts *open* connections — in use, idle in the pool, or being dialled — and a job gets one by
`acquire(group, source, fits, cap)`:

1. an idle connection of the group from the same source address that `fits` the job (its MX
   host is one of the job's routes, with TLS at least as strict as the route demands): reused,
   since a session may carry many transactions (RFC 5321 3.3);
2. else, below the cap, a *slot*: the caller dials and hands the connection over with
   `connected`, or gives the slot back with `abandon`;
3. else, at the cap, an idle connection that does not fit (another source address, another
   host) is closed to make room;
4. else the job waits, first come first served, until a connection is given back or closed.

`release` puts a connection that may carry more (usable, under the group's messages per
connection) back as idle and wakes one waiter; otherwise it closes it, which frees the slot.
`discard` closes a connection but keeps its slot, for the next route of the same job. Idle
connections older than `idle_seconds` are closed when met, by a sweep on each release, and by a
timer: once traffic stops no release comes, and a connection left open would hold one of the
provider's connection slots (and a server process) for as long as the server tolerates it, so
while anything is idle one task sleeps until the oldest idle connection expires, closes what
has expired (with QUIT), and ends when nothing is idle; the next release starts it again, and
`close()` stops it. Closing is awaited before a slot is reused, so the remote side never sees
more than the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from mailprime.delivery.router import Route
from mailprime.delivery.transport import OutboundConnection

SWEEP_INTERVAL = 1.0  # seconds between sweeps of expired idle connections on release
SWEEP_FLOOR = 0.05  # seconds the timer sleeps at least, so that it never spins


@dataclass(slots=True)
class Pooled:
    conn: OutboundConnection
    group: str
    source: str | None  # the bound source address (IP pools); None: the system's choice
    route: Route  # the route it was opened for (MX host, address, TLS requirement)
    idle_since: float = 0.0
    transactions: int = 0


class ConnectionPool:
    def __init__(self, *, idle_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._now = monotonic
        self._open: dict[str, int] = defaultdict(int)  # group -> connections counted
        self._idle: dict[str, list[Pooled]] = defaultdict(list)  # group -> idle, oldest first
        self._waiters: dict[str, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._swept = 0.0
        self._sweeper: asyncio.Task[None] | None = None  # the idle timer, while anything is idle
        self.peak: dict[str, int] = defaultdict(int)  # most connections a group had open at once
        self.swept = 0  # idle connections the timer closed (for tests and metrics)

    def open_count(self, group: str) -> int:
        return self._open.get(group, 0)

    def idle_sources(self, group: str, fits: Callable[[Pooled], bool]) -> set[str | None]:
        """Source addresses with an idle connection to the group that would fit a job."""
        return {item.source for item in self._idle.get(group, ()) if fits(item)}

    async def acquire(self, group: str, source: str | None, fits: Callable[[Pooled], bool],
                      cap: int) -> Pooled | None:
        """An idle connection that fits, or None with a slot reserved for a new connection."""
        while True:
            item = await self._take_idle(group, source, fits)
            if item is not None:
                return item
            if self._open[group] < cap:
                self._open[group] += 1
                self.peak[group] = max(self.peak[group], self._open[group])
                return None
            idle = self._idle.get(group)
            if idle:  # at the cap with connections nobody here can use: close one for room
                victim = idle.pop(0)
                await self._close(victim)
                continue
            await self._wait(group)

    def connected(self, slot_group: str, source: str | None, route: Route,
                  conn: OutboundConnection) -> Pooled:
        """A new connection in the slot `acquire` reserved."""
        return Pooled(conn, slot_group, source, route, self._now())

    def abandon(self, group: str) -> None:
        """Gives back a slot that got no connection (every dial failed, or the job was deferred)."""
        self._open[group] -= 1
        if self._open[group] <= 0:
            self._open.pop(group, None)
        self._wake(group)

    async def discard(self, item: Pooled) -> None:
        """Closes a connection that failed; its slot stays reserved for the caller's next dial."""
        with contextlib.suppress(Exception):
            await item.conn.close()

    async def release(self, item: Pooled, *, max_transactions: int) -> None:
        """After a transaction: back to the idle list if it may carry more, else closed."""
        if item.transactions < max_transactions and item.conn.is_usable():
            item.idle_since = self._now()
            self._idle[item.group].append(item)
            self._wake(item.group)
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.get_running_loop().create_task(self._idle_timer())
        else:
            await self._close(item)
        await self._sweep()

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        for idle in list(self._idle.values()):
            while idle:
                await self._close(idle.pop())
        self._idle.clear()

    # ---------------------------------------------------------------------------------------
    async def _take_idle(self, group: str, source: str | None,
                         fits: Callable[[Pooled], bool]) -> Pooled | None:
        idle = self._idle.get(group)
        if not idle:
            return None
        now = self._now()
        for item in reversed(idle):  # the most recently used first: the likeliest still alive
            if item.source != source or not fits(item):
                continue
            idle.remove(item)
            if now - item.idle_since <= self.idle_seconds and item.conn.is_usable():
                return item
            await self._close(item)
            return await self._take_idle(group, source, fits)
        return None

    async def _close(self, item: Pooled) -> None:
        try:
            with contextlib.suppress(Exception):
                await item.conn.close()
        finally:
            self._open[item.group] -= 1
            if self._open[item.group] <= 0:
                self._open.pop(item.group, None)
            self._wake(item.group)

    async def _sweep(self, *, timer: bool = False) -> None:
        now = self._now()
        if not timer and now - self._swept < SWEEP_INTERVAL:
            return
        self._swept = now
        for group, idle in list(self._idle.items()):
            expired = [i for i in idle if now - i.idle_since > self.idle_seconds]
            for item in expired:
                if item in idle:  # another task may have taken or closed it meanwhile
                    idle.remove(item)
                    if timer:
                        self.swept += 1
                    await self._close(item)
            if not idle and self._idle.get(group) is idle:  # not a list made since by release
                del self._idle[group]

    async def _idle_timer(self) -> None:
        """Sleeps until the oldest idle connection expires, sweeps; ends when none is idle."""
        while True:
            oldest = min((i.idle_since for idle in self._idle.values() for i in idle), default=None)
            if oldest is None:
                return
            delay = oldest + self.idle_seconds - self._now()
            await asyncio.sleep(max(SWEEP_FLOOR, delay))
            await self._sweep(timer=True)

    async def _wait(self, group: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters[group]
        waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future in waiters:
                waiters.remove(future)
            elif future.done() and not future.cancelled():
                self._wake(group)  # we were woken but will not use it: pass it on
            raise

    def _wake(self, group: str) -> None:
        waiters = self._waiters.get(group)
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                break
        if waiters is not None and not waiters:
            self._waiters.pop(group, None)


__all__ = ["ConnectionPool", "Pooled"]
