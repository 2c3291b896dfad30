"""`services.doctor` against the real DNS server on loopback with crafted zones, a real SQLite
store holding real DKIM keys, trustme certificates and a real HTTPS server for the MTA-STS
policy: a domain set up right passes with every row OK, and each kind of mistake gives the right
FAIL (or WARN) row with the record to publish."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from mailprime.cli.doctor_cmd import HttpsPolicyFetcher
from mailprime.cli.selfsigned import write_self_signed
from mailprime.domain.clock import SystemClock
from mailprime.domain.dkim import DkimKeyType
from mailprime.message.mta_sts_policy import StsMode, StsPolicy, mx_pattern_matches, parse_policy
from mailprime.net.dns import DnsResolver
from mailprime.net.https_fetch import HttpsFetcher
from mailprime.services.dkim_keys import DkimKeys, PublishedRecord, publish
from mailprime.services.doctor import DoctorReport, DoctorRequest, run_doctor
from mailprime.services.doctor_records import (
    Finding,
    Status,
    blocklist_name,
    dmarc_tags,
    dmarc_text,
    looks_generic,
    name_covered,
    spf_suggestion,
    txt_line,
)
from mailprime.storage.sql import open_store
from tests.support.dns_server import DnsTestServer, Zone

DOMAIN, HOST, IP = "a.test", "mail.a.test", "192.0.2.10"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mail.a.test\r\nmax_age: 604800\r\n"


@dataclass
class Setup:
    """A domain set up right; tests break one thing and run the doctor."""

    dns: DnsTestServer
    tmp: Path
    ca: trustme.CA
    records: list[PublishedRecord]
    policy: str = POLICY
    request: DoctorRequest = field(init=False)

    def __post_init__(self) -> None:
        cert = self.tmp / "cert.pem"
        self.ca.issue_cert(HOST).cert_chain_pems[0].write_to_path(str(cert))
        self.request = DoctorRequest(domain=DOMAIN, hostname=HOST, bounce_domain=DOMAIN,
                                     sending_ips=(IP,), helo_name=HOST, blocklists=("bl.test",),
                                     cert_path=cert, now=datetime.now(UTC), timeout=2.0)

    @property
    def zone(self) -> Zone:
        return self.dns.zone

    def run(self, **changes: object) -> DoctorReport:
        request = replace(self.request, **changes)  # type: ignore[arg-type]

        async def main() -> DoctorReport:
            server = await asyncio.start_server(self._serve_policy, "127.0.0.1", 0,
                                                ssl=self._server_context())
            port = server.sockets[0].getsockname()[1]
            client = ssl.create_default_context()
            self.ca.configure_trust(client)
            resolver = DnsResolver([self.dns.address], 2.0)
            fetcher = HttpsPolicyFetcher(HttpsFetcher(resolver, client, port=port, timeout=2.0))
            store = await open_store(f"sqlite:///{self.tmp / 'm.db'}", spool_dir=self.tmp / "spool",
                                     inline_max=64 * 1024)
            try:
                async with server:
                    return await run_doctor(request, resolver, store, fetcher)
            finally:
                await store.close()

        return asyncio.run(main())

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(f"mta-sts.{DOMAIN}").configure_cert(context)
        return context

    async def _serve_policy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = self.policy.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        finally:
            writer.close()


def generate_keys(tmp: Path, *types: DkimKeyType) -> list[PublishedRecord]:
    async def main() -> list[PublishedRecord]:
        store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool",
                                 inline_max=64 * 1024)
        try:
            keys = DkimKeys(store, SystemClock())
            made = []
            for kind in types:
                made += await keys.generate(DOMAIN, key_type=kind)
            return [publish(k) for k in made]
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture(scope="module")
def keyed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PublishedRecord]]:
    """A store with an RSA and an Ed25519 key of a.test, made once (RSA-2048 takes a second);
    each test works on a copy."""
    template = tmp_path_factory.mktemp("keyed")
    return template, generate_keys(template, DkimKeyType.RSA, DkimKeyType.ED25519)


@pytest.fixture
def setup(dns_server: DnsTestServer, tmp_path: Path, ca: trustme.CA,
          keyed_store: tuple[Path, list[PublishedRecord]]) -> Iterator[Setup]:
    template, records = keyed_store
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    zone = dns_server.zone
    zone.add_txt(DOMAIN, "v=spf1 ip4:192.0.2.10 -all")
    zone.add_txt(DOMAIN, "google-site-verification=abc")  # other TXT records are not SPF
    for record in records:
        zone.add_txt(record.name, record.record)
    zone.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject; rua=mailto:dmarc@a.test")
    zone.add_a(HOST, IP)
    zone.add_ptr(IP, HOST)
    zone.add_mx(DOMAIN, 10, HOST)
    zone.add_txt(f"_mta-sts.{DOMAIN}", "v=STSv1; id=20260101")
    zone.add_a(f"mta-sts.{DOMAIN}", "127.0.0.1")
    zone.add_txt(f"_smtp._tls.{DOMAIN}", "v=TLSRPTv1; rua=mailto:tls@a.test")
    yield Setup(dns_server, tmp_path, ca, records)


def rows(report: DoctorReport, check: str) -> list[Finding]:
    found = [f for f in report.findings if f.check == check]
    assert found, f"no {check} row in {report.findings}"
    return found


def one(report: DoctorReport, check: str, status: Status) -> Finding:
    matching = [f for f in rows(report, check) if f.status is status]
    assert len(matching) == 1, rows(report, check)
    return matching[0]


# Everything right ------------------------------------------------------------------------------

def test_a_domain_set_up_right_passes_with_every_row_ok(setup: Setup) -> None:
    report = setup.run()
    assert report.passed
    assert [f for f in report.findings if f.status is not Status.OK] == []
    checks = [f.check for f in report.findings]
    assert checks == ["SPF", "DKIM", "DKIM", "DMARC", "DMARC alignment", "FCrDNS", "MX", "MTA-STS",
                      "TLS-RPT", "TLS certificate", "Blocklist"]
    assert "1/10 look-ups" not in rows(report, "SPF")[0].found  # ip4 needs no look-up
    assert "0/10 look-ups; ends in -all" in rows(report, "SPF")[0].found
    assert {f.subject for f in rows(report, "DKIM")} == {r.key.selector for r in setup.records}
    assert "192.0.2.10 -> mail.a.test -> 192.0.2.10" in rows(report, "FCrDNS")[0].found
    assert "mode enforce, mx mail.a.test" in rows(report, "MTA-STS")[0].found
    assert all(f.fix == "" for f in report.findings)


def test_sending_addresses_default_to_the_hosts_addresses(setup: Setup) -> None:
    setup.zone.add_aaaa(HOST, "2001:db8::10")
    setup.zone.add_ptr("2001:db8::10", HOST)
    setup.zone.remove(DOMAIN, "TXT")
    setup.zone.add_txt(DOMAIN, "v=spf1 a:mail.a.test -all")
    report = setup.run(sending_ips=())
    assert report.sending_ips == (IP, "2001:db8::10")
    assert report.passed, report.findings
    assert {f.subject for f in rows(report, "FCrDNS")} == {IP, "2001:db8::10"}
    assert "1/10 look-ups" in rows(report, "SPF")[0].found


def test_no_sending_address_known_fails(setup: Setup) -> None:
    setup.zone.remove(HOST, "A")
    report = setup.run(sending_ips=())
    found = one(report, "Sending addresses", Status.FAIL)
    assert "no A or AAAA record" in found.found and "--sending-ip" in found.found


# SPF -------------------------------------------------------------------------------------------

def set_spf(setup: Setup, *texts: str, domain: str = DOMAIN) -> None:
    setup.zone.remove(domain, "TXT")
    for text in texts:
        setup.zone.add_txt(domain, text)


def test_spf_missing_suggests_a_record_of_our_addresses(setup: Setup) -> None:
    set_spf(setup)
    finding = one(setup.run(sending_ips=(IP, "2001:db8::1")), "SPF", Status.FAIL)
    assert finding.found == "no SPF record"
    assert finding.fix == 'a.test. IN TXT "v=spf1 ip4:192.0.2.10 ip6:2001:db8::1 -all"'


def test_spf_not_covering_an_address_adds_it_before_all(setup: Setup) -> None:
    set_spf(setup, "v=spf1 ip4:198.51.100.0/24 include:_spf.other.test ~all")
    setup.zone.add_txt("_spf.other.test", "v=spf1 ip4:203.0.113.1 -all")
    report = setup.run()
    finding = one(report, "SPF", Status.FAIL)
    assert "does not cover 192.0.2.10 (softfail)" in finding.found
    assert finding.fix == ('a.test. IN TXT "v=spf1 ip4:198.51.100.0/24 include:_spf.other.test '
                           'ip4:192.0.2.10 ~all"')
    assert not report.passed


def test_two_spf_records_fail(setup: Setup) -> None:
    set_spf(setup, "v=spf1 ip4:192.0.2.10 -all", "v=spf1 mx -all")
    finding = one(setup.run(), "SPF", Status.FAIL)
    assert "2 SPF records" in finding.found
    assert finding.fix == 'a.test. IN TXT "v=spf1 ip4:192.0.2.10 mx -all"'


def test_spf_syntax_error_fails_with_the_reason(setup: Setup) -> None:
    set_spf(setup, "v=spf1 ip4:192.0.2.10 bogus:x.test -all")
    finding = one(setup.run(), "SPF", Status.FAIL)
    assert "permerror" in finding.found and "unknown mechanism 'bogus'" in finding.found


def test_spf_over_ten_lookups_fails_even_when_our_address_matches_first(setup: Setup) -> None:
    # Our address passes at the first term, but a receiver checking any other address walks
    # 12 look-ups: permerror for everyone else (RFC 7208 4.6.4).
    set_spf(setup, "v=spf1 ip4:192.0.2.10 include:one.test include:two.test -all")
    set_spf(setup, "v=spf1 a:a1.test a:a2.test a:a3.test a:a4.test a:a5.test ?all", domain="one.test")
    set_spf(setup, "v=spf1 mx:m1.test mx:m2.test mx:m3.test mx:m4.test mx:m5.test ?all",
            domain="two.test")
    finding = one(setup.run(), "SPF", Status.FAIL)
    assert "needs 12 DNS look-ups, over the limit of 10" in finding.found


def test_spf_plus_all_fails_and_question_all_warns(setup: Setup) -> None:
    set_spf(setup, "v=spf1 ip4:192.0.2.10 +all")
    finding = one(setup.run(), "SPF", Status.FAIL)
    assert "anyone passes" in finding.found
    assert finding.fix == 'a.test. IN TXT "v=spf1 ip4:192.0.2.10 -all"'
    set_spf(setup, "v=spf1 ip4:192.0.2.10 ?all")
    report = setup.run()
    assert one(report, "SPF", Status.WARN).fix == 'a.test. IN TXT "v=spf1 ip4:192.0.2.10 -all"'
    assert report.passed  # a warning is no failure


def test_spf_is_checked_for_the_bounce_domain_too(setup: Setup) -> None:
    setup.zone.add_mx("bounces.a.test", 10, HOST)
    report = setup.run(bounce_domain="bounces.a.test")
    spf = rows(report, "SPF")
    assert [(f.subject, f.status) for f in spf] == [(DOMAIN, Status.OK),
                                                    ("bounces.a.test", Status.FAIL)]
    assert spf[1].fix == 'bounces.a.test. IN TXT "v=spf1 ip4:192.0.2.10 -all"'
    # Relaxed alignment: bounces.a.test and a.test share the organizational domain.
    assert one(report, "DMARC alignment", Status.OK).found.startswith("From a.test: SPF aligned")


# DKIM ------------------------------------------------------------------------------------------

def test_dkim_record_missing_or_different_prints_the_record(setup: Setup) -> None:
    rsa, ed = setup.records
    setup.zone.remove(rsa.name)
    setup.zone.remove(ed.name)
    setup.zone.add_txt(ed.name, "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    report = setup.run()
    failed = {f.subject: f for f in rows(report, "DKIM") if f.status is Status.FAIL}
    assert f"no TXT record at {rsa.name}" in failed[rsa.key.selector].found
    assert failed[rsa.key.selector].fix == rsa.zone_line
    assert "holds another key" in failed[ed.key.selector].found
    assert failed[ed.key.selector].fix == ed.zone_line
    assert not report.passed


def test_a_waiting_key_not_yet_published_only_warns(setup: Setup) -> None:
    waiting = generate_keys(setup.tmp, DkimKeyType.RSA)[0]  # the domain has an active RSA key
    assert not waiting.key.active
    finding = one(setup.run(), "DKIM", Status.WARN)
    assert finding.subject == waiting.key.selector and "publish, then activate" in finding.found
    assert finding.fix == waiting.zone_line


def test_no_dkim_key_fails_with_the_keygen_command(dns_server: DnsTestServer, tmp_path: Path,
                                                   ca: trustme.CA) -> None:
    setup = Setup(dns_server, tmp_path, ca, [])
    generate_keys(tmp_path)  # an empty store with its schema
    report = setup.run()
    finding = one(report, "DKIM", Status.FAIL)
    assert "no active DKIM key" in finding.found and finding.fix == "mailprime dkim keygen a.test"
    alignment = one(report, "DMARC alignment", Status.WARN)  # SPF alone aligns
    assert "SPF aligned" in alignment.found and "DKIM NOT aligned (no active key)" in alignment.found
    alignment = one(setup.run(bounce_domain="bounce.other.test"), "DMARC alignment", Status.FAIL)
    assert "SPF NOT aligned (envelope bounce.other.test, relaxed)" in alignment.found
    assert alignment.fix == "mailprime dkim keygen a.test"


# DMARC -----------------------------------------------------------------------------------------

def set_dmarc(setup: Setup, text: str | None) -> None:
    setup.zone.remove(f"_dmarc.{DOMAIN}")
    if text is not None:
        setup.zone.add_txt(f"_dmarc.{DOMAIN}", text)


def test_dmarc_missing_fails_with_a_record(setup: Setup) -> None:
    set_dmarc(setup, None)
    finding = one(setup.run(), "DMARC", Status.FAIL)
    assert finding.fix == '_dmarc.a.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@a.test"'


def test_dmarc_invalid_fails(setup: Setup) -> None:
    set_dmarc(setup, "v=DMARC1; p=maybe")
    finding = one(setup.run(), "DMARC", Status.FAIL)
    assert "not a valid DMARC record" in finding.found


def test_dmarc_p_none_and_no_rua_warn(setup: Setup) -> None:
    set_dmarc(setup, "v=DMARC1; p=none")
    report = setup.run()
    assert report.passed  # p=none is what Gmail and Yahoo require at least
    warnings = [f for f in rows(report, "DMARC") if f.status is Status.WARN]
    assert [w.fix for w in warnings] == [
        '_dmarc.a.test. IN TXT "v=DMARC1; p=quarantine"',
        '_dmarc.a.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@a.test"']


def test_dmarc_of_the_organizational_domain_applies_to_a_subdomain(setup: Setup) -> None:
    report = setup.run(domain="news.a.test", bounce_domain=DOMAIN)
    assert "at _dmarc.a.test" in one(report, "DMARC", Status.OK).found
    set_dmarc(setup, "v=DMARC1; p=reject; sp=none; rua=mailto:d@a.test")
    finding = one(setup.run(domain="news.a.test", bounce_domain=DOMAIN), "DMARC", Status.WARN)
    assert "sp=none is enough" in finding.found
    assert finding.fix == '_dmarc.a.test. IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@a.test"'


def test_unaligned_bounce_domain_warns(setup: Setup) -> None:
    setup.zone.add_txt("bounce.other.test", "v=spf1 ip4:192.0.2.10 -all")
    setup.zone.add_mx("bounce.other.test", 10, HOST)
    set_dmarc(setup, "v=DMARC1; p=reject; aspf=s; rua=mailto:d@a.test")
    report = setup.run(bounce_domain="bounce.other.test")
    finding = one(report, "DMARC alignment", Status.WARN)
    assert "SPF NOT aligned (envelope bounce.other.test, strict)" in finding.found
    assert "DKIM aligned (d=a.test)" in finding.found


# Reverse DNS -----------------------------------------------------------------------------------

def test_no_ptr_fails_with_the_ptr_to_ask_for(setup: Setup) -> None:
    setup.zone.remove("10.2.0.192.in-addr.arpa")
    finding = one(setup.run(), "FCrDNS", Status.FAIL)
    assert finding.fix == "10.2.0.192.in-addr.arpa. IN PTR mail.a.test."


def test_ptr_not_confirmed_by_its_forward_lookup_fails(setup: Setup) -> None:
    setup.zone.remove("10.2.0.192.in-addr.arpa")
    setup.zone.add_ptr(IP, "other.a.test")
    setup.zone.add_a("other.a.test", "192.0.2.99")
    finding = one(setup.run(), "FCrDNS", Status.FAIL)
    assert "does not resolve back to 192.0.2.10 (other.a.test -> 192.0.2.99)" in finding.found
    assert finding.fix == "other.a.test. IN A 192.0.2.10"


def test_generic_ptr_and_helo_mismatch_warn(setup: Setup) -> None:
    setup.zone.remove("10.2.0.192.in-addr.arpa")
    setup.zone.add_ptr(IP, "192-0-2-10.dsl.isp.test")
    setup.zone.add_a("192-0-2-10.dsl.isp.test", IP)
    assert "looks generic" in one(setup.run(), "FCrDNS", Status.WARN).found
    report = setup.run(helo_name="smtp.a.test")
    assert "HELO smtp.a.test" not in one(report, "FCrDNS", Status.WARN).found  # generic first
    setup.zone.remove("10.2.0.192.in-addr.arpa")
    setup.zone.add_ptr(IP, HOST)
    assert 'helo_name = "mail.a.test"' in one(setup.run(helo_name="smtp.a.test"), "FCrDNS",
                                              Status.WARN).found


def test_looks_generic() -> None:
    assert looks_generic("ip-192-0-2-10.example.net", "192.0.2.10")
    assert looks_generic("10.2.0.192.static.isp.test", "192.0.2.10")
    assert looks_generic("c000020a.isp.test", "192.0.2.10")
    assert looks_generic("pool-77.cable.isp.test", "192.0.2.10")
    assert not looks_generic("mail.a.test", "192.0.2.10")
    assert not looks_generic("mx10.a.test", "10.0.0.1")
    assert not looks_generic("smtp.hostname.test", "192.0.2.10")


# MX, MTA-STS, TLS-RPT --------------------------------------------------------------------------

def test_mx_missing_fails_and_elsewhere_warns(setup: Setup) -> None:
    setup.zone.remove(DOMAIN, "MX")
    finding = one(setup.run(), "MX", Status.FAIL)
    assert finding.fix == "a.test. IN MX 10 mail.a.test."
    setup.zone.add_mx(DOMAIN, 10, "mx.provider.test")
    setup.zone.add_a("mx.provider.test", "198.51.100.7")
    assert "none is this server (mail.a.test)" in one(setup.run(), "MX", Status.WARN).found
    setup.zone.remove(DOMAIN, "MX")
    setup.zone.add_null_mx(DOMAIN)
    assert "null MX" in one(setup.run(), "MX", Status.FAIL).found


def test_mx_named_otherwise_but_at_our_address_is_ours(setup: Setup) -> None:
    setup.zone.remove(DOMAIN, "MX")
    setup.zone.add_mx(DOMAIN, 10, "mx.a.test")
    setup.zone.add_a("mx.a.test", IP)
    setup.policy = POLICY.replace("mail.a.test", "*.a.test")
    report = setup.run()
    assert one(report, "MX", Status.OK).found == "MX 10 mx.a.test"
    # The certificate must now name mx.a.test as well.
    assert "does not name mx.a.test" in one(report, "TLS certificate", Status.FAIL).found


def test_mta_sts_absent_warns_with_the_policy_to_serve(setup: Setup) -> None:
    setup.zone.remove(f"_mta-sts.{DOMAIN}")
    report = setup.run()
    finding = one(report, "MTA-STS", Status.WARN)
    assert "version: STSv1\nmode: testing\nmx: mail.a.test\nmax_age: 604800" in finding.fix
    assert '_mta-sts.a.test. IN TXT "v=STSv1; id=' in finding.fix
    assert report.passed


def test_mta_sts_record_without_a_reachable_policy_fails(setup: Setup) -> None:
    setup.zone.remove(f"mta-sts.{DOMAIN}")
    finding = one(setup.run(), "MTA-STS", Status.FAIL)
    assert "policy cannot be fetched" in finding.found and "no address record" in finding.found


def test_mta_sts_policy_not_naming_the_mx_fails(setup: Setup) -> None:
    setup.policy = POLICY.replace("mx: mail.a.test", "mx: mx.elsewhere.test")
    finding = one(setup.run(), "MTA-STS", Status.FAIL)
    assert "names mx.elsewhere.test, not the MX mail.a.test" in finding.found
    setup.policy = "version: STSv1\nmode: enforce\n"
    assert "invalid" in one(setup.run(), "MTA-STS", Status.FAIL).found


def test_tls_rpt_absent_warns(setup: Setup) -> None:
    setup.zone.remove(f"_smtp._tls.{DOMAIN}")
    finding = one(setup.run(), "TLS-RPT", Status.WARN)
    assert finding.fix == '_smtp._tls.a.test. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@a.test"'


def test_policy_parser_and_patterns() -> None:
    assert parse_policy(POLICY) == StsPolicy(StsMode.ENFORCE, ("mail.a.test",), 604800)
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0") == StsPolicy(StsMode.NONE, (), 0)
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1",
                "version: STSv1\nmode: sometimes\nmx: a\nmax_age: 1", "garbage"):
        with pytest.raises(ValueError):
            parse_policy(bad)
    assert mx_pattern_matches("*.a.test", "mx.a.test")
    assert not mx_pattern_matches("*.a.test", "a.test")
    assert not mx_pattern_matches("*.a.test", "x.mx.a.test")
    assert name_covered("MAIL.a.test", ["mail.a.test."])


# The TLS certificate ---------------------------------------------------------------------------

def test_certificate_expiring_soon_warns_and_expired_fails(setup: Setup) -> None:
    now = datetime.now(UTC)
    soon = setup.tmp / "soon.pem"
    setup.ca.issue_cert(HOST, not_after=now + timedelta(days=5)).cert_chain_pems[0].write_to_path(
        str(soon))
    report = setup.run(cert_path=soon)
    assert "expires in 4 days" in one(report, "TLS certificate", Status.WARN).found
    assert report.passed
    report = setup.run(cert_path=soon, now=now + timedelta(days=6))
    assert one(report, "TLS certificate", Status.FAIL).found.endswith(": expired")


def test_certificate_for_another_name_missing_or_self_signed(setup: Setup) -> None:
    other = setup.tmp / "other.pem"
    setup.ca.issue_cert("*.other.test").cert_chain_pems[0].write_to_path(str(other))
    assert "does not name mail.a.test" in one(setup.run(cert_path=other), "TLS certificate",
                                              Status.FAIL).found
    missing = setup.tmp / "missing.pem"
    assert "cannot read" in one(setup.run(cert_path=missing), "TLS certificate", Status.FAIL).found
    write_self_signed(setup.tmp / "self.pem", setup.tmp / "self.key", HOST)
    assert "self-signed" in one(setup.run(cert_path=setup.tmp / "self.pem"), "TLS certificate",
                                Status.WARN).found


# Blocklists ------------------------------------------------------------------------------------

def test_blocklist_query_names() -> None:
    assert blocklist_name("192.0.2.10", "zen.example") == "10.2.0.192.zen.example"
    assert blocklist_name("2001:db8::1", "bl.test") == "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.bl.test"


def test_listed_address_fails_naming_the_list_and_its_reason(setup: Setup) -> None:
    setup.zone.add_a("10.2.0.192.bl.test", "127.0.0.2")
    setup.zone.add_txt("10.2.0.192.bl.test", "Listed: see https://bl.test/lookup?ip=192.0.2.10")
    report = setup.run()
    finding = one(report, "Blocklist", Status.FAIL)
    assert finding.subject == "bl.test"
    assert finding.found == ("192.0.2.10 LISTED (127.0.0.2): Listed: see "
                             "https://bl.test/lookup?ip=192.0.2.10")
    assert not report.passed


def test_blocklist_refusing_the_query_warns(setup: Setup) -> None:
    setup.zone.add_a("10.2.0.192.bl.test", "127.255.255.254")
    report = setup.run()
    assert "blocklist refused the query (public resolver?)" in one(report, "Blocklist",
                                                                   Status.WARN).found
    assert report.passed


def test_each_check_is_bounded_by_the_dns_timeout(setup: Setup) -> None:
    setup.zone.drop(f"_dmarc.{DOMAIN}")
    setup.zone.drop("10.2.0.192.bl.test")
    report = setup.run(timeout=0.5)
    assert "no answer within 0.5 s" in one(report, "DMARC", Status.FAIL).found
    assert one(report, "Blocklist", Status.WARN).found.startswith("could not tell")
    assert one(report, "SPF", Status.OK)  # the other checks finished


# The pure text work (services.doctor_records) --------------------------------------------------

def test_spf_suggestion_keeps_the_record_and_fixes_only_what_is_wrong() -> None:
    assert spf_suggestion(None, ["192.0.2.1", "2001:db8::1"]) == "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 -all"
    assert spf_suggestion("v=spf1 mx ~all", ["192.0.2.1"]) == "v=spf1 mx ip4:192.0.2.1 ~all"
    assert spf_suggestion("v=spf1 mx +all", []) == "v=spf1 mx -all"
    assert spf_suggestion("v=spf1 mx ?ALL", []) == "v=spf1 mx -all"
    assert spf_suggestion("v=spf1 mx", ["192.0.2.1"]) == "v=spf1 mx ip4:192.0.2.1 -all"
    assert spf_suggestion("v=spf1 redirect=_spf.a.test", ["192.0.2.1"]) == \
        "v=spf1 ip4:192.0.2.1 redirect=_spf.a.test"
    assert spf_suggestion("v=spf1 ip4:192.0.2.1 -all", ["192.0.2.1"]) == "v=spf1 ip4:192.0.2.1 -all"


def test_dmarc_text_changes_or_adds_tags_in_place() -> None:
    tags = dmarc_tags("v=DMARC1;p=none; sp=reject ;")
    assert tags == [("v", "DMARC1"), ("p", "none"), ("sp", "reject")]
    assert dmarc_text(tags, p="quarantine", rua="mailto:d@a.test") == \
        "v=DMARC1; p=quarantine; sp=reject; rua=mailto:d@a.test"


def test_txt_line_splits_long_records_into_255_octet_strings() -> None:
    line = txt_line("s._domainkey.a.test", "p=" + "A" * 300)
    assert line == 's._domainkey.a.test. IN TXT "p=' + "A" * 253 + '" "' + "A" * 47 + '"'
