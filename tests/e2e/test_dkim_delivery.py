"""DKIM end to end: alice submits over SMTP (STARTTLS, AUTH) on instance A (a.test, with an RSA-2048
and an Ed25519 key); A signs once at accept and delivers by MX lookup to instance B, where the
message lands in bob's INBOX. What B received verifies under both signatures with dkimpy and
with OpenDKIM, for a small 8-bit message and for one large enough to be spooled (its body hashed
as it streamed in). Then a rotation on the running instance: the new key signs within the
signer's cache time, without a restart."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import trustme

from mailprime.domain.clock import SystemClock
from mailprime.domain.dkim import DkimKeyType
from mailprime.domain.mail import EventKind
from mailprime.services.dkim_keys import DkimKeys
from tests.e2e.test_two_instances import ALICE, BOB, two_instances
from tests.support.dkim_verifiers import (
    Verdict,
    dkimpy_verify,
    opendkim_unavailable,
    opendkim_verify,
    signatures,
)
from tests.support.dns_server import DnsTestServer
from tests.support.instance import Instance, submit

pytestmark = pytest.mark.slow  # starts servers


def message(subject: str, body: bytes, *, extra: bytes = b"") -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nSubject: {subject}\r\n".encode()
            + extra + b"\r\n" + body)


EIGHT_BIT = message("Grüße", "Grüße aus Köln —  ça va?  \r\n\r\n\tDeux espaces  \r\n\r\n\r\n".encode(),
                    extra=b"Content-Type: text/plain; charset=utf-8\r\n"
                          b"Content-Transfer-Encoding: 8bit\r\nMIME-Version: 1.0\r\n")
ATTACHMENT = base64.encodebytes(bytes(range(256)) * 6000).replace(b"\n", b"\r\n")  # ~2 MB
SPOOLED = message("report", b"--b\r\nContent-Type: text/plain\r\n\r\nSee  attached.\r\n--b\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + ATTACHMENT + b"--b--\r\n",
                  extra=b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n")


async def deliver(a: Instance, b: Instance, content: bytes, count: int) -> bytes:
    result = await submit(a, ALICE, ALICE, [BOB], content)
    assert result.code == 250
    await a.wait_events(result.queue_id, (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.DEFERRED))
    delivered = await b.wait_mailbox(BOB, count)
    return delivered[count - 1][1]


def test_submitted_mail_arrives_signed_with_both_algorithms(tmp_path: Path, ca: trustme.CA,
                                                            dns_server: DnsTestServer) -> None:
    assert len(SPOOLED) > 1024 * 1024  # beyond the default inline_max: streamed to a file

    async def scenario() -> None:
        async with two_instances(tmp_path, ca, dns_server) as (a, b):
            keys = DkimKeys(a.server.store, SystemClock())
            created = await keys.generate("a.test")
            records = {r.name: r.record for r in await keys.records("a.test")}
            expected = [Verdict(k.selector, "rsa-sha256" if k.key_type is DkimKeyType.RSA
                                else "ed25519-sha256", "pass") for k in created]
            for n, content in enumerate((EIGHT_BIT, SPOOLED), start=1):
                received = await deliver(a, b, content, n)
                assert received.endswith(content.split(b"\r\n\r\n", 1)[1])
                assert dkimpy_verify(received, records) == expected
                if opendkim_unavailable() is None:
                    assert opendkim_verify(received, records, tmp_path / f"od{n}") == expected
            if reason := opendkim_unavailable():
                pytest.skip(f"dkimpy verified; {reason}")

    asyncio.run(scenario())


def test_rotation_on_a_running_instance(tmp_path: Path, ca: trustme.CA,
                                        dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with two_instances(tmp_path, ca, dns_server) as (a, b):
            keys = DkimKeys(a.server.store, SystemClock())
            await keys.generate("a.test", selector="old", key_type=DkimKeyType.ED25519)
            first = await deliver(a, b, message("one", b"1\r\n"), 1)
            assert [t[b"s"] for t in signatures(first)] == [b"old"]

            await keys.generate("a.test", selector="new", key_type=DkimKeyType.ED25519)
            await keys.activate("a.test", "new")
            assert a.server.dkim is not None
            a.server.dkim.invalidate()  # as if its cache time had run out
            second = await deliver(a, b, message("two", b"2\r\n"), 2)
            records = {r.name: r.record for r in await keys.records("a.test")}
            assert dkimpy_verify(second, records) == [Verdict("new", "ed25519-sha256", "pass")]
            assert dkimpy_verify(first, records) == [Verdict("old", "ed25519-sha256", "pass")]

    asyncio.run(scenario())
