"""A short-lived memo of SPF verdicts per (client IP, HELO, MAIL FROM).

Theory of operation. A sender that mails many of our users at once (a newsletter, a
notification burst) opens connection after connection from one address with one HELO and one
envelope sender; each message would evaluate the same SPF record against the same IP again
(~40 us of parsing and matching even with every DNS answer memoised). The verdict is a pure
function of those three values and the DNS data, so this memo keeps it — but never past the
moment the first of the answers it was computed from leaves the resolver memo in front of DNS
(message.caching_resolver, which keeps each answer `max_seconds` from its look-up). Those
answers may be nearly that old already when the verdict is computed; a verdict kept a fixed
time from its computation could rest on data up to twice the memo's lifetime old. So `check`
evaluates SPF through a thin wrapper that asks the caching resolver, after each look-up, how
long that answer has left (`time_left`, a dict read), and the verdict expires with the
shortest — and after `max_seconds` at most (the cap, and the whole rule when the resolver
keeps no memo). A verdict therefore never rests on an answer older than the resolver memo's
lifetime, and a changed record is seen as soon as it would be without this memo.

Only definite results are kept: TEMPERROR (a DNS failure) is asked again by the next message,
as RFC 7208 2.6.6 expects a later retry to succeed. The memo is an LRU bounded at `size`
entries, so a flood of distinct senders costs memory once, not without end.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mailprime.message.caching_resolver import CachingResolver
from mailprime.message.resolver import MxRecord, Resolver, TxtRecord
from mailprime.message.spf import SpfResult, SpfVerdict, check_spf

DEFAULT_SECONDS = 5.0  # as message.caching_resolver.DEFAULT_SECONDS
DEFAULT_SIZE = 10_000

Key = tuple[str, str, str]


class SpfMemo:
    def __init__(self, *, max_seconds: float = DEFAULT_SECONDS, size: int = DEFAULT_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_seconds = max_seconds
        self.size = size
        self.clock = clock
        self._memo: OrderedDict[Key, tuple[float, SpfVerdict]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._memo)

    def cached(self, ip: str, helo: str, mail_from: str) -> SpfVerdict | None:
        """The remembered verdict, or None (then call `check`)."""
        key = (ip, helo, mail_from)
        entry = self._memo.get(key)
        if entry is None:
            return None
        expires, verdict = entry
        if expires <= self.clock():
            del self._memo[key]
            return None
        self._memo.move_to_end(key)
        return verdict

    async def check(self, resolver: Resolver, ip: str, helo: str, mail_from: str) -> SpfVerdict:
        verdict = self.cached(ip, helo, mail_from)
        if verdict is not None:
            return verdict
        tracked = _Tracking(resolver, self.max_seconds)
        verdict = await check_spf(tracked, ip, helo, mail_from)
        if verdict.result is not SpfResult.TEMPERROR and tracked.least > 0:
            self._memo[(ip, helo, mail_from)] = (self.clock() + tracked.least, verdict)
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return verdict


class _Tracking:
    """A Resolver over `inner` that notes the least time any answer it passed on has left in
    the caching resolver's memo (`least`, at most `cap`)."""

    def __init__(self, inner: Resolver, cap: float) -> None:
        self.inner = inner
        self.least = cap
        self._time_left = inner.time_left if isinstance(inner, CachingResolver) else None

    def _note(self, kind: str, name: str) -> None:
        # Called right after the look-up returns, before anything else runs on the loop: an
        # answer served from the memo is still there (the look-up just moved it to the end).
        if self._time_left is not None:
            left = self._time_left(kind, name)
            if left is not None and left < self.least:
                self.least = left

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        try:
            return await self.inner.mx(domain)
        finally:
            self._note("mx", domain)

    async def a(self, domain: str) -> tuple[str, ...]:
        try:
            return await self.inner.a(domain)
        finally:
            self._note("a", domain)

    async def aaaa(self, domain: str) -> tuple[str, ...]:
        try:
            return await self.inner.aaaa(domain)
        finally:
            self._note("aaaa", domain)

    async def txt(self, name: str) -> tuple[TxtRecord, ...]:
        try:
            return await self.inner.txt(name)
        finally:
            self._note("txt", name)

    async def ptr(self, ip: str) -> tuple[str, ...]:
        try:
            return await self.inner.ptr(ip)
        finally:
            self._note("ptr", ip)


__all__ = ["SpfMemo"]
