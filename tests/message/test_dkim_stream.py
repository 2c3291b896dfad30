"""Streaming DKIM verification (message.dkim_stream) must agree with the in-memory verifier
(message.dkim_verify) on every message and every way of cutting it into pieces: the canonical
bodies byte for byte (hypothesis, no DNS), and the verdicts against the real loopback DNS server
for signatures from our signer and from dkimpy (both canonicalizations, l=, bare LFs, failures)."""

from __future__ import annotations

import asyncio
import hashlib

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message.dkim import SigningKey, public_key_record, sign_message
from mailprime.message.dkim_canon import CanonicalBodyHasher, relaxed_body
from mailprime.message.dkim_stream import StreamedMessage, verify_streamed
from mailprime.message.dkim_verify import DkimResult, DkimVerdict, simple_body, verify_dkim
from mailprime.net.dns import DnsResolver
from tests.support.dns_server import DnsTestServer

NOW = 1_750_000_000
MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: Hello  there\r\n"
           b"Date: Mon, 16 Jun 2025 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\n"
           b"Hi Bob,  \r\n\r\nsee you \t tomorrow.\r\n\r\n\r\n")
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_PEM = RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def streamed(message: bytes, size: int) -> StreamedMessage:
    s = StreamedMessage()
    for piece in pieces(message, size):
        s.update(piece)
    return s


def both(dns: DnsTestServer, message: bytes, size: int) -> tuple[tuple[DkimVerdict, ...],
                                                                  tuple[DkimVerdict, ...]]:
    async def main() -> tuple[tuple[DkimVerdict, ...], tuple[DkimVerdict, ...]]:
        resolver = DnsResolver([dns.address], 2.0, cache_size=0)
        s = streamed(message, size)
        digests = s.finish()
        head = s.header_section
        assert head is not None
        return (await verify_dkim(message, resolver, NOW),
                await verify_streamed(head, digests, resolver, NOW))

    return asyncio.run(main())


def dkimpy_signed(message: bytes = MESSAGE, **kwargs: object) -> bytes:
    options: dict[str, object] = {"include_headers": [b"from", b"to", b"subject", b"date"]}
    options.update(kwargs)
    return dkim.sign(message, b"rsa", b"example.test", RSA_PEM, **options) + message  # type: ignore[no-any-return]


# Canonical bodies ----------------------------------------------------------------------------

BODY_BYTES = st.lists(st.sampled_from([b"a", b"b", b" ", b"\t", b"\r", b"\n", b"\r\n", b"  \r\n",
                                       b"\r\n\r\n", b"x" * 40]), max_size=60).map(b"".join)


def canonical(body: bytes, relaxed: bool, limit: int | None, size: int) -> tuple[bytes, int]:
    hasher = CanonicalBodyHasher(relaxed, limit)
    for piece in pieces(body, size):
        hasher.update(piece)
    return hasher.finish()


@settings(max_examples=300)
@given(body=BODY_BYTES, size=st.integers(1, 50), limit=st.none() | st.integers(0, 400))
def test_canonical_body_equals_the_reference_in_any_pieces(body: bytes, size: int,
                                                           limit: int | None) -> None:
    for relaxed, reference in ((True, relaxed_body(body)), (False, simple_body(body))):
        expected = reference if limit is None else reference[:limit]
        assert canonical(body, relaxed, limit, size) == (hashlib.sha256(expected).digest(),
                                                         len(reference))


@pytest.mark.parametrize("relaxed", [True, False])
def test_long_lines_are_carried_in_bounded_pieces(relaxed: bool) -> None:
    body = b"word \t " * 10_000 + b"  \r\n" + b"z" * 50_000 + b"\r" + b"\r\n\r\n"
    reference = relaxed_body(body) if relaxed else simple_body(body)
    assert canonical(body, relaxed, None, 7_001) == (hashlib.sha256(reference).digest(), len(reference))


