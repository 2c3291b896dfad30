"""DKIM verification (message.dkim_verify) against the real loopback DNS server: messages signed
by our signer (message.dkim) and by dkimpy, every per-signature result, l=, x=, RFC 8301's rules
(rsa-sha1, short keys), and garbage that must never raise."""

from __future__ import annotations

import asyncio
import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message.dkim import SigningKey, public_key_record, sign_message
from mailprime.message.dkim_verify import DkimResult, DkimVerdict, parse_tag_list, verify_dkim
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer

NOW = 1_750_000_000
MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: Hello  there\r\n"
           b"Date: Mon, 16 Jun 2025 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\n"
           b"Hi Bob,\r\n\r\nsee you  tomorrow.\r\n")

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_PEM = RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())


def verify(dns: DnsTestServer, message: bytes, now: int = NOW) -> tuple[DkimVerdict, ...]:
    async def main() -> tuple[DkimVerdict, ...]:
        return await verify_dkim(message, DnsResolver([dns.address], 2.0, cache_size=0), now)

    return asyncio.run(main())


def publish(dns: DnsTestServer, selector: str = "rsa", domain: str = "example.test",
            key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = RSA_KEY) -> None:
    dns.zone.add_txt(f"{selector}._domainkey.{domain}", public_key_record(key))


def dkimpy_signed(message: bytes = MESSAGE, **kwargs: object) -> bytes:
    options: dict[str, object] = {"include_headers": [b"from", b"to", b"subject", b"date"]}
    options.update(kwargs)
    return dkim.sign(message, b"rsa", b"example.test", RSA_PEM, **options) + message  # type: ignore[no-any-return]


# Pass ------------------------------------------------------------------------------------------------

def test_our_rsa_and_ed25519_signatures_pass(dns_server: DnsTestServer) -> None:
    publish(dns_server, "rsa")
    publish(dns_server, "ed", key=ED_KEY)
    keys = [SigningKey("example.test", "rsa", RSA_KEY), SigningKey("example.test", "ed", ED_KEY)]
    signed = sign_message(MESSAGE, keys, NOW - 60) + MESSAGE
    verdicts = verify(dns_server, signed)
    assert [(v.result, v.domain, v.selector, v.algorithm) for v in verdicts] == [
        (DkimResult.PASS, "example.test", "rsa", "rsa-sha256"),
        (DkimResult.PASS, "example.test", "ed", "ed25519-sha256"),
    ]
    assert all(v.signature and " " not in v.signature for v in verdicts)


@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"relaxed"),
                                   (b"simple", b"relaxed"), (b"relaxed", b"simple")])
def test_dkimpy_canonicalizations_pass(dns_server: DnsTestServer, canon: tuple[bytes, bytes]) -> None:
    publish(dns_server)
    (verdict,) = verify(dns_server, dkimpy_signed(canonicalize=canon, identity=b"alice@mail.example.test"))
    assert verdict.result is DkimResult.PASS, verdict.reason
    assert verdict.identity == "alice@mail.example.test"


