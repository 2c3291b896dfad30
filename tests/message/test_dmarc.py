"""DMARC (message.dmarc) against the real loopback DNS server: discovery with the organizational
domain fallback, strict and relaxed alignment, p/sp, pct sampling, From rules, DNS failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.message.dkim_verify import DkimResult, DkimVerdict
from mailprime.message.dmarc import (
    Disposition,
    DmarcRecord,
    DmarcResult,
    DmarcVerdict,
    author_domains,
    check_dmarc,
    is_aligned,
    organizational_domain,
    parse_record,
)
from mailprime.message.spf import SpfResult, SpfVerdict
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer

SPF_NONE = SpfVerdict(SpfResult.NONE, "mailfrom", "bounce.test", "x@bounce.test")


def spf_pass(domain: str) -> SpfVerdict:
    return SpfVerdict(SpfResult.PASS, "mailfrom", domain, f"bounce@{domain}")


def dkim_pass(domain: str) -> DkimVerdict:
    return DkimVerdict(DkimResult.PASS, domain, "s1", "rsa-sha256")


def dmarc(dns: DnsTestServer, from_value: str | Sequence[str], spf: SpfVerdict = SPF_NONE,
          dkim: Sequence[DkimVerdict] = (), sample: float = 0.0) -> DmarcVerdict:
    values = [from_value] if isinstance(from_value, str) else list(from_value)

    async def main() -> DmarcVerdict:
        return await check_dmarc(DnsResolver([dns.address], 2.0, cache_size=0), values, spf, dkim,
                                 lambda: sample)

    return asyncio.run(main())


def test_organizational_domain_from_the_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.example.com.") == "example.com"
    assert organizational_domain("example.test") == "example.test"
    assert organizational_domain("co.uk") == "co.uk"
    assert is_aligned("bounce.example.com", "example.com", strict=False)
    assert not is_aligned("bounce.example.com", "example.com", strict=True)
    assert not is_aligned("example.co.uk", "other.co.uk", strict=False)


def test_record_parsing() -> None:
    assert parse_record("v=DMARC1; p=reject; sp=none; adkim=s; aspf=s; pct=20") == DmarcRecord(
        Disposition.REJECT, Disposition.NONE, True, True, 20)
    assert parse_record("v=DMARC1;p=quarantine") == DmarcRecord(Disposition.QUARANTINE)
    assert parse_record("p=reject; v=DMARC1") is None  # v= must come first
    assert parse_record("v=DMARC1; p=bogus") is None
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:d@example.test") == DmarcRecord(Disposition.NONE)
    assert parse_record("v=DMARC1; p=none; pct=250") == DmarcRecord(Disposition.NONE, pct=100)


def test_no_record_is_none(dns_server: DnsTestServer) -> None:
    verdict = dmarc(dns_server, "a@example.test", spf_pass("example.test"))
    assert (verdict.result, verdict.from_domain, verdict.policy) == (DmarcResult.NONE, "example.test", None)


def test_aligned_spf_or_dkim_passes_relaxed(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    by_spf = dmarc(dns_server, "Alice <alice@example.com>", spf_pass("bounce.example.com"))
    assert (by_spf.result, by_spf.spf_aligned, by_spf.dkim_aligned, by_spf.disposition) == (
        DmarcResult.PASS, True, False, Disposition.NONE)
    by_dkim = dmarc(dns_server, "alice@example.com", dkim=[dkim_pass("news.example.com")])
    assert (by_dkim.result, by_dkim.dkim_aligned, by_dkim.policy) == (
        DmarcResult.PASS, True, Disposition.REJECT)


def test_unaligned_or_failing_is_fail_with_policy(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    verdict = dmarc(dns_server, "alice@example.com", spf_pass("esp.test"),
                    [dkim_pass("esp.test"), DkimVerdict(DkimResult.FAIL, "example.com", "s1")])
    assert (verdict.result, verdict.policy, verdict.disposition) == (
        DmarcResult.FAIL, Disposition.REJECT, Disposition.REJECT)


def test_strict_alignment(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine; adkim=s; aspf=s")
    sub = dmarc(dns_server, "alice@example.com", spf_pass("bounce.example.com"),
                [dkim_pass("mail.example.com")])
    assert (sub.result, sub.disposition) == (DmarcResult.FAIL, Disposition.QUARANTINE)
    exact = dmarc(dns_server, "alice@example.com", dkim=[dkim_pass("example.com")])
    assert exact.result is DmarcResult.PASS


def test_org_domain_fallback_and_subdomain_policy(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    sub = dmarc(dns_server, "alice@news.example.com")
    assert (sub.result, sub.record_domain, sub.policy) == (
        DmarcResult.FAIL, "example.com", Disposition.QUARANTINE)
    # a record of its own at the subdomain wins, and there p= applies
    dns_server.zone.add_txt("_dmarc.news.example.com", "v=DMARC1; p=none")
    own = dmarc(dns_server, "alice@news.example.com")
    assert (own.record_domain, own.policy) == ("news.example.com", Disposition.NONE)
    # without sp=, subdomains get p=
    dns_server.zone.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    assert dmarc(dns_server, "a@x.y.example.org").policy is Disposition.REJECT


def test_pct_sampling_steps_down_outside_the_sample(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=30")
    dns_server.zone.add_txt("_dmarc.example.org", "v=DMARC1; p=quarantine; pct=0")
    assert dmarc(dns_server, "a@example.com", sample=0.29).disposition is Disposition.REJECT
    assert dmarc(dns_server, "a@example.com", sample=0.30).disposition is Disposition.QUARANTINE
    assert dmarc(dns_server, "a@example.org", sample=0.0).disposition is Disposition.NONE


def test_several_records_are_none_and_non_dmarc_txt_ignored(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
    assert dmarc(dns_server, "a@example.com").result is DmarcResult.NONE
    dns_server.zone.add_txt("_dmarc.example.org", "some verification token")
    dns_server.zone.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    assert dmarc(dns_server, "a@example.org").result is DmarcResult.FAIL


def test_from_rules_are_permerror(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    assert dmarc(dns_server, "a@example.com, b@example.org").result is DmarcResult.PERMERROR
    assert dmarc(dns_server, ["a@example.com", "a@example.com"]).result is DmarcResult.PERMERROR
    assert dmarc(dns_server, []).result is DmarcResult.PERMERROR
    assert dmarc(dns_server, "undisclosed").result is DmarcResult.PERMERROR
    assert author_domains(['"Doe, J" <j@Example.COM.>']) == ["example.com"]


def test_servfail_is_temperror(dns_server: DnsTestServer) -> None:
    dns_server.zone.servfail("_dmarc.example.com")
    assert dmarc(dns_server, "a@example.com").result is DmarcResult.TEMPERROR


@given(st.text(max_size=120))
def test_garbage_records_and_from_values_never_raise(text: str) -> None:
    parse_record(text)
    parse_record("v=DMARC1; " + text)
    author_domains([text])


@pytest.mark.parametrize("record", ["v=DMARC1", "v=DMARC1; p=", "v=DMARC1 p=reject", "v=dmarc1; p=reject"])
def test_invalid_records_are_none(dns_server: DnsTestServer, record: str) -> None:
    dns_server.zone.add_txt("_dmarc.example.com", record)
    assert dmarc(dns_server, "a@example.com").result is DmarcResult.NONE
