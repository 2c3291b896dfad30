"""Authentication-Results (message.auth_results): the header byte for byte, value quoting, forged
fields removed, and `authenticate` end to end against the real loopback DNS server."""

from __future__ import annotations

import asyncio

import dkim
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message.arc_verify import ArcResult, ArcVerdict
from mailprime.message.auth_results import (
    AuthVerdicts,
    authenticate,
    build_header,
    quote_value,
    remove_forged_results,
)
from mailprime.message.dkim import SigningKey, public_key_record, sign_message
from mailprime.message.dkim_verify import DkimResult, DkimVerdict
from mailprime.message.dmarc import Disposition, DmarcResult, DmarcVerdict
from mailprime.message.spf import SpfResult, SpfVerdict
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer

NOW = 1_750_000_000
ED_KEY = ed25519.Ed25519PrivateKey.generate()
MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@mx.test\r\nSubject: Hi\r\n"
           b"Date: Mon, 16 Jun 2025 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n")
SPF_PASS = SpfVerdict(SpfResult.PASS, "mailfrom", "example.com", "bounce@example.com")
ARC_NONE = ArcVerdict(ArcResult.NONE)


# The header ------------------------------------------------------------------------------------

def test_header_byte_exact_all_pass() -> None:
    dkim_pass = DkimVerdict(DkimResult.PASS, "example.com", "s2025", "ed25519-sha256", "",
                            "abc/def+ghij==", "good signature")
    dmarc_pass = DmarcVerdict(DmarcResult.PASS, "example.com", Disposition.REJECT, Disposition.NONE,
                              "example.com", True, True)
    assert build_header("mx.mailprime.test", SPF_PASS, [dkim_pass], dmarc_pass, ARC_NONE) == (
        b"Authentication-Results: mx.mailprime.test;\r\n"
        b"\tspf=pass smtp.mailfrom=bounce@example.com;\r\n"
        b"\tdkim=pass header.d=example.com header.s=s2025 header.a=ed25519-sha256\r\n"
        b'\t  header.b="abc/def+";\r\n'
        b"\tdmarc=pass (p=reject dis=none) header.from=example.com;\r\n"
        b"\tarc=none\r\n"
    )


def test_header_byte_exact_failures_helo_and_quoting() -> None:
    spf = SpfVerdict(SpfResult.SOFTFAIL, "helo", "mail.client.test", "postmaster@mail.client.test")
    dkim_fail = DkimVerdict(DkimResult.FAIL, "example.com", "sel", "rsa-sha256", '"odd" user@example.com',
                            "AAAAAAAAAAAA", "body hash mismatch")
    dmarc_fail = DmarcVerdict(DmarcResult.FAIL, "example.com", Disposition.QUARANTINE, Disposition.NONE)
    header = build_header("mx.mailprime.test", spf, [dkim_fail], dmarc_fail, ArcVerdict(ArcResult.FAIL))
    assert header == (
        b"Authentication-Results: mx.mailprime.test;\r\n"
        b"\tspf=softfail smtp.helo=mail.client.test;\r\n"
        b'\tdkim=fail (body hash mismatch) header.d=example.com\r\n'
        b'\t  header.i="\\"odd\\" user@example.com" header.s=sel header.a=rsa-sha256\r\n'
        b"\t  header.b=AAAAAAAA;\r\n"
        b"\tdmarc=fail (p=quarantine dis=none) header.from=example.com;\r\n"
        b"\tarc=fail\r\n"
    )


def test_header_without_signatures_or_policy() -> None:
    header = build_header("mx.test", SpfVerdict(SpfResult.NONE, "mailfrom", "x.test", "a b@x.test"),
                          [DkimVerdict(DkimResult.NONE)], DmarcVerdict(DmarcResult.NONE, "x.test"), ARC_NONE)
    assert header == (b'Authentication-Results: mx.test;\r\n\tspf=none smtp.mailfrom="a b@x.test";\r\n'
                      b"\tdkim=none;\r\n\tdmarc=none header.from=x.test;\r\n\tarc=none\r\n")


def test_quote_value() -> None:
    assert quote_value("example.com") == "example.com"
    assert quote_value("a;b") == '"a;b"'
    assert quote_value('back\\slash "q"') == '"back\\\\slash \\"q\\""'
    assert quote_value("bell\x07") == '"bell?"'


# Forged fields ------------------------------------------------------------------------------------

def test_remove_forged_results_keeps_others() -> None:
    message = (b"Authentication-Results: MX.Mailprime.Test; spf=pass\r\n"
               b"Received: from x\r\n"
               b"Authentication-Results: (comment) \"mx.mailprime.test\";\r\n"
               b"\tdkim=pass header.d=evil.test\r\n"
               b"Authentication-Results: mx.other.test; spf=fail\r\n"
               b"Authentication-Results: mx.mailprime.test.evil; spf=pass\r\n"
               b"Subject: Authentication-Results: mx.mailprime.test\r\n\r\n"
               b"Authentication-Results: mx.mailprime.test; body line stays\r\n")
    assert remove_forged_results(message, "mx.mailprime.test") == (
        b"Received: from x\r\n"
        b"Authentication-Results: mx.other.test; spf=fail\r\n"
        b"Authentication-Results: mx.mailprime.test.evil; spf=pass\r\n"
        b"Subject: Authentication-Results: mx.mailprime.test\r\n\r\n"
        b"Authentication-Results: mx.mailprime.test; body line stays\r\n")


