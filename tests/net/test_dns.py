"""DnsResolver against a real DNS server on loopback (tests/support/dns_server.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from mailprime.domain.errors import ConfigError
from mailprime.message.resolver import (
    DnsError,
    DnsNoData,
    DnsNxDomain,
    DnsTemporaryFailure,
    MxRecord,
    TxtRecord,
)
from mailprime.net.dns import DnsResolver, parse_nameserver
from tests.support.dns_server import DnsTestServer

T = TypeVar("T")


@pytest.fixture
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer() as server:
        yield server


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver(dns: DnsTestServer, **kwargs: Any) -> DnsResolver:
    return DnsResolver([dns.address], 2.0, **kwargs)


# Records ----------------------------------------------------------------------------------------

def test_each_record_type(dns: DnsTestServer) -> None:
    z = dns.zone
    z.add_mx("example.com", 20, "mx2.example.com")
    z.add_mx("example.com", 10, "MX1.Example.com.")
    z.add_a("mx1.example.com", "192.0.2.1")
    z.add_a("mx1.example.com", "192.0.2.2")
    z.add_aaaa("mx1.example.com", "2001:db8:0:0::1")
    z.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    z.add_ptr("192.0.2.1", "mx1.example.com")
    z.add_ptr("2001:db8::1", "mx1.example.com")
    r = resolver(dns)

    async def lookups() -> None:
        assert sorted(await r.mx("example.com")) == [MxRecord(10, "mx1.example.com"),
                                                     MxRecord(20, "mx2.example.com")]
        assert sorted(await r.a("MX1.example.com.")) == ["192.0.2.1", "192.0.2.2"]
        assert await r.aaaa("mx1.example.com") == ("2001:db8::1",)
        assert await r.txt("example.com") == (TxtRecord((b"v=spf1 ip4:192.0.2.0/24 -all",)),)
        assert await r.ptr("192.0.2.1") == ("mx1.example.com",)
        assert await r.ptr("2001:db8::1") == ("mx1.example.com",)

    run(lookups())


def test_txt_split_over_strings_is_joined_without_separator(dns: DnsTestServer) -> None:
    key = "v=DKIM1; k=rsa; p=" + "A" * 400  # longer than one 255-octet string
    dns.zone.add_txt("sel._domainkey.example.com", key)
    (record,) = run(resolver(dns).txt("sel._domainkey.example.com"))
    assert len(record.strings) == 2
    assert record.text == key


def test_null_mx_has_empty_exchange(dns: DnsTestServer) -> None:
    dns.zone.add_null_mx("nomail.example")
    (mx,) = run(resolver(dns).mx("nomail.example"))
    assert mx == MxRecord(0, "")
    assert mx.is_null


def test_unicode_name_is_asked_as_a_label(dns: DnsTestServer) -> None:
    dns.zone.add_a("xn--bcher-kva.example", "192.0.2.7")
    assert run(resolver(dns).a("bücher.example")) == ("192.0.2.7",)
    assert dns.queries[-1].name == "xn--bcher-kva.example"


# Failures ---------------------------------------------------------------------------------------

def test_nxdomain_and_nodata_are_distinct(dns: DnsTestServer) -> None:
    dns.zone.add_a("host.example", "192.0.2.1")
    r = resolver(dns)
    with pytest.raises(DnsNxDomain) as nx:
        run(r.a("missing.example"))
    assert nx.value.permanent and nx.value.name == "missing.example" and nx.value.rdtype == "A"
    with pytest.raises(DnsNoData) as nodata:
        run(r.mx("host.example"))
    assert nodata.value.permanent and nodata.value.rdtype == "MX"


@pytest.mark.parametrize("how", ["servfail", "refuse"])
def test_server_failure_is_temporary(dns: DnsTestServer, how: str) -> None:
    getattr(dns.zone, how)("broken.example")
    with pytest.raises(DnsTemporaryFailure) as err:
        run(resolver(dns).mx("broken.example"))
    assert not err.value.permanent
    assert err.value.smtp_enhanced == "4.4.3"


def test_silence_is_a_temporary_failure_after_the_timeout(dns: DnsTestServer) -> None:
    dns.zone.drop("slow.example")
    with pytest.raises(DnsTemporaryFailure, match="timeout"):
        run(DnsResolver([dns.address], 0.3).a("slow.example"))


def test_unreachable_nameserver_is_temporary() -> None:
    # A port nobody listens on: the UDP query is refused at once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DnsTemporaryFailure):
        run(DnsResolver([f"127.0.0.1:{port}"], 0.5).a("example.com"))


def test_second_nameserver_answers_when_the_first_is_dead(dns: DnsTestServer) -> None:
    dns.zone.add_a("example.com", "192.0.2.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    assert run(DnsResolver([dead, dns.address], 2.0).a("example.com")) == ("192.0.2.1",)


@pytest.mark.parametrize("name", ["", ".", "a..b", "x" * 64 + ".example", ("a" * 60 + ".") * 5])
def test_impossible_names_are_nxdomain_without_a_query(dns: DnsTestServer, name: str) -> None:
    with pytest.raises(DnsNxDomain):
        run(resolver(dns).a(name))
    assert dns.queries == []


def test_ptr_of_garbage_is_nxdomain(dns: DnsTestServer) -> None:
    with pytest.raises(DnsNxDomain):
        run(resolver(dns).ptr("not-an-ip"))


def test_errors_share_one_base() -> None:
    for cls in (DnsNxDomain, DnsNoData, DnsTemporaryFailure):
        assert issubclass(cls, DnsError)


# CNAME and TCP ----------------------------------------------------------------------------------

def test_cname_chain_in_one_answer(dns: DnsTestServer) -> None:
    dns.zone.add_cname("www.example.com", "edge.example.net")
    dns.zone.add_cname("edge.example.net", "host.example.org")
    dns.zone.add_a("host.example.org", "192.0.2.9")
    assert run(resolver(dns).a("www.example.com")) == ("192.0.2.9",)
    assert [q.name for q in dns.queries] == ["www.example.com"]


def test_cname_target_not_in_the_answer_is_chased(dns: DnsTestServer) -> None:
    dns.zone.follow_cnames = False
    dns.zone.add_cname("www.example.com", "edge.example.net")
    dns.zone.add_cname("edge.example.net", "host.example.org")
    dns.zone.add_a("host.example.org", "192.0.2.9")
    assert run(resolver(dns).a("www.example.com")) == ("192.0.2.9",)
    assert [q.name for q in dns.queries] == ["www.example.com", "edge.example.net", "host.example.org"]


def test_cname_to_nowhere_is_nxdomain(dns: DnsTestServer) -> None:
    dns.zone.add_cname("www.example.com", "gone.example.net")
    with pytest.raises(DnsNxDomain):
        run(resolver(dns).a("www.example.com"))


def test_cname_loop_is_bounded(dns: DnsTestServer) -> None:
    dns.zone.follow_cnames = False
    dns.zone.add_cname("a.example", "b.example")
    dns.zone.add_cname("b.example", "a.example")
    with pytest.raises(DnsTemporaryFailure, match="CNAME chain"):
        run(resolver(dns).a("a.example"))
    assert len(dns.queries) == 8


def test_truncated_udp_answer_is_retried_over_tcp(dns: DnsTestServer) -> None:
    for i in range(60):  # 60 A records: about 1 KiB, over the 512-octet UDP limit
        dns.zone.add_a("big.example", f"192.0.2.{i + 1}")
    answer = run(resolver(dns).a("big.example"))
    assert len(answer) == 60
    assert [q.transport for q in dns.queries] == ["udp", "tcp"]


# Cache ------------------------------------------------------------------------------------------

def test_positive_answers_are_cached_for_their_ttl(dns: DnsTestServer) -> None:
    dns.zone.add_a("example.com", "192.0.2.1", ttl=60)
    clock = FakeClock()
    r = resolver(dns, clock=clock)

    async def scenario() -> None:
        assert await r.a("example.com") == ("192.0.2.1",)
        dns.zone.remove("example.com")
        dns.zone.add_a("example.com", "192.0.2.2", ttl=60)
        clock.now += 59
        assert await r.a("Example.COM") == ("192.0.2.1",)  # still cached, case-insensitively
        clock.now += 1
        assert await r.a("example.com") == ("192.0.2.2",)

    run(scenario())
    assert len(dns.queries) == 2


def test_ttl_zero_is_not_cached_and_max_ttl_caps(dns: DnsTestServer) -> None:
    dns.zone.add_a("zero.example", "192.0.2.1", ttl=0)
    dns.zone.add_a("long.example", "192.0.2.1", ttl=86400)
    clock = FakeClock()
    r = resolver(dns, clock=clock, max_ttl=100)

    async def scenario() -> None:
        await r.a("zero.example")
        await r.a("zero.example")
        await r.a("long.example")
        clock.now += 100
        await r.a("long.example")

    run(scenario())
    assert [q.name for q in dns.queries] == ["zero.example"] * 2 + ["long.example"] * 2


def test_negative_answers_are_cached_by_soa_minimum(dns: DnsTestServer) -> None:
    dns.zone.negative_ttl = 30
    dns.zone.add_a("host.example", "192.0.2.1")
    clock = FakeClock()
    r = resolver(dns, clock=clock)

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(DnsNxDomain):
                await r.a("missing.example")
            with pytest.raises(DnsNoData):
                await r.mx("host.example")
        clock.now += 30
        with pytest.raises(DnsNxDomain):
            await r.a("missing.example")

    run(scenario())
    assert [(q.name, q.qtype) for q in dns.queries] == [
        ("missing.example", "A"), ("host.example", "MX"), ("missing.example", "A")]


def test_negative_answers_without_soa_and_failures_are_not_cached(dns: DnsTestServer) -> None:
    dns.zone.servfail("broken.example")
    r = resolver(dns)

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(DnsNxDomain):
                await r.a("missing.example")
            with pytest.raises(DnsTemporaryFailure):
                await r.a("broken.example")
        dns.zone.heal("broken.example")
        dns.zone.add_a("broken.example", "192.0.2.3")
        assert await r.a("broken.example") == ("192.0.2.3",)

    run(scenario())
    assert len(dns.queries) == 5


def test_cache_is_bounded(dns: DnsTestServer) -> None:
    for i in range(3):
        dns.zone.add_a(f"h{i}.example", "192.0.2.1")
    r = resolver(dns, cache_size=2)

    async def scenario() -> None:
        for name in ["h0", "h1", "h2", "h0"]:  # h0 was evicted by h2
            await r.a(f"{name}.example")
        await r.a("h2.example")  # still cached

    run(scenario())
    assert [q.name for q in dns.queries] == ["h0.example", "h1.example", "h2.example", "h0.example"]


def test_concurrent_lookups_share_one_query(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "mx.example.com")
    r = resolver(dns)

    async def scenario() -> list[tuple[MxRecord, ...]]:
        return list(await asyncio.gather(*(r.mx("example.com") for _ in range(20))))

    results = run(scenario())
    assert all(res == (MxRecord(10, "mx.example.com"),) for res in results)
    assert len(dns.queries) == 1


def test_a_cancelled_waiter_does_not_cancel_the_others(dns: DnsTestServer) -> None:
    dns.zone.add_a("example.com", "192.0.2.1")
    r = resolver(dns)

    async def scenario() -> tuple[str, ...]:
        first = asyncio.ensure_future(r.a("example.com"))
        second = asyncio.ensure_future(r.a("example.com"))
        await asyncio.sleep(0)  # let both start waiting on the shared query
        first.cancel()
        result = await second
        with pytest.raises(asyncio.CancelledError):
            await first
        return result

    assert run(scenario()) == ("192.0.2.1",)


# Configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 53)),
    ("192.0.2.1:5353", ("192.0.2.1", 5353)),
    ("2001:db8::1", ("2001:db8::1", 53)),
    ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ("[::1]", ("::1", 53)),
])
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize("spec", ["dns.example", "192.0.2.1:x", "192.0.2.1:0", "192.0.2.1:70000",
                                  "[2001:db8::1", "[2001:db8::1]x"])
def test_bad_nameserver_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_nameserver(spec)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        DnsResolver(["127.0.0.1"], 0)