def test_header_section_kept_and_too_long_is_none() -> None:
    s = streamed(MESSAGE, 3)
    assert s.header_section == MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 2]
    big = StreamedMessage(header_limit=100)
    big.update(b"X-Long: " + b"a" * 200 + b"\r\n\r\nbody\r\n")
    assert big.header_section is None
    assert big.finish() == {}


# Verdicts agree with verify_dkim -------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_our_signatures_pass_in_any_pieces(dns_server: DnsTestServer, size: int) -> None:
    dns_server.zone.add_txt("rsa._domainkey.example.test", public_key_record(RSA_KEY))
    dns_server.zone.add_txt("ed._domainkey.example.test", public_key_record(ED_KEY))
    keys = [SigningKey("example.test", "rsa", RSA_KEY), SigningKey("example.test", "ed", ED_KEY)]
    signed = sign_message(MESSAGE, keys, NOW - 60) + MESSAGE
    whole, stream = both(dns_server, signed, size)
    assert whole == stream
    assert [v.result for v in stream] == [DkimResult.PASS, DkimResult.PASS]


@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"relaxed"),
                                   (b"simple", b"relaxed"), (b"relaxed", b"simple")])
@pytest.mark.parametrize("length", [False, True])
def test_dkimpy_signatures_agree(dns_server: DnsTestServer, canon: tuple[bytes, bytes],
                                 length: bool) -> None:
    dns_server.zone.add_txt("rsa._domainkey.example.test", public_key_record(RSA_KEY))
    signed = dkimpy_signed(canonicalize=canon, length=length)
    for message in (signed, signed + b"appended\r\n", signed.replace(b"tomorrow", b"today"),
                    signed.replace(b"Subject: Hello", b"Subject: Jello"),
                    signed.replace(b"\r\n", b"\n")):
        whole, stream = both(dns_server, message, 5)
        assert whole == stream, message
    assert both(dns_server, signed, 5)[1][0].result is DkimResult.PASS


def test_l_longer_than_body_and_failures_agree(dns_server: DnsTestServer) -> None:
    dns_server.zone.add_txt("rsa._domainkey.example.test", public_key_record(RSA_KEY))
    signed = dkimpy_signed(length=True)
    cut = signed[:signed.rindex(b"tomorrow")]  # shorter than l= says
    whole, stream = both(dns_server, cut, 11)
    assert whole == stream and stream[0].result is DkimResult.PERMERROR
    dns_server.zone.servfail("rsa._domainkey.example.test")
    whole, stream = both(dns_server, signed, 11)
    assert whole == stream and stream[0].result is DkimResult.TEMPERROR


def test_unsigned_and_malformed_agree(dns_server: DnsTestServer) -> None:
    for message in (MESSAGE, b"DKIM-Signature: v=1; v=1\r\n" + MESSAGE,
                    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=rsa; h=to; bh=AA==; b=AA==\r\n"
                    + MESSAGE, b"\r\nbody only\r\n", b"From: a@example.test\r\n"):
        whole, stream = both(dns_server, message, 4)
        assert whole == stream, message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=200), size=st.integers(1, 300))
def test_spliced_garbage_agrees(dns_server: DnsTestServer, garbage: bytes, size: int) -> None:
    dns_server.zone.remove("rsa._domainkey.example.test")
    dns_server.zone.add_txt("rsa._domainkey.example.test", public_key_record(RSA_KEY))
    signed = dkimpy_signed(canonicalize=(b"relaxed", b"relaxed"))
    cut = len(garbage) % len(signed)
    message = signed[:cut] + garbage + signed[cut:]

    async def main() -> None:
        resolver = DnsResolver([dns_server.address], 2.0)
        s = streamed(message, size)
        digests = s.finish()
        head = s.header_section
        if head is not None:
            assert await verify_dkim(message, resolver, NOW) == \
                await verify_streamed(head, digests, resolver, NOW)

    asyncio.run(main())
