"""SPF (message.spf) against the real loopback DNS server with crafted zones: every result, the
RFC 7208 4.6.4 limits, include loops, macros, IPv6, and garbage records that must never raise."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message.spf import SpfResult, SpfVerdict, check_host, check_spf
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer, Zone


def spf(dns: DnsTestServer, ip: str, mail_from: str, helo: str = "mail.client.test") -> SpfVerdict:
    async def main() -> SpfVerdict:
        return await check_spf(DnsResolver([dns.address], 2.0, cache_size=0), ip, helo, mail_from)

    return asyncio.run(main())


def result(dns: DnsTestServer, ip: str, domain: str = "example.test") -> SpfResult:
    return spf(dns, ip, f"alice@{domain}").result


@pytest.fixture
def zone(dns_server: DnsTestServer) -> Zone:
    return dns_server.zone


# Results -----------------------------------------------------------------------------------------

def test_pass_fail_softfail_neutral_by_qualifier(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 ip4:192.0.2.0/24 -ip4:198.51.100.1 ~ip4:198.51.100.2 "
                                 "?ip4:198.51.100.3 -all")
    assert result(dns_server, "192.0.2.77") is SpfResult.PASS
    assert result(dns_server, "198.51.100.1") is SpfResult.FAIL
    assert result(dns_server, "198.51.100.2") is SpfResult.SOFTFAIL
    assert result(dns_server, "198.51.100.3") is SpfResult.NEUTRAL
    assert result(dns_server, "203.0.113.9") is SpfResult.FAIL


def test_no_match_and_no_all_is_neutral(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 ip4:192.0.2.1")
    verdict = spf(dns_server, "192.0.2.2", "alice@example.test")
    assert verdict == SpfVerdict(SpfResult.NEUTRAL, "mailfrom", "example.test", "alice@example.test",
                                 "example.test: no mechanism matched")


def test_none_without_record_nxdomain_or_bad_domain(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "google-site-verification=abc")
    zone.add_txt("spf2.test", "v=spf10 -all")  # not version 1 followed by a space
    assert result(dns_server, "192.0.2.1") is SpfResult.NONE
    assert result(dns_server, "192.0.2.1", "nowhere.test") is SpfResult.NONE
    assert result(dns_server, "192.0.2.1", "spf2.test") is SpfResult.NONE
    assert spf(dns_server, "192.0.2.1", "alice@localhost").result is SpfResult.NONE
    assert spf(dns_server, "192.0.2.1", "alice@a..b.test").result is SpfResult.NONE


def test_two_records_is_permerror(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 -all")
    zone.add_txt("example.test", "v=spf1 +all")
    assert result(dns_server, "192.0.2.1") is SpfResult.PERMERROR


def test_servfail_is_temperror(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.servfail("example.test")
    assert result(dns_server, "192.0.2.1") is SpfResult.TEMPERROR
    zone.heal("example.test")
    zone.add_txt("example.test", "v=spf1 a:broken.test -all")
    zone.servfail("broken.test")
    assert result(dns_server, "192.0.2.1") is SpfResult.TEMPERROR


@pytest.mark.parametrize("record", [
    "v=spf1 foo -all", "v=spf1 ip4:300.1.1.1 -all", "v=spf1 ip4:192.0.2.1/33", "v=spf1 ip6:zz::1",
    "v=spf1 a/033", "v=spf1 include", "v=spf1 include:", "v=spf1 redirect=a.test redirect=b.test",
    "v=spf1 exp=a.test exp=b.test -all", "v=spf1 exists:%{x}.test", "v=spf1 include:bad%domain.test",
    "v=spf1 all:x", "v=spf1 mx:example.123", "v=spf1 -all foo:bar",
])
def test_syntax_errors_anywhere_are_permerror(dns_server: DnsTestServer, zone: Zone, record: str) -> None:
    zone.add_txt("example.test", record)
    assert result(dns_server, "192.0.2.1") is SpfResult.PERMERROR


def test_unknown_modifiers_are_ignored_and_split_strings_are_joined(dns_server: DnsTestServer,
                                                                     zone: Zone) -> None:
    zone.add_txt("example.test", [b"v=spf1 ip4:192.0.2.1 ", b"foo=bar%{d} -all"])
    assert result(dns_server, "192.0.2.1") is SpfResult.PASS


# Mechanisms --------------------------------------------------------------------------------------

def test_a_and_mx_with_cidr_ipv4_and_ipv6(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 a/30 mx//64 -all")
    zone.add_a("example.test", "192.0.2.4")
    zone.add_aaaa("example.test", "2001:db8::1")
    zone.add_mx("example.test", 10, "mx.example.test")
    zone.add_a("mx.example.test", "198.51.100.10")
    zone.add_aaaa("mx.example.test", "2001:db8:1::1")
    assert result(dns_server, "192.0.2.7") is SpfResult.PASS  # a/30
    assert result(dns_server, "192.0.2.8") is SpfResult.FAIL
    assert result(dns_server, "198.51.100.10") is SpfResult.PASS  # mx, exact for IPv4
    assert result(dns_server, "198.51.100.11") is SpfResult.FAIL
    assert result(dns_server, "2001:db8:1::ffff") is SpfResult.PASS  # mx//64
    assert result(dns_server, "2001:db8::1") is SpfResult.PASS  # a is /128 for IPv6
    assert result(dns_server, "2001:db8::2") is SpfResult.FAIL
    assert result(dns_server, "::ffff:192.0.2.5") is SpfResult.PASS  # IPv4-mapped is IPv4


def test_ip6_and_a_with_domain(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 ip6:2001:db8:aa::/48 a:other.test -all")
    zone.add_aaaa("other.test", "2001:db8:bb::5")
    assert result(dns_server, "2001:db8:aa:1::9") is SpfResult.PASS
    assert result(dns_server, "2001:db8:bb::5") is SpfResult.PASS
    assert result(dns_server, "2001:db8:cc::5") is SpfResult.FAIL
    assert result(dns_server, "192.0.2.1") is SpfResult.FAIL


def test_include_results_and_redirect(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 include:pass.test include:fail.test include:none.test -all")
    zone.add_txt("pass.test", "v=spf1 ip4:192.0.2.1 -all")
    zone.add_txt("fail.test", "v=spf1 -ip4:192.0.2.2 ?all")
    assert result(dns_server, "192.0.2.1") is SpfResult.PASS
    # include's fail does not match: evaluation continues and include:none.test is a permerror
    assert result(dns_server, "192.0.2.2") is SpfResult.PERMERROR
    zone.add_txt("r.test", "v=spf1 ip4:192.0.2.9 redirect=pass.test")
    assert result(dns_server, "192.0.2.9", "r.test") is SpfResult.PASS
    assert result(dns_server, "192.0.2.1", "r.test") is SpfResult.PASS
    assert result(dns_server, "192.0.2.3", "r.test") is SpfResult.FAIL  # pass.test's -all
    zone.add_txt("r2.test", "v=spf1 redirect=none.test")
    assert result(dns_server, "192.0.2.3", "r2.test") is SpfResult.PERMERROR
    zone.add_txt("r3.test", "v=spf1 ?all redirect=pass.test")  # all wins: redirect ignored
    assert result(dns_server, "192.0.2.1", "r3.test") is SpfResult.NEUTRAL


def test_include_temperror_propagates(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 include:slow.test -all")
    zone.servfail("slow.test")
    assert result(dns_server, "192.0.2.1") is SpfResult.TEMPERROR


def test_include_loop_hits_the_lookup_limit(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 include:loop.test -all")
    zone.add_txt("loop.test", "v=spf1 include:example.test -all")
    verdict = spf(dns_server, "192.0.2.1", "alice@example.test")
    assert verdict.result is SpfResult.PERMERROR
    assert "4.6.4" in verdict.reason


def test_ten_dns_terms_pass_eleven_is_permerror(dns_server: DnsTestServer, zone: Zone) -> None:
    for i in range(11):
        zone.add_txt(f"i{i}.test", "v=spf1 ?all")
    zone.add_txt("ten.test", "v=spf1 " + " ".join(f"include:i{i}.test" for i in range(9))
                 + " ip4:192.0.2.0/24 a:host.test -all")
    zone.add_a("host.test", "198.51.100.1")
    assert result(dns_server, "198.51.100.1", "ten.test") is SpfResult.PASS  # exactly 10
    zone.add_txt("eleven.test", "v=spf1 " + " ".join(f"include:i{i}.test" for i in range(10))
                 + " a:host.test -all")
    assert result(dns_server, "198.51.100.1", "eleven.test") is SpfResult.PERMERROR
    # ip4/ip6/all cost nothing: the match before the limit is reached wins
    assert result(dns_server, "192.0.2.1", "ten.test") is SpfResult.PASS


def test_void_lookup_limit(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("two.test", "v=spf1 a:v1.test a:v2.test ip4:192.0.2.1 -all")
    zone.add_txt("three.test", "v=spf1 a:v1.test a:v2.test exists:v3.test ip4:192.0.2.1 -all")
    assert result(dns_server, "192.0.2.1", "two.test") is SpfResult.PASS
    verdict = spf(dns_server, "192.0.2.1", "alice@three.test")
    assert verdict.result is SpfResult.PERMERROR
    assert "void" in verdict.reason


def test_mx_with_more_than_ten_names_is_permerror(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 mx -all")
    for i in range(11):
        zone.add_mx("example.test", i, f"mx{i}.example.test")
    assert result(dns_server, "192.0.2.1") is SpfResult.PERMERROR


def test_ptr_mechanism_validates_forward(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 ptr -all")
    zone.add_ptr("192.0.2.5", "mail.example.test")
    zone.add_a("mail.example.test", "192.0.2.5")
    zone.add_ptr("192.0.2.6", "liar.example.test")  # forward does not point back
    zone.add_a("liar.example.test", "192.0.2.99")
    zone.add_ptr("2001:db8::5", "v6.example.test")
    zone.add_aaaa("v6.example.test", "2001:db8::5")
    assert result(dns_server, "192.0.2.5") is SpfResult.PASS
    assert result(dns_server, "192.0.2.6") is SpfResult.FAIL
    assert result(dns_server, "2001:db8::5") is SpfResult.PASS


def test_ptr_names_beyond_ten_are_ignored(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 ptr:example.test -all")
    for i in range(10):
        zone.add_ptr("192.0.2.5", f"other{i}.elsewhere.test")
        zone.add_a(f"other{i}.elsewhere.test", "192.0.2.5")
    zone.add_ptr("192.0.2.5", "mail.example.test")  # the eleventh name
    zone.add_a("mail.example.test", "192.0.2.5")
    assert result(dns_server, "192.0.2.5") is SpfResult.FAIL


# Macros ------------------------------------------------------------------------------------------

def test_macros_in_exists(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 exists:%{ir}.%{l1r-}.%{d2}._spf.%{o} -all")
    zone.add_a("1.2.0.192.alice.example.test._spf.example.test", "127.0.0.2")
    # l1r- : the local-part split on "-", reversed, the rightmost part kept -> "alice"
    assert spf(dns_server, "192.0.2.1", "alice-smith@example.test").result is SpfResult.PASS
    zone.add_txt("m.test", "v=spf1 exists:%{ir}.%{l1r-}.%{d2}._spf.example.test -all")
    zone.add_a("1.2.0.192.alice.m.test._spf.example.test", "127.0.0.2")
    assert spf(dns_server, "192.0.2.1", "smith-alice@m.test").result is SpfResult.FAIL
    assert spf(dns_server, "192.0.2.1", "alice-smith@m.test").result is SpfResult.PASS


def test_macros_ipv6_version_helo_and_escapes(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 exists:%{v}.%{h}.%{ir}.x.test -all")
    nibbles = ".".join(reversed("20010db8000000000000000000000001"))
    zone.add_a(f"ip6.mail.client.test.{nibbles}.x.test", "127.0.0.2")
    assert result(dns_server, "2001:db8::1") is SpfResult.PASS
    assert result(dns_server, "2001:db8::2") is SpfResult.FAIL
    zone.add_txt("u.test", "v=spf1 exists:%{L}.%%.u.test -all")  # URL escape and "%%"
    zone.add_a("a%2Fb.%.u.test", "127.0.0.2")
    assert spf(dns_server, "192.0.2.1", "a/b@u.test").result is SpfResult.PASS


def test_p_macro(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("example.test", "v=spf1 exists:%{p}.ok.test -all")
    zone.add_ptr("192.0.2.5", "mail.example.test")
    zone.add_a("mail.example.test", "192.0.2.5")
    zone.add_a("mail.example.test.ok.test", "127.0.0.2")
    zone.add_a("unknown.ok.test", "127.0.0.2")
    assert result(dns_server, "192.0.2.5") is SpfResult.PASS
    zone.remove("unknown.ok.test")
    assert result(dns_server, "192.0.2.6") is SpfResult.FAIL  # no PTR: %{p} is "unknown"


def test_long_expansion_is_cut_on_the_left(dns_server: DnsTestServer, zone: Zone) -> None:
    local = ".".join(["abcdefghij" * 6] * 5)  # 304 octets of 63-octet labels
    zone.add_txt("example.test", "v=spf1 exists:%{l}.example.test -all")
    kept = ".".join(["abcdefghij" * 6] * 3) + ".example.test"
    zone.add_a(kept, "127.0.0.2")
    assert spf(dns_server, "192.0.2.1", f"{local}@example.test").result is SpfResult.PASS


# Identities ---------------------------------------------------------------------------------------

def test_null_sender_checks_helo_as_postmaster(dns_server: DnsTestServer, zone: Zone) -> None:
    zone.add_txt("mail.client.test", "v=spf1 exists:%{l}.%{d} -all")
    zone.add_a("postmaster.mail.client.test", "127.0.0.2")
    verdict = spf(dns_server, "192.0.2.1", "", helo="MAIL.client.test.")
    assert (verdict.result, verdict.identity, verdict.domain, verdict.sender) == (
        SpfResult.PASS, "helo", "mail.client.test", "postmaster@mail.client.test")
    assert spf(dns_server, "192.0.2.1", "<>").identity == "helo"


def test_bad_client_ip_is_permerror(dns_server: DnsTestServer) -> None:
    async def main() -> SpfVerdict:
        return await check_host(DnsResolver([dns_server.address], 2.0), "not-an-ip", "example.test",
                                "a@example.test")

    assert asyncio.run(main()).result is SpfResult.PERMERROR


# Fuzz --------------------------------------------------------------------------------------------

_TERM = st.sampled_from([
    "a", "mx", "ptr", "all", "-all", "~all", "ip4:192.0.2.1", "ip6:::1/0", "include:inc.test",
    "exists:%{i}.x.test", "redirect=r.test", "a:%{d}/24", "mx//64", "exp=%{c}", "%{", "=", ":", "/",
    "a//129", "include:example.test", "v=spf1", "\x00", "é", "%{p2r}.t.test",
])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms=st.lists(st.one_of(_TERM, st.text(max_size=12)), max_size=8),
       ip=st.sampled_from(["192.0.2.1", "2001:db8::1"]))
def test_garbage_records_never_raise(dns_server: DnsTestServer, terms: list[str], ip: str) -> None:
    zone = dns_server.zone
    zone.remove("example.test")
    zone.add_txt("example.test", [("v=spf1 " + " ".join(terms)).encode("utf-8")[:255]])
    zone.remove("inc.test")
    zone.add_txt("inc.test", "v=spf1 include:example.test")
    assert isinstance(result(dns_server, ip), SpfResult)