# authenticate() end to end -------------------------------------------------------------------------

def run(dns: DnsTestServer, message: bytes, ip: str = "192.0.2.10", mail_from: str = "bounce@example.com",
        sample: float = 0.0) -> AuthVerdicts:
    async def main() -> AuthVerdicts:
        return await authenticate(message, ip, "mail.example.com", mail_from,
                                  DnsResolver([dns.address], 2.0, cache_size=0),
                                  authserv_id="mx.mailprime.test", now=NOW, sample=lambda: sample)

    return asyncio.run(main())


def zone(dns: DnsTestServer, dmarc: str = "v=DMARC1; p=reject") -> None:
    dns.zone.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    dns.zone.add_txt("_dmarc.example.com", dmarc)
    dns.zone.add_txt("ed._domainkey.example.com", public_key_record(ED_KEY))


def signed(message: bytes = MESSAGE) -> bytes:
    return sign_message(message, [SigningKey("example.com", "ed", ED_KEY)], NOW) + message


def test_all_pass(dns_server: DnsTestServer) -> None:
    zone(dns_server)
    message = signed()
    verdicts = run(dns_server, message)
    assert (verdicts.spf.result, [v.result for v in verdicts.dkim], verdicts.dmarc.result,
            verdicts.arc.result, verdicts.disposition) == (
        SpfResult.PASS, [DkimResult.PASS], DmarcResult.PASS, ArcResult.NONE, Disposition.NONE)
    b_prefix = verdicts.dkim[0].signature[:8].encode()
    assert verdicts.header == (
        b"Authentication-Results: mx.mailprime.test;\r\n"
        b"\tspf=pass smtp.mailfrom=bounce@example.com;\r\n"
        b"\tdkim=pass header.d=example.com header.s=ed header.a=ed25519-sha256\r\n"
        b"\t  header.b=" + quote_value(b_prefix.decode()).encode() + b";\r\n"
        b"\tdmarc=pass (p=reject dis=none) header.from=example.com;\r\n"
        b"\tarc=none\r\n")


def test_spoofed_from_is_rejected_or_quarantined(dns_server: DnsTestServer) -> None:
    zone(dns_server)
    forged = run(dns_server, MESSAGE, ip="203.0.113.5", mail_from="x@attacker.test")
    assert (forged.spf.result, forged.dmarc.result, forged.disposition) == (
        SpfResult.NONE, DmarcResult.FAIL, Disposition.REJECT)
    dns_server.zone.remove("_dmarc.example.com")
    dns_server.zone.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine; pct=50")
    assert run(dns_server, MESSAGE, ip="203.0.113.5", sample=0.1).disposition is Disposition.QUARANTINE
    assert run(dns_server, MESSAGE, ip="203.0.113.5", sample=0.9).disposition is Disposition.NONE


def test_forwarded_message_passes_dmarc_by_dkim(dns_server: DnsTestServer) -> None:
    zone(dns_server)
    verdicts = run(dns_server, signed(), ip="198.51.100.7", mail_from="alice+srs@forwarder.test")
    assert (verdicts.spf.result, verdicts.dmarc.result, verdicts.dmarc.dkim_aligned) == (
        SpfResult.NONE, DmarcResult.PASS, True)


def test_arc_sealed_message(dns_server: DnsTestServer) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    dns_server.zone.add_txt("arc._domainkey.lists.test", public_key_record(key))
    zone(dns_server)
    with_ar = b"Authentication-Results: mx.lists.test; dkim=pass\r\n" + signed()
    sealed = b"".join(dkim.arc_sign(with_ar, b"arc", b"lists.test", pem, b"mx.lists.test")) + with_ar
    verdicts = run(dns_server, sealed)
    assert verdicts.arc.result is ArcResult.PASS
    assert verdicts.header.endswith(b"\tarc=pass\r\n")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=400), ip=st.sampled_from(["192.0.2.1", "2001:db8::1", "junk"]),
       mail_from=st.text(max_size=30))
def test_garbage_messages_never_raise(dns_server: DnsTestServer, garbage: bytes, ip: str,
                                      mail_from: str) -> None:
    verdicts = run(dns_server, b"From: a@example.com\r\n" + garbage, ip=ip, mail_from=mail_from)
    assert verdicts.header.startswith(b"Authentication-Results: mx.mailprime.test;\r\n")
    verdicts = run(dns_server, garbage, ip=ip, mail_from=mail_from)
    assert verdicts.header.endswith(b"\r\n")
    assert remove_forged_results(garbage, "mx.mailprime.test") is not None
