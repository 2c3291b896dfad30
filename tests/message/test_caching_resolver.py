"""message.caching_resolver in front of the real DnsResolver and the loopback DNS server: answers
and NXDOMAIN/NODATA memoised for max_seconds (a fake clock moves time), SERVFAIL never, the LRU
bound kept."""

from __future__ import annotations

import asyncio

import pytest

from mailprime.message.caching_resolver import CachingResolver
from mailprime.message.resolver import DnsNoData, DnsNxDomain, DnsTemporaryFailure
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memo_positive_negative_and_expiry(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("a.test", "v=spf1 -all")
    dns_server.zone.add_a("host.a.test", "192.0.2.1")
    clock = Clock()

    async def main() -> None:
        memo = CachingResolver(DnsResolver([dns_server.address], 2.0, cache_size=0),
                               max_seconds=5, clock=clock)
        for _ in range(3):
            assert (await memo.txt("A.test."))[0].text == "v=spf1 -all"
            with pytest.raises(DnsNxDomain):
                await memo.txt("missing.a.test")
            with pytest.raises(DnsNoData):
                await memo.txt("host.a.test")
        assert len(dns_server.queries) == 3  # one each; the rest came from the memo
        clock.now += 5
        dns_server.zone.remove("a.test")
        dns_server.zone.add_txt("a.test", "v=spf1 ~all")
        assert (await memo.txt("a.test"))[0].text == "v=spf1 ~all"
        assert len(dns_server.queries) == 4

    asyncio.run(main())


def test_temporary_failures_are_not_memoised_and_size_is_bounded(dns_server: DnsTestServer) -> None:
    dns_server.zone.servfail("down.test")
    for i in range(5):
        dns_server.zone.add_a(f"h{i}.test", f"192.0.2.{i + 1}")

    async def main() -> None:
        memo = CachingResolver(DnsResolver([dns_server.address], 2.0, cache_size=0), size=3)
        for _ in range(2):
            with pytest.raises(DnsTemporaryFailure):
                await memo.txt("down.test")
        assert sum(q.name == "down.test" for q in dns_server.queries) == 2
        for i in range(5):
            assert await memo.a(f"h{i}.test") == (f"192.0.2.{i + 1}",)
        dns_server.clear_queries()
        await memo.a("h4.test")  # recent: memoised
        await memo.a("h0.test")  # pushed out by the bound
        assert [q.name for q in dns_server.queries] == ["h0.test"]

    asyncio.run(main())
