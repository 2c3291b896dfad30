"""message.spf_memo against the real DnsResolver and the loopback DNS server: a verdict is
reused for the same (IP, HELO, MAIL FROM) until it expires, a different key is evaluated on its
own, TEMPERROR is never kept, and the LRU bound holds. Behind the caching resolver (as the MX
runs it) a verdict expires with the oldest answer it was computed from, so it never rests on
DNS data older than the resolver memo's lifetime."""

from __future__ import annotations

import asyncio

from mailprime.message.caching_resolver import CachingResolver
from mailprime.message.spf import SpfResult
from mailprime.message.spf_memo import SpfMemo
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_verdicts_are_reused_until_they_expire(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("a.test", "v=spf1 ip4:192.0.2.1 -all")
    clock = Clock()

    async def main() -> None:
        resolver = DnsResolver([dns_server.address], 2.0, cache_size=0)
        memo = SpfMemo(max_seconds=5, clock=clock)
        for _ in range(3):
            verdict = await memo.check(resolver, "192.0.2.1", "h.a.test", "x@a.test")
            assert verdict.result is SpfResult.PASS
        assert len(dns_server.queries) == 1
        other = await memo.check(resolver, "192.0.2.9", "h.a.test", "x@a.test")
        assert other.result is SpfResult.FAIL  # another client IP: its own verdict
        assert len(dns_server.queries) == 2 and len(memo) == 2
        # The record changes: the memo keeps the old verdict only until it expires.
        dns_server.zone.remove("a.test")
        dns_server.zone.add_txt("a.test", "v=spf1 -all")
        assert memo.cached("192.0.2.1", "h.a.test", "x@a.test") is not None
        clock.now += 5
        assert memo.cached("192.0.2.1", "h.a.test", "x@a.test") is None
        again = await memo.check(resolver, "192.0.2.1", "h.a.test", "x@a.test")
        assert again.result is SpfResult.FAIL

    asyncio.run(main())


def test_temporary_errors_are_asked_again_and_size_is_bounded(dns_server: DnsTestServer) -> None:
    dns_server.zone.servfail("down.test")
    dns_server.zone.add_txt("a.test", "v=spf1 -all")

    async def main() -> None:
        resolver = DnsResolver([dns_server.address], 2.0, cache_size=0)
        memo = SpfMemo(size=2)
        for _ in range(2):
            verdict = await memo.check(resolver, "192.0.2.1", "h", "x@down.test")
            assert verdict.result is SpfResult.TEMPERROR
        assert len(memo) == 0
        assert sum(q.name == "down.test" for q in dns_server.queries) == 2
        for i in range(4):
            await memo.check(resolver, f"192.0.2.{i + 1}", "h", "x@a.test")
        assert len(memo) == 2  # the two most recent
        assert memo.cached("192.0.2.4", "h", "x@a.test") is not None
        assert memo.cached("192.0.2.1", "h", "x@a.test") is None

    asyncio.run(main())


def test_a_verdict_expires_with_the_oldest_answer_behind_it(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("a.test", "v=spf1 include:b.test -all")
    dns_server.zone.add_txt("b.test", "v=spf1 ip4:192.0.2.1 -all")
    clock = Clock()

    async def main() -> None:
        resolver = CachingResolver(DnsResolver([dns_server.address], 2.0, cache_size=0),
                                   max_seconds=5, clock=clock)
        memo = SpfMemo(max_seconds=5, clock=clock)
        await resolver.txt("b.test")  # another message's look-up memoised b.test at t=1000
        clock.now += 3
        verdict = await memo.check(resolver, "192.0.2.1", "h.a.test", "x@a.test")
        assert verdict.result is SpfResult.PASS  # a.test fresh, b.test 3 s old
        dns_server.zone.remove("b.test")
        dns_server.zone.add_txt("b.test", "v=spf1 -all")
        clock.now += 1.5  # b.test's answer has 0.5 s left in the resolver memo
        assert memo.cached("192.0.2.1", "h.a.test", "x@a.test") is not None
        clock.now += 0.5  # it is gone from the resolver memo: so is the verdict
        assert memo.cached("192.0.2.1", "h.a.test", "x@a.test") is None
        again = await memo.check(resolver, "192.0.2.1", "h.a.test", "x@a.test")
        assert again.result is SpfResult.FAIL  # the changed record, at once
        # b.test is fresh now, a.test's answer (from t=1003) is 2 s old: 3 s more, not 5.
        clock.now += 2.5
        assert memo.cached("192.0.2.1", "h.a.test", "x@a.test") is again
        clock.now += 0.5
        assert memo.cached("192.0.2.1", "h.a.test", "x@a.test") is None

    asyncio.run(main())
