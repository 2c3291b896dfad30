"""A short-lived memo in front of any `Resolver`: repeated look-ups of one name (every message
from one sender asks the same SPF, DMARC and DKIM key records) are answered from a dict.

Theory of operation. The port's answers carry no TTL, so this layer cannot honour one; it keeps
each answer for at most `max_seconds` (a few seconds by default) and relies on the resolver
behind it for the DNS cache proper (net.dns.DnsResolver keeps answers by their TTL and RFC 2308
negative TTL). What it saves is the per-look-up cost of that resolver (name parsing and IDNA
encoding, about 20 us a hit), which at thousands of messages a second is worth a dict. Positive
answers and the two negative ones (NXDOMAIN, NODATA) are memoised; temporary failures never are,
so the next message asks again. The memo is an LRU bounded at `size` entries. Concurrent
look-ups of one name are not merged here: the resolver behind does that.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, MxRecord, Resolver, TxtRecord

T = TypeVar("T")

DEFAULT_SECONDS = 5.0
DEFAULT_SIZE = 4096


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    value: tuple[Any, ...] = ()
    error: DnsError | None = None  # DnsNxDomain or DnsNoData, raised again on a hit


class CachingResolver:
    """Satisfies `Resolver` over `inner`, memoising answers for `max_seconds`."""

    def __init__(self, inner: Resolver, *, max_seconds: float = DEFAULT_SECONDS,
                 size: int = DEFAULT_SIZE, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.max_seconds = max_seconds
        self.size = size
        self.clock = clock
        self._memo: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        return await self._ask("mx", domain, self.inner.mx)

    async def a(self, domain: str) -> tuple[str, ...]:
        return await self._ask("a", domain, self.inner.a)

    async def aaaa(self, domain: str) -> tuple[str, ...]:
        return await self._ask("aaaa", domain, self.inner.aaaa)

    async def txt(self, name: str) -> tuple[TxtRecord, ...]:
        return await self._ask("txt", name, self.inner.txt)

    async def ptr(self, ip: str) -> tuple[str, ...]:
        return await self._ask("ptr", ip, self.inner.ptr)

    def clear(self) -> None:
        self._memo.clear()

    def time_left(self, kind: str, name: str) -> float | None:
        """Seconds the memoised answer to `kind` ("txt", "a", ...) for `name` has left; None
        when none is kept. message.spf_memo reads it so that no verdict outlives an answer it
        was computed from."""
        entry = self._memo.get((kind, name.lower().rstrip(".")))
        return None if entry is None else max(0.0, entry.expires - self.clock())

    async def _ask(self, kind: str, name: str,
                      look_up: Callable[[str], Awaitable[tuple[T, ...]]]) -> tuple[T, ...]:
        key = (kind, name.lower().rstrip("."))
        now = self.clock()
        entry = self._memo.get(key)
        if entry is not None:
            if entry.expires > now:
                self._memo.move_to_end(key)
                if entry.error is not None:
                    raise type(entry.error)(entry.error.message, entry.error.name, entry.error.rdtype)
                return entry.value
            del self._memo[key]
        try:
            value = await look_up(name)
        except (DnsNxDomain, DnsNoData) as exc:
            self._put(key, _Entry(self.clock() + self.max_seconds, error=exc))
            raise
        self._put(key, _Entry(self.clock() + self.max_seconds, value))
        return value

    def _put(self, key: tuple[str, str], entry: _Entry) -> None:
        if self.size <= 0 or self.max_seconds <= 0:
            return
        self._memo[key] = entry
        self._memo.move_to_end(key)
        while len(self._memo) > self.size:
            self._memo.popitem(last=False)


__all__ = ["CachingResolver"]