def test_relaxed_survives_refolding_and_trailing_blank_lines(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    signed = dkimpy_signed(canonicalize=(b"relaxed", b"relaxed"))
    mangled = signed.replace(b"Subject: Hello  there", b"Subject:   Hello\r\n\tthere ") + b"\r\n\r\n"
    assert verify(dns_server, mangled)[0].result is DkimResult.PASS


def test_bare_lf_message_is_read_as_crlf(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    signed = dkimpy_signed(canonicalize=(b"relaxed", b"relaxed"))
    assert verify(dns_server, signed.replace(b"\r\n", b"\n"))[0].result is DkimResult.PASS


def test_body_length_limit_passes_but_says_partial(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    signed = dkimpy_signed(length=True)
    (whole,) = verify(dns_server, signed)
    assert whole.result is DkimResult.PASS and not whole.partial_body
    (extended,) = verify(dns_server, signed + b"Click here: http://evil.test/\r\n")
    assert extended.result is DkimResult.PASS and extended.partial_body
    assert "unsigned" in extended.reason


# Fail ------------------------------------------------------------------------------------------------

def test_altered_body_or_header_fails(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    signed = dkimpy_signed()
    (body,) = verify(dns_server, signed.replace(b"tomorrow", b"today"))
    assert (body.result, body.reason) == (DkimResult.FAIL, "body hash mismatch")
    (header,) = verify(dns_server, signed.replace(b"Subject: Hello", b"Subject: Jello"))
    assert (header.result, header.reason) == (DkimResult.FAIL, "signature does not verify")


def test_wrong_key_fails(dns_server: DnsTestServer) -> None:
    publish(dns_server, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert verify(dns_server, dkimpy_signed())[0].result is DkimResult.FAIL


def test_rsa_sha1_is_never_valid(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    (verdict,) = verify(dns_server, dkimpy_signed(signature_algorithm=b"rsa-sha1"))
    assert verdict.result is DkimResult.FAIL
    assert "8301" in verdict.reason


def test_expired_signature_fails(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    signed = dkimpy_signed().replace(b"DKIM-Signature: ", b"DKIM-Signature: x=2000000000; ", 1)
    assert verify(dns_server, signed, now=1_999_999_999)[0].result is DkimResult.FAIL  # changed b=
    (verdict,) = verify(dns_server, signed, now=2_000_000_001)
    assert verdict.result is DkimResult.FAIL and "expired" in verdict.reason


def test_short_rsa_key_fails(dns_server: DnsTestServer) -> None:
    n = (1 << 511) | 0x1D  # any odd 512-bit modulus: the size alone condemns it
    short = rsa.RSAPublicNumbers(65537, n).public_key()
    der = short.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    dns_server.zone.add_txt("rsa._domainkey.example.test", record)
    (verdict,) = verify(dns_server, dkimpy_signed())
    assert verdict.result is DkimResult.FAIL and "512 bits" in verdict.reason


# Errors ------------------------------------------------------------------------------------------------

def test_missing_revoked_or_mismatched_key_is_permerror(dns_server: DnsTestServer) -> None:
    signed = dkimpy_signed()
    assert verify(dns_server, signed)[0].result is DkimResult.PERMERROR
    dns_server.zone.add_txt("rsa._domainkey.example.test", "v=DKIM1; k=rsa; p=")
    assert verify(dns_server, signed)[0].reason == "key revoked (empty p=)"
    dns_server.zone.remove("rsa._domainkey.example.test")
    publish(dns_server, key=ED_KEY)
    assert verify(dns_server, signed)[0].result is DkimResult.PERMERROR


def test_servfail_on_key_is_temperror(dns_server: DnsTestServer) -> None:
    dns_server.zone.servfail("rsa._domainkey.example.test")
    assert verify(dns_server, dkimpy_signed())[0].result is DkimResult.TEMPERROR


def test_malformed_signatures_are_neutral(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    signed = dkimpy_signed()
    no_bh = signed.replace(b" bh=", b" xh=", 1)
    assert verify(dns_server, no_bh)[0].result is DkimResult.NEUTRAL
    foreign_i = signed.replace(b"DKIM-Signature: ", b"DKIM-Signature: i=@evil.test; ", 1)
    assert verify(dns_server, foreign_i)[0].result is DkimResult.NEUTRAL
    no_from = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=rsa; h=to; bh=AA==; b=AA==\r\n" + MESSAGE
    assert verify(dns_server, no_from)[0].result is DkimResult.NEUTRAL
    twice = b"DKIM-Signature: v=1; v=1\r\n" + MESSAGE
    assert verify(dns_server, twice)[0].result is DkimResult.NEUTRAL


def test_unsigned_message_is_none(dns_server: DnsTestServer) -> None:
    assert verify(dns_server, MESSAGE) == (DkimVerdict(DkimResult.NONE, reason="no DKIM-Signature"),)


def test_one_good_one_bad_signature(dns_server: DnsTestServer) -> None:
    publish(dns_server)
    publish(dns_server, "ed", key=ED_KEY)
    good = sign_message(MESSAGE, [SigningKey("example.test", "ed", ED_KEY)], NOW) + MESSAGE
    both = dkimpy_signed(good).replace(b"rsa; ", b"nokey; ", 1)
    assert [v.result for v in verify(dns_server, both)] == [DkimResult.PERMERROR, DkimResult.PASS]


def test_tag_list_parsing() -> None:
    assert parse_tag_list(" v = 1 ;a=rsa-sha256;\r\n\tb=ab cd ;") == {
        "v": "1", "a": "rsa-sha256", "b": "ab cd"}
    with pytest.raises(ValueError, match="duplicate"):
        parse_tag_list("a=1; a=2")


# Fuzz -------------------------------------------------------------------------------------------------

@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300), record=st.text(max_size=80))
def test_garbage_messages_and_key_records_never_raise(dns_server: DnsTestServer, garbage: bytes,
                                                      record: str) -> None:
    dns_server.zone.remove("rsa._domainkey.example.test")
    dns_server.zone.add_txt("rsa._domainkey.example.test", [record.encode("utf-8")[:255]])
    signed = dkimpy_signed()
    cut = len(garbage) % len(signed)
    spliced = signed[:cut] + garbage + signed[cut:]
    for message in (garbage, spliced, b"DKIM-Signature:" + garbage + b"\r\n\r\n"):
        verdicts = verify(dns_server, message)
        assert verdicts and all(isinstance(v.result, DkimResult) for v in verdicts)
