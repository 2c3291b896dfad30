"""MX routing through the real DnsResolver against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from mailprime.delivery.router import (
    IpPreference,
    Route,
    Router,
    RoutingError,
    RoutingLimits,
)
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer, Zone


@pytest.fixture
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer() as server:
        yield server


def route(dns: DnsTestServer, domain: str, *, seed: int = 0, limits: RoutingLimits | None = None,
          ip_preference: IpPreference = IpPreference.IPV4_FIRST, timeout: float = 2.0) -> tuple[Route, ...]:
    router = Router(DnsResolver([dns.address], timeout), limits=limits, ip_preference=ip_preference,
                    rng=random.Random(seed))
    return asyncio.run(router.route(domain))


def route_error(dns: DnsTestServer, domain: str, **kwargs: Any) -> RoutingError:
    with pytest.raises(RoutingError) as err:
        route(dns, domain, **kwargs)
    return err.value


def hosts(routes: tuple[Route, ...]) -> list[str]:
    return [r.mx_host for r in routes]


def add_host(zone: Zone, name: str, *ips: str) -> None:
    for ip in ips:
        if ":" in ip:
            zone.add_aaaa(name, ip)
        else:
            zone.add_a(name, ip)


# Ordering ---------------------------------------------------------------------------------------

def test_mx_sorted_by_preference_each_resolved(dns: DnsTestServer) -> None:
    z = dns.zone
    z.add_mx("example.com", 30, "c.example.com")
    z.add_mx("example.com", 10, "a.example.com")
    z.add_mx("example.com", 20, "b.example.com")
    add_host(z, "a.example.com", "192.0.2.1", "2001:db8::1")
    add_host(z, "b.example.com", "192.0.2.2")
    add_host(z, "c.example.com", "192.0.2.3")
    assert route(dns, "Example.COM.") == (
        Route("a.example.com", "192.0.2.1", 10),
        Route("a.example.com", "2001:db8::1", 10),
        Route("b.example.com", "192.0.2.2", 20),
        Route("c.example.com", "192.0.2.3", 30),
    )


def test_equal_preferences_are_shuffled(dns: DnsTestServer) -> None:
    z = dns.zone
    for i in range(4):
        z.add_mx("example.com", 10, f"mx{i}.example.com")
        add_host(z, f"mx{i}.example.com", f"192.0.2.{i + 1}")
    z.add_mx("example.com", 5, "first.example.com")
    add_host(z, "first.example.com", "192.0.2.100")
    orders = set()
    for seed in range(8):
        found = hosts(route(dns, "example.com", seed=seed))
        assert found[0] == "first.example.com"
        assert sorted(found[1:]) == [f"mx{i}.example.com" for i in range(4)]
        orders.add(tuple(found))
    assert len(orders) > 1


def test_same_seed_same_order(dns: DnsTestServer) -> None:
    for i in range(4):
        dns.zone.add_mx("example.com", 10, f"mx{i}.example.com")
        add_host(dns.zone, f"mx{i}.example.com", f"192.0.2.{i + 1}")
    assert route(dns, "example.com", seed=3) == route(dns, "example.com", seed=3)


@pytest.mark.parametrize(("pref", "expected"), [
    (IpPreference.IPV4_FIRST, ["192.0.2.1", "2001:db8::1"]),
    (IpPreference.IPV6_FIRST, ["2001:db8::1", "192.0.2.1"]),
    (IpPreference.IPV4_ONLY, ["192.0.2.1"]),
    (IpPreference.IPV6_ONLY, ["2001:db8::1"]),
])
def test_ip_preference(dns: DnsTestServer, pref: IpPreference, expected: list[str]) -> None:
    dns.zone.add_mx("example.com", 10, "mx.example.com")
    add_host(dns.zone, "mx.example.com", "192.0.2.1", "2001:db8::1")
    assert [r.ip for r in route(dns, "example.com", ip_preference=pref)] == expected


# Null MX and implicit MX ------------------------------------------------------------------------

def test_null_mx_is_a_permanent_failure(dns: DnsTestServer) -> None:
    dns.zone.add_null_mx("nomail.example")
    dns.zone.add_a("nomail.example", "192.0.2.1")  # must not be used as implicit MX
    err = route_error(dns, "nomail.example")
    assert err.permanent and not err.transient
    assert (err.smtp_code, err.enhanced) == (556, "5.1.10")
    assert err.one_line() == "556 5.1.10 domain nomail.example does not accept mail (null MX, RFC 7505)"


def test_null_mx_beside_real_mx_is_ignored(dns: DnsTestServer) -> None:
    dns.zone.add_null_mx("mixed.example")
    dns.zone.add_mx("mixed.example", 10, "mx.mixed.example")
    add_host(dns.zone, "mx.mixed.example", "192.0.2.1")
    assert route(dns, "mixed.example") == (Route("mx.mixed.example", "192.0.2.1", 10),)


def test_no_mx_means_implicit_mx(dns: DnsTestServer) -> None:
    add_host(dns.zone, "plain.example", "192.0.2.5", "2001:db8::5")
    assert route(dns, "plain.example") == (
        Route("plain.example", "192.0.2.5", 0, implicit=True),
        Route("plain.example", "2001:db8::5", 0, implicit=True),
    )


def test_no_mx_and_no_address_is_permanent(dns: DnsTestServer) -> None:
    dns.zone.add_txt("textonly.example", "v=spf1 -all")
    err = route_error(dns, "textonly.example")
    assert err.permanent and err.enhanced == "5.1.2"
    assert "no MX and no address" in err.reason


# DNS failures -----------------------------------------------------------------------------------

def test_nxdomain_is_permanent(dns: DnsTestServer) -> None:
    err = route_error(dns, "nowhere.example")
    assert err.permanent
    assert (err.smtp_code, err.enhanced) == (550, "5.1.2")
    assert err.domain == "nowhere.example"


def test_temporary_failure_on_mx_is_transient(dns: DnsTestServer) -> None:
    dns.zone.servfail("flaky.example")
    err = route_error(dns, "flaky.example")
    assert err.transient
    assert (err.smtp_code, err.enhanced) == (451, "4.4.3")


def test_timeout_on_mx_is_transient(dns: DnsTestServer) -> None:
    dns.zone.drop("slow.example")
    assert route_error(dns, "slow.example", timeout=0.3).transient


def test_unresolvable_mx_host_is_skipped(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "gone.example.com")
    dns.zone.add_mx("example.com", 20, "backup.example.com")
    add_host(dns.zone, "backup.example.com", "192.0.2.2")
    assert route(dns, "example.com") == (Route("backup.example.com", "192.0.2.2", 20),)


def test_partial_family_failure_still_routes(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "mx.example.com")
    add_host(dns.zone, "mx.example.com", "192.0.2.1")
    # mx.example.com has no AAAA: NODATA, not a failure
    assert [r.ip for r in route(dns, "example.com")] == ["192.0.2.1"]


def test_no_mx_host_has_an_address_is_permanent(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "gone1.example.com")
    dns.zone.add_mx("example.com", 20, "gone2.example.com")
    err = route_error(dns, "example.com")
    assert err.permanent and err.enhanced == "5.4.4"
    assert "gone1.example.com, gone2.example.com" in err.reason


def test_any_temporary_failure_among_hosts_makes_no_route_transient(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "gone.example.com")
    dns.zone.add_mx("example.com", 20, "flaky.example.com")
    dns.zone.servfail("flaky.example.com")
    err = route_error(dns, "example.com")
    assert err.transient and err.enhanced == "4.4.3"


def test_mx_host_behind_cname(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "mail.example.com")
    dns.zone.add_cname("mail.example.com", "real.example.net")
    add_host(dns.zone, "real.example.net", "192.0.2.8")
    assert route(dns, "example.com") == (Route("mail.example.com", "192.0.2.8", 10),)


# Limits -----------------------------------------------------------------------------------------

def test_mx_hosts_are_capped_and_only_those_resolved(dns: DnsTestServer) -> None:
    for i in range(20):
        dns.zone.add_mx("big.example", i, f"mx{i}.big.example")
        add_host(dns.zone, f"mx{i}.big.example", f"192.0.2.{i + 1}")
    routes = route(dns, "big.example", limits=RoutingLimits(max_mx_hosts=3, max_routes=100))
    assert hosts(routes) == ["mx0.big.example", "mx1.big.example", "mx2.big.example"]
    asked = {q.name for q in dns.queries if q.qtype == "A"}
    assert asked == {"mx0.big.example", "mx1.big.example", "mx2.big.example"}


def test_addresses_per_host_and_total_routes_are_capped(dns: DnsTestServer) -> None:
    for h in range(3):
        dns.zone.add_mx("example.com", h, f"mx{h}.example.com")
        add_host(dns.zone, f"mx{h}.example.com", *(f"192.0.{h}.{i}" for i in range(1, 10)))
    routes = route(dns, "example.com", limits=RoutingLimits(max_addresses_per_host=2, max_routes=5))
    assert [r.ip for r in routes] == ["192.0.0.1", "192.0.0.2", "192.0.1.1", "192.0.1.2", "192.0.2.1"]


def test_default_limits_keep_at_least_two_addresses(dns: DnsTestServer) -> None:
    # RFC 5321 5.1: the client SHOULD try at least two addresses.
    dns.zone.add_mx("example.com", 10, "mx.example.com")
    add_host(dns.zone, "mx.example.com", *(f"192.0.2.{i}" for i in range(1, 30)))
    routes = route(dns, "example.com")
    assert 2 <= len(routes) <= RoutingLimits().max_routes


def test_duplicate_hosts_and_addresses_are_listed_once(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "a.example.com")
    dns.zone.add_mx("example.com", 20, "a.example.com")
    dns.zone.add_mx("example.com", 30, "b.example.com")
    add_host(dns.zone, "a.example.com", "192.0.2.1")
    add_host(dns.zone, "b.example.com", "192.0.2.1", "192.0.2.2")
    assert route(dns, "example.com") == (
        Route("a.example.com", "192.0.2.1", 10),
        Route("b.example.com", "192.0.2.2", 30),
    )


def test_unspecified_addresses_are_never_routes(dns: DnsTestServer) -> None:
    dns.zone.add_mx("example.com", 10, "mx.example.com")
    add_host(dns.zone, "mx.example.com", "0.0.0.0", "::")
    assert route_error(dns, "example.com").permanent


# Address literals -------------------------------------------------------------------------------

@pytest.mark.parametrize(("literal", "ip"), [("[192.0.2.1]", "192.0.2.1"),
                                             ("[IPv6:2001:DB8::1]", "2001:db8::1")])
def test_address_literal_is_its_own_route(dns: DnsTestServer, literal: str, ip: str) -> None:
    (r,) = route(dns, literal)
    assert r.ip == ip and r.host == r.mx_host
    assert dns.queries == []


@pytest.mark.parametrize("literal", ["[not-an-ip]", "[0.0.0.0]"])
def test_bad_address_literal_is_permanent(dns: DnsTestServer, literal: str) -> None:
    assert route_error(dns, literal).permanent
