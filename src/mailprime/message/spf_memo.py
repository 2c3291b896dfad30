"""A short-lived memo of SPF verdicts per (client IP, HELO, MAIL FROM).

Theory of operation. A sender that mails many of our users at once (a newsletter, a
notification burst) opens connection after connection from one address with one HELO and one
envelope sender; each message would evaluate the same SPF record against the same IP again
(~40 us of parsing and matching even with every DNS answer memoised). The verdict is a pure
function of those three values and the DNS data, so this memo keeps it for `max_seconds` —
no longer than the resolver memo in front of DNS (message.caching_resolver) keeps the answers
it was computed from, so a changed record is seen as soon as it would be without the memo.

Only definite results are kept: TEMPERROR (a DNS failure) is asked again by the next message,
as RFC 7208 2.6.6 expects a later retry to succeed. The memo is an LRU bounded at `size`
entries, so a flood of distinct senders costs memory once, not without end.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mailprime.message.resolver import Resolver
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
        verdict = await check_spf(resolver, ip, helo, mail_from)
        if verdict.result is not SpfResult.TEMPERROR and self.max_seconds > 0:
            self._memo[(ip, helo, mail_from)] = (self.clock() + self.max_seconds, verdict)
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return verdict


__all__ = ["SpfMemo"]
