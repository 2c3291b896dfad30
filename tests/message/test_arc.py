"""ARC chain validation (message.arc_verify) against the real loopback DNS server: chains sealed
by dkimpy's arc_sign (one and two hops) pass, broken chains fail, DNS failures fail the chain."""

from __future__ import annotations

import asyncio

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message.arc_verify import ArcResult, ArcVerdict, verify_arc
from mailprime.message.dkim import public_key_record
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                        serialization.NoEncryption())
MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: list@lists.test\r\nSubject: Hi\r\n"
           b"Date: Mon, 16 Jun 2025 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello list.\r\n")


def seal(message: bytes, domain: str, arc_result: str = "none") -> bytes:
    """One ARC hop by `domain`: its Authentication-Results, then the ARC set dkimpy makes."""
    with_ar = (f"Authentication-Results: mx.{domain}; spf=pass smtp.mailfrom=alice@example.com; "
               f"arc={arc_result}\r\n").encode() + message
    fields = dkim.arc_sign(with_ar, b"arc", domain.encode(), PEM, f"mx.{domain}".encode())
    return b"".join(fields) + with_ar


def verify(dns: DnsTestServer, message: bytes) -> ArcVerdict:
    async def main() -> ArcVerdict:
        return await verify_arc(message, DnsResolver([dns.address], 2.0, cache_size=0))

    return asyncio.run(main())


def publish(dns: DnsTestServer, *domains: str) -> None:
    for domain in domains:
        dns.zone.add_txt(f"arc._domainkey.{domain}", public_key_record(KEY))


def test_no_arc_is_none(dns_server: DnsTestServer) -> None:
    assert verify(dns_server, MESSAGE) == ArcVerdict(ArcResult.NONE, 0, "no ARC sets")


def test_one_hop_passes(dns_server: DnsTestServer) -> None:
    publish(dns_server, "lists.test")
    verdict = verify(dns_server, seal(MESSAGE, "lists.test"))
    assert (verdict.result, verdict.instances) == (ArcResult.PASS, 1)


def test_two_hops_pass(dns_server: DnsTestServer) -> None:
    publish(dns_server, "lists.test", "forwarder.test")
    two = seal(seal(MESSAGE, "lists.test"), "forwarder.test", "pass")
    verdict = verify(dns_server, two)
    assert (verdict.result, verdict.instances) == (ArcResult.PASS, 2)


def test_modified_after_sealing_fails(dns_server: DnsTestServer) -> None:
    publish(dns_server, "lists.test")
    sealed = seal(MESSAGE, "lists.test")
    assert verify(dns_server, sealed.replace(b"Hello list.", b"Hello world")).result is ArcResult.FAIL
    assert verify(dns_server, sealed.replace(b"Subject: Hi", b"Subject: Yo")).result is ArcResult.FAIL


def test_broken_chain_fails(dns_server: DnsTestServer) -> None:
    publish(dns_server, "lists.test", "forwarder.test")
    two = seal(seal(MESSAGE, "lists.test"), "forwarder.test", "pass")
    # drop the first hop's ARC-Seal: instance 1 is incomplete
    lines = two.split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"ARC-Seal: i=1"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i][:1] not in (b" ", b"\t"))
    broken = b"\r\n".join(lines[:start] + lines[end:])
    assert verify(dns_server, broken).result is ArcResult.FAIL


def test_missing_key_fails_and_servfail_fails_with_reason(dns_server: DnsTestServer) -> None:
    sealed = seal(MESSAGE, "lists.test")
    assert verify(dns_server, sealed).result is ArcResult.FAIL
    dns_server.zone.servfail("arc._domainkey.lists.test")
    verdict = verify(dns_server, sealed)
    assert verdict.result is ArcResult.FAIL and "try later" in verdict.reason


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=200))
def test_garbage_never_raises(dns_server: DnsTestServer, garbage: bytes) -> None:
    for message in (b"ARC-Seal: " + garbage + b"\r\n" + MESSAGE,
                    b"ARC-Seal: i=1; a=rsa-sha256; d=x.test; s=a; cv=none; b=" + garbage + b"\r\n" + MESSAGE,
                    garbage):
        assert isinstance(verify(dns_server, message).result, ArcResult)
