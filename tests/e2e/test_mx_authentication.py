"""Verification on the MX of a real instance, through smtplib from 127.0.0.1, with the sender
domains' SPF, DKIM and DMARC records in the real loopback DNS server: the Authentication-Results
header stored with each message, forged results removed, DMARC reject answered 550 5.7.1 with
nothing stored, quarantine filed into Junk, and the submission listener left alone."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from mailprime.config import AuthenticationSettings
from mailprime.message.dkim import SigningKey, public_key_record, sign_message
from mailprime.runtime import start_server
from tests.support.dns_server import DnsTestServer
from tests.support.instance import Instance, Provisioning, make_settings, provision, smtp_send

pytestmark = pytest.mark.slow  # starts servers

BOB = "bob@b.test"
ACCOUNTS = {BOB: "bob-secret"}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@asynccontextmanager
async def instance(tmp: Path, ca: trustme.CA, dns: DnsTestServer,
                   auth: AuthenticationSettings) -> AsyncIterator[Instance]:
    settings = make_settings(tmp, ca, hostname="mx.b.test", nameservers=[dns.address])
    settings.authentication = auth
    await provision(settings, Provisioning("b.test", dict(ACCOUNTS)))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, dict(ACCOUNTS), "b.test")
    finally:
        await server.stop(grace=2.0)


def zones(dns: DnsTestServer) -> None:
    dns.zone.negative_ttl = 60
    for domain, spf, policy in (("pass.test", "ip4:127.0.0.1", "reject"), ("fail.test", "", "reject"),
                                ("quar.test", "", "quarantine"), ("none.test", "", "none")):
        dns.zone.add_txt(domain, f"v=spf1 {spf} -all".replace("  ", " "))
        dns.zone.add_txt(f"_dmarc.{domain}", f"v=DMARC1; p={policy}")
    dns.zone.add_txt("sel._domainkey.pass.test", public_key_record(RSA_KEY))


def message(domain: str, *, extra: bytes = b"") -> bytes:
    return (extra + f"From: Alice <alice@{domain}>\r\nTo: <{BOB}>\r\nSubject: from {domain}\r\n".encode()
            + f"Message-ID: <1@{domain}>\r\nDate: Mon, 16 Jun 2025 10:00:00 +0000\r\n\r\n".encode()
            + b"Hello  Bob.\r\n")


def send(inst: Instance, sender: str, data: bytes) -> int:
    """Blocking: one message to the MX with STARTTLS; the reply code to DATA."""
    try:
        return smtp_send("127.0.0.1", inst.port("mx"), ctx=inst.client_tls(), sender=sender,
                         recipients=[BOB], message=data).code
    except smtplib.SMTPDataError as exc:
        assert exc.smtp_code != 550 or b"5.7.1 Email rejected per DMARC policy for" in exc.smtp_error
        return exc.smtp_code


def header_of(stored: bytes) -> bytes:
    """The Authentication-Results field right below our Received field, which opens the message."""
    assert stored.startswith(b"Received: from client.test"), stored[:300]
    start = stored.index(b"\r\nAuthentication-Results: ") + 2
    return stored[start:stored.index(b"\r\n", stored.index(b"\tarc=", start)) + 2]


def test_verdicts_stored_reject_and_quarantine(tmp_path: Path, ca: trustme.CA,
                                               dns_server: DnsTestServer) -> None:
    zones(dns_server)
    forged = b"Authentication-Results: mx.b.test; dkim=pass header.d=bank.test\r\n"
    signed = message("pass.test", extra=forged)
    signed = sign_message(signed, [SigningKey("pass.test", "sel", RSA_KEY)], 1_750_000_000) + signed

    async def scenario() -> None:
        async with instance(tmp_path, ca, dns_server, AuthenticationSettings()) as inst:
            codes = [await asyncio.to_thread(send, inst, f"bounce@{domain}", data) for domain, data in (
                ("pass.test", signed), ("fail.test", message("fail.test")),
                ("quar.test", message("quar.test")), ("none.test", message("none.test")))]
            assert codes == [250, 550, 250, 250]
            inbox = [content for _m, content in await inst.mailbox(BOB)]
            [junk] = [content for _m, content in await inst.mailbox(BOB, "Junk")]
            assert len(inbox) == 2 and b"bank.test" not in inbox[0]
            assert header_of(inbox[0]).startswith(
                b"Authentication-Results: mx.b.test;\r\n"
                b"\tspf=pass smtp.mailfrom=bounce@pass.test;\r\n"
                b"\tdkim=pass header.d=pass.test header.s=sel header.a=rsa-sha256\r\n")
            assert header_of(inbox[0]).endswith(
                b"\tdmarc=pass (p=reject dis=none) header.from=pass.test;\r\n\tarc=none\r\n")
            assert header_of(inbox[1]) == (
                b"Authentication-Results: mx.b.test;\r\n\tspf=fail smtp.mailfrom=bounce@none.test;\r\n"
                b"\tdkim=none;\r\n\tdmarc=fail (p=none dis=none) header.from=none.test;\r\n\tarc=none\r\n")
            assert b"\tdmarc=fail (p=quarantine dis=quarantine) header.from=quar.test;" in header_of(junk)
            assert not any(b"fail.test" in c for c in (*inbox, junk))  # the rejected one: nowhere

    asyncio.run(scenario())


def test_actions_configured_and_verification_off(tmp_path: Path, ca: trustme.CA,
                                                 dns_server: DnsTestServer) -> None:
    zones(dns_server)

    async def scenario() -> None:
        auth = AuthenticationSettings(dmarc_reject_action="junk", dmarc_quarantine_action="none",
                                      authserv_id="auth.b.test")
        async with instance(tmp_path / "a", ca, dns_server, auth) as inst:
            for domain in ("fail.test", "quar.test"):
                assert await asyncio.to_thread(send, inst, f"x@{domain}", message(domain)) == 250
            [junk] = [c for _m, c in await inst.mailbox(BOB, "Junk")]
            [inbox] = [c for _m, c in await inst.mailbox(BOB)]
            assert b"\r\nAuthentication-Results: auth.b.test;" in junk and b"fail.test" in junk
            assert b"quar.test" in inbox
        async with instance(tmp_path / "b", ca, dns_server, AuthenticationSettings(verify=False)) as inst:
            dns_server.clear_queries()
            assert await asyncio.to_thread(send, inst, "x@fail.test", message("fail.test")) == 250
            [(_m, stored)] = await inst.mailbox(BOB)
            assert stored.startswith(b"Received: ") and dns_server.queries == []

    asyncio.run(scenario())
