"""The MX verification step (services.mx_auth) inside a real inbound session: real SQLite store,
real spool, the real loopback DNS server with crafted zones. Each test drives the session event by
event and reads back what was stored (or that nothing was)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailprime.domain.clock import SystemClock
from mailprime.message.dkim import SigningKey, public_key_record, sign_message
from mailprime.net.dns import DnsResolver
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.mx_auth import MxAuthenticator, MxAuthPolicy
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import SqlStore, open_store
from tests.support.dns_server import DnsTestServer

INLINE_MAX = 64 * 1024
BOB = "bob@mx.test"
AUTHSERV = "mx.mx.test"
CLIENT_IP = "192.0.2.25"
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def message(sender: str = "alice@sender.test", *, extra: bytes = b"", body: bytes = b"Hello.\r\n") -> bytes:
    return (extra + f"From: Alice <{sender}>\r\nTo: {BOB}\r\nSubject: Hi\r\n".encode()
            + b"Date: Mon, 16 Jun 2025 10:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\n" + body)


def big_body(size: int) -> bytes:
    line = b"0123456789 the quick  brown fox \t jumps\r\n"
    return line * (size // len(line) + 1)


@dataclass
class Mx:
    store: SqlStore
    dns: DnsTestServer
    tmp: Path

    async def send(self, data: bytes, *, mail_from: str = "bounce@sender.test", ip: str = CLIENT_IP,
                   role: str = "mx", policy: MxAuthPolicy | None = None,
                   sample: Callable[[], float] = lambda: 0.0) -> Reply:
        auth = MxAuthenticator(DnsResolver([self.dns.address], 2.0), policy or MxAuthPolicy(AUTHSERV),
                               self.store, sample=sample)
        service = InboundService(self.store, InboundConfig("mx.mx.test", role), SystemClock(),
                                 mx_auth=auth)
        sess = service.new_session(PeerInfo(ip, 40000, role), tls=False)
        await sess.on_helo("client.sender.test", True)
        if role == "submission":
            assert (await sess.on_auth("PLAIN", "", BOB, "pw")).ok
            mail_from = BOB
        assert (await sess.on_mail(mail_from, MailParams())).code == 250
        assert (await sess.on_rcpt(BOB, RcptParams())).code == 250
        assert await sess.on_data_start() is None
        for start in range(0, len(data), 8192):
            await sess.on_data_chunk(data[start:start + 8192])
        return await sess.on_data_end()

    async def stored(self, mailbox: str = "INBOX") -> list[bytes]:
        account = await self.store.get_account(BOB)
        assert account is not None
        return [await self.store.read_blob(m.blob_id)
                for m in await self.store.list_messages(account.id, mailbox)]

    def spool_files(self) -> int:
        return len(list((self.tmp / "spool").rglob("*.*")))


@asynccontextmanager
async def mx(tmp: Path, dns: DnsTestServer) -> AsyncIterator[Mx]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=INLINE_MAX)
    try:
        await store.add_domain("mx.test")
        await store.add_account(BOB, hash_password("pw"))
        yield Mx(store, dns, tmp)
    finally:
        await store.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def zone(dns: DnsTestServer, *, spf: str = f"v=spf1 ip4:{CLIENT_IP} -all",
         dmarc: str | None = "v=DMARC1; p=reject") -> None:
    dns.zone.negative_ttl = 60
    dns.zone.add_txt("sender.test", spf)
    if dmarc is not None:
        dns.zone.add_txt("_dmarc.sender.test", dmarc)
    dns.zone.add_txt("ed._domainkey.sender.test", public_key_record(ED_KEY))


def signed(data: bytes) -> bytes:
    return sign_message(data, [SigningKey("sender.test", "ed", ED_KEY)], 1_750_000_000) + data


def header_of(stored: bytes) -> bytes:
    """The Authentication-Results field right below our Received field, which opens the message."""
    assert stored.startswith(b"Received: from client.sender.test"), stored[:200]
    start = stored.index(b"\r\nAuthentication-Results: " + AUTHSERV.encode() + b";\r\n") + 2
    end = stored.index(b"\r\n", stored.index(b"\tarc=", start)) + 2
    return stored[start:end]


def test_spf_pass_dmarc_pass_header_byte_exact(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server)

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            reply = await m.send(message())
            assert reply.code == 250, reply
            [stored] = await m.stored()
            assert header_of(stored) == (
                b"Authentication-Results: mx.mx.test;\r\n"
                b"\tspf=pass smtp.mailfrom=bounce@sender.test;\r\n"
                b"\tdkim=none;\r\n"
                b"\tdmarc=pass (p=reject dis=none) header.from=sender.test;\r\n"
                b"\tarc=none\r\n")
            assert stored.endswith(message())

    run(scenario)


def test_dkim_pass_on_a_spooled_body_streams(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server, spf="v=spf1 -all")  # SPF fails: DMARC must pass on DKIM alone
    data = signed(message(body=big_body(5 * INLINE_MAX)))

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(data)).code == 250
            [stored] = await m.stored()
            head = header_of(stored)
            assert b"spf=fail" in head and b"dkim=pass header.d=sender.test header.s=ed" in head
            assert b"dmarc=pass" in head and stored.endswith(data)
            tampered = data[:-10] + b"X" + data[-9:]
            assert (await m.send(tampered)).code == 550  # body hash fails -> DMARC reject

    run(scenario)


def test_dmarc_reject_is_550_and_nothing_is_stored(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server, spf="v=spf1 -all")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            for data in (message(), message(body=big_body(3 * INLINE_MAX))):
                reply = await m.send(data)
                assert (reply.code, reply.enhanced) == (550, "5.7.1")
                assert reply.text == "Email rejected per DMARC policy for sender.test (p=reject)"
            assert await m.stored() == [] and m.spool_files() == 0

    run(scenario)


def test_quarantine_goes_to_the_junk_special_use_mailbox(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server, spf="v=spf1 -all", dmarc="v=DMARC1; p=quarantine")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(message())).code == 250
            assert await m.stored() == []
            [junk] = await m.stored("Junk")
            assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=sender.test" in junk
            boxes = {b.name: b.special_use for b in await m.store.list_mailboxes(
                (await m.store.get_account(BOB)).id)}  # type: ignore[union-attr]
            assert boxes["Junk"] == "\\Junk"

    run(scenario)


def test_a_renamed_junk_mailbox_is_found_by_its_special_use(tmp_path: Path,
                                                           dns_server: DnsTestServer) -> None:
    zone(dns_server, spf="v=spf1 -all", dmarc="v=DMARC1; p=quarantine")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            account = await m.store.get_account(BOB)
            assert account is not None
            await m.store.rename_mailbox(account.id, "Junk", "Spam")  # keeps its \\Junk
            assert (await m.send(message())).code == 250
            assert len(await m.stored("Spam")) == 1 and await m.stored("Junk") == []

    run(scenario)


@pytest.mark.parametrize(("policy", "code", "mailbox"), [
    (MxAuthPolicy(AUTHSERV, dmarc_reject_action="junk"), 250, "Junk"),
    (MxAuthPolicy(AUTHSERV, dmarc_reject_action="none"), 250, "INBOX"),
])
def test_reject_action_is_configurable(tmp_path: Path, dns_server: DnsTestServer, policy: MxAuthPolicy,
                                       code: int, mailbox: str) -> None:
    zone(dns_server, spf="v=spf1 -all")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(message(), policy=policy)).code == code
            [stored] = await m.stored(mailbox)
            assert b"dmarc=fail (p=reject dis=reject)" in stored

    run(scenario)


def test_pct_sampling_weakens_the_policy(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server, spf="v=spf1 -all", dmarc="v=DMARC1; p=reject; pct=30")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(message(), sample=lambda: 0.1)).code == 550  # inside the 30 %
            assert (await m.send(message(), sample=lambda: 0.5)).code == 250  # outside: quarantine
            [junk] = await m.stored("Junk")
            assert b"dmarc=fail (p=reject dis=quarantine)" in junk

    run(scenario)


def test_forged_results_are_removed_or_refused_when_spooled(tmp_path: Path,
                                                            dns_server: DnsTestServer) -> None:
    zone(dns_server)
    forged = (b"Authentication-Results: MX.mx.test; spf=pass smtp.mailfrom=x@sender.test;\r\n"
              b"\tdkim=pass header.d=bank.test\r\n")
    theirs = b"Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=x@sender.test\r\n"

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(message(extra=forged + theirs))).code == 250
            [stored] = await m.stored()
            assert b"bank.test" not in stored and theirs in stored
            assert stored.count(b"Authentication-Results: mx.mx.test;") == 1
            reply = await m.send(message(extra=forged, body=big_body(2 * INLINE_MAX)))
            assert (reply.code, reply.enhanced) == (550, "5.7.1") and "mx.mx.test" in reply.text
            assert len(await m.stored()) == 1 and m.spool_files() == 0

    run(scenario)


def test_arc_of_a_spooled_message_is_not_verified(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server)
    arc = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=fwd.test; s=arc; b=AAAA\r\n"

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(message(extra=arc, body=big_body(2 * INLINE_MAX)))).code == 250
            assert (await m.send(message(extra=arc))).code == 250
            spooled, small = await m.stored()
            assert b"\tarc=fail\r\n" in header_of(spooled) and b"\tarc=fail\r\n" in header_of(small)

    run(scenario)


def test_dns_failure_is_temperror_and_delivered(tmp_path: Path, dns_server: DnsTestServer) -> None:
    dns_server.zone.servfail("sender.test")
    dns_server.zone.servfail("_dmarc.sender.test")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            assert (await m.send(message())).code == 250
            [stored] = await m.stored()
            head = header_of(stored)
            assert b"spf=temperror" in head and b"dmarc=temperror" in head

    run(scenario)


def test_submission_is_never_verified(tmp_path: Path, dns_server: DnsTestServer) -> None:
    zone(dns_server, spf="v=spf1 -all")

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            dns_server.clear_queries()
            assert (await m.send(message(BOB), role="submission")).code == 250
            assert dns_server.queries == []

    run(scenario)


def test_a_header_section_past_the_limit_is_refused_not_let_through(
        tmp_path: Path, dns_server: DnsTestServer) -> None:
    """Past MAX_HEADER_SECTION the fields are unknown: a forged Authentication-Results there
    could not be removed nor DMARC applied, so the message is refused (552 5.3.4)."""
    zone(dns_server)
    from mailprime.message.headers import MAX_HEADER_SECTION

    forged = f"Authentication-Results: {AUTHSERV}; dmarc=pass\r\n".encode()
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 900) for i in range(MAX_HEADER_SECTION // 900 + 2))

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            reply = await m.send(message(extra=forged + padding))
            assert (reply.code, reply.enhanced) == (552, "5.3.4")
            assert str(MAX_HEADER_SECTION) in reply.text
            assert await m.stored() == [] and m.spool_files() == 0

    run(scenario)


def test_several_from_authors_are_rejected_as_dmarc_cannot_apply(
        tmp_path: Path, dns_server: DnsTestServer) -> None:
    """RFC 7489 6.6.1: mail with several From authors (two fields, or two domains in one) leaves
    DMARC no domain to check, and "is typically rejected": the reject action applies."""
    zone(dns_server)

    async def scenario() -> None:
        async with mx(tmp_path, dns_server) as m:
            two_fields = message(extra=b"From: Mallory <ceo@victim.test>\r\n")
            two_domains = message().replace(b"From: Alice <alice@sender.test>",
                                            b"From: alice@sender.test, ceo@victim.test")
            for data in (two_fields, two_domains):
                reply = await m.send(data)
                assert (reply.code, reply.enhanced) == (550, "5.7.1"), reply
                assert "several From authors" in reply.text
            assert await m.stored() == []
            junk = MxAuthPolicy(AUTHSERV, dmarc_reject_action="junk")
            assert (await m.send(two_fields, policy=junk)).code == 250
            assert len(await m.stored("Junk")) == 1

    run(scenario)
