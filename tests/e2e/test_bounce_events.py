"""Bounces and complaints become facts, end to end (issue 4, "Proven").

A (a.test, mailprime) delivers by MX look-up on the loopback DNS server to two receiving MXs on
one port number: B (b.test, a real mailprime instance on 127.0.0.1) which has no account
"nobody" and answers 550 5.1.1, and a scripted SMTP server (c.test, on 127.0.0.2) that answers
452 4.2.2 for one recipient and 421 4.7.0 for another. Every recipient gets its own VERP
envelope sender. Later, an asynchronous DSN (laid out like Postfix's) arrives at A's MX for the
VERP address of a recipient that had been accepted, and an ARF complaint at A's FBL address.
Each lands as the right event and suppression; a forged VERP address is refused at RCPT; the
suppressed addresses are then refused on submission.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mailprime.domain.deliverability import SuppressionReason
from mailprime.domain.mail import Event, EventKind
from mailprime.message.verp import VerpCodec
from mailprime.runtime import start_server
from mailprime.services.verp_key import read_secrets
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    Provisioning,
    make_settings,
    provision,
    running_instance,
    simple_message,
    submit,
    wait_for,
)
from tests.support.scripted_smtp import Script, ScriptedSmtpServer, scripted_smtp

pytestmark = pytest.mark.slow  # starts servers

ALICE = "alice@a.test"
NOBODY = "nobody@b.test"  # B has no such account: 550 5.1.1 at RCPT
DAVE = "dave@b.test"  # delivered into B
FULL = "full@c.test"  # scripted: 452 4.2.2
SLOW = "slow@c.test"  # scripted: 421 4.7.0, then the connection closes
LATER = "later@c.test"  # scripted: accepted, bounces asynchronously afterwards
SCRIPT = {FULL: "452 4.2.2 <full@c.test>: Mailbox full",
          SLOW: "421 4.7.0 Try again later, closing connection"}


@dataclass
class World:
    a: Instance
    b: Instance
    c: ScriptedSmtpServer
    codec: VerpCodec


@asynccontextmanager
async def world(tmp: Path, ca: trustme.CA, dns: DnsTestServer) -> AsyncIterator[World]:
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")
    dns.zone.add_mx("c.test", 10, "mx.c.test")
    dns.zone.add_a("mx.c.test", "127.0.0.2")
    async with running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                                accounts={DAVE: "dave-secret"}) as b:
        port = b.port("mx")
        async with scripted_smtp(Script.by_recipient(SCRIPT), hostname="mx.c.test",
                                 host="127.0.0.2", port=port) as c:
            # Retries far away: each test sees one attempt per recipient. One soft bounce is
            # enough to suppress here, so that the soft path shows in one message.
            settings = make_settings(tmp / "a", ca, hostname="mail.a.test",
                                     nameservers=[dns.address], mx_port=port, retry_first=3600)
            settings.bounces.soft_bounce_limit = 1
            settings.bounces.verp_max_age_days = 5
            await provision(settings, Provisioning("a.test", {ALICE: "alice-secret"}))
            server = await start_server(settings)
            try:
                a = Instance(server, settings, ca, {ALICE: "alice-secret"}, "a.test")
                secrets = read_secrets(settings.bounces.secret_path(settings.data_path))
                yield World(a, b, c, VerpCodec(secrets))
            finally:
                await server.stop(grace=2.0)


def has(attrs: tuple[tuple[str, str], ...], expected: dict[str, str]) -> bool:
    """Whether an event's attrs include every expected key with that value."""
    got = dict(attrs)
    return all(got.get(k) == v for k, v in expected.items())


def by_recipient(events: list[Event], kind: EventKind) -> dict[str, Event]:
    return {e.recipient or "": e for e in events if e.kind is kind}


def postfix_dsn(*, verp: str, recipient: str, status: str, diagnostic: str,
                action: str = "failed") -> bytes:
    """A bounce laid out as Postfix's bounce(8) writes one (compare tests/message/bounces)."""
    boundary = "4C2B1A0F3E.1795690709/mx.c.test"
    return (
        "Received: by mx.c.test (Postfix)\r\n\tid 4C2B1A0F3E; Thu, 26 Nov 2026 10:58:29 +0000 (UTC)\r\n"
        "Date: Thu, 26 Nov 2026 10:58:29 +0000 (UTC)\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.c.test>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"To: {verp}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "Message-Id: <20261126105829.4C2B1A0F3E@mx.c.test>\r\n\r\n"
        "This is a MIME-encapsulated message.\r\n\r\n"
        f"--{boundary}\r\nContent-Description: Notification\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "This is the mail system at host mx.c.test.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n\r\n"
        f"<{recipient}>: {diagnostic}\r\n\r\n"
        f"--{boundary}\r\nContent-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.c.test\r\nX-Postfix-Queue-ID: 4C2B1A0F3E\r\n"
        f"X-Postfix-Sender: rfc822; {verp}\r\n"
        "Arrival-Date: Thu, 26 Nov 2026 10:58:29 +0000 (UTC)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: x-unix; {diagnostic}\r\n\r\n"
        f"--{boundary}\r\nContent-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{verp}>\r\nFrom: <{ALICE}>\r\nTo: <{recipient}>\r\n"
        "Subject: Five recipients\r\n\r\n"
        f"--{boundary}--\r\n").encode()


def send_to_mx(inst: Instance, recipient: str, message: bytes, sender: str = "") -> tuple[int, str]:
    """Blocking: one message from `sender` to A's MX (plaintext, like a remote MTA without TLS);
    returns the reply to RCPT if refused, else to DATA."""
    with smtplib.SMTP("127.0.0.1", inst.port("mx"), timeout=10) as client:
        client.ehlo("mx.c.test")
        client.mail(sender)
        code, text = client.rcpt(recipient)
        if code != 250:
            return code, text.decode()
        code, text = client.data(message)
        return code, text.decode()


def test_sync_and_async_bounces_land_as_events_and_suppressions(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with world(tmp_path, ca, dns_server) as w:
            a = w.a
            # The 421 last: it throttles the whole destination (delivery.shaping), and the
            # recipients after it in the same job would wait for the pause.
            recipients = [NOBODY, FULL, LATER, DAVE, SLOW]
            result = await submit(a, ALICE, ALICE, recipients,
                                  simple_message(ALICE, DAVE, "Five recipients"))
            qid = result.queue_id
            events = await a.wait_events(qid, (EventKind.DELIVERED, EventKind.BOUNCED,
                                               EventKind.DEFERRED), count=5)
            rows = {r.address: r for r in await a.recipients(qid)}

            # Each recipient had its own transaction with its own VERP sender.
            on_c = {t.recipients[0] if t.recipients else next(iter(t.refused)): t
                    for t in await w.c.wait_for(3)}
            assert set(on_c) == {FULL, SLOW, LATER}
            for address, tx in on_c.items():
                target = w.codec.decode(tx.sender)
                assert target is not None, tx.sender
                assert (target.queue_id, target.recipient_id) == (qid, rows[address].id)
                assert tx.sender.startswith("bounces+") and tx.sender.endswith("@a.test")
            assert on_c[LATER].data is not None and b"Subject: Five recipients" in on_c[LATER].data

            # 550 5.1.1 from B: BOUNCED, classified, and a hard-bounce suppression.
            bounced = by_recipient(events, EventKind.BOUNCED)[NOBODY]
            assert bounced.detail.startswith("550 5.1.1 ")
            assert has(bounced.attrs, {"reason": "user_unknown", "class": "hard",
                                       "status": "5.1.1", "source": "sync"})
            deferred = by_recipient(events, EventKind.DEFERRED)
            # 452 4.2.2: a soft bounce about the mailbox: counted (limit 1 here: suppressed).
            assert has(deferred[FULL].attrs, {"reason": "mailbox_full", "class": "soft",
                                              "status": "4.2.2", "source": "sync"})
            # 421 4.7.0: the sender is being throttled; not the recipient's fault, not counted.
            slow = dict(deferred[SLOW].attrs)
            assert deferred[SLOW].detail.startswith("421 4.7.0 ")
            assert (slow["class"], slow["status"], slow["throttle"]) == ("soft", "4.7.0", "yes")
            delivered = by_recipient(events, EventKind.DELIVERED)
            assert set(delivered) == {LATER, DAVE}

            store = a.server.store
            hard = await store.find_suppression(NOBODY, "a.test")
            assert hard is not None and hard.reason is SuppressionReason.HARD_BOUNCE
            assert (hard.queue_id, hard.scope) == (qid, "")
            assert hard.detail.startswith("550 5.1.1 ")
            soft = await store.find_suppression(FULL, "a.test")
            assert soft is not None and soft.reason is SuppressionReason.SOFT_BOUNCES
            assert await store.find_suppression(SLOW) is None
            assert await store.find_suppression(LATER) is None
            suppressed = by_recipient(await a.wait_events(qid, (EventKind.SUPPRESSED,), count=2),
                                      EventKind.SUPPRESSED)
            assert set(suppressed) == {NOBODY, FULL}
            assert has(suppressed[NOBODY].attrs, {
                "reason": "hard_bounce", "scope": "global", "bounce_reason": "user_unknown",
                "status": "5.1.1", "source": "sync"})
            assert dict(suppressed[FULL].attrs)["reason"] == "soft_bounces"

            # Later: the c.test MX bounces what it had accepted, to LATER's VERP address.
            verp = on_c[LATER].sender
            dsn = postfix_dsn(verp=verp, recipient=LATER, status="5.1.1",
                              diagnostic="550 5.1.1 <later@c.test>: user unknown (account closed)")
            code, text = await asyncio.to_thread(send_to_mx, a, verp.upper(), dsn)
            assert code == 250, text
            events = await a.wait_events(qid, (EventKind.BOUNCED,), count=2)
            late = [e for e in events if e.kind is EventKind.BOUNCED and e.recipient == LATER]
            assert len(late) == 1
            assert has(late[0].attrs, {
                "source": "async", "reason": "user_unknown", "class": "hard", "status": "5.1.1",
                "action": "failed", "format": "dsn", "mapped_by": "verp"})
            async_hard = await wait_for(lambda: store.find_suppression(LATER), what="suppression")
            assert async_hard.reason is SuppressionReason.HARD_BOUNCE
            assert "account closed" in async_hard.detail
            # The bounce was consumed: no mailbox on A got it (alice has only A's own DSN about
            # the synchronous 550, sent to her real address, not to the VERP one).
            stored = [content for _m, content in await a.mailbox(ALICE)]
            assert not any(b"Reporting-MTA: dns; mx.c.test" in c for c in stored)
            assert all(b"Reporting-MTA: dns; mail.a.test" in c for c in stored)

            # A forged token is refused before any data.
            forged = verp[:-len("@a.test") - 1] + ("a" if verp[-len("@a.test") - 1] != "a" else "b")
            code, text = await asyncio.to_thread(send_to_mx, a, forged + "@a.test", dsn)
            assert (code, text.split()[0]) == (550, "5.1.1"), text

            # The suppressed addresses are refused on submission, with the reason and date.
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                await submit(a, ALICE, ALICE, [NOBODY], simple_message(ALICE, NOBODY, "Again"))
            code_b, reply = refused.value.recipients[NOBODY]
            assert code_b == 550
            assert reply.decode() == (f"5.7.1 <{NOBODY}>: recipient suppressed (hard bounce on "
                                      f"{hard.created_at:%Y-%m-%d})")

    asyncio.run(scenario())


def test_complaint_at_the_fbl_address_suppresses_the_recipient(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with world(tmp_path, ca, dns_server) as w:
            a = w.a
            result = await submit(a, ALICE, ALICE, [DAVE], simple_message(ALICE, DAVE, "Offer"))
            qid = result.queue_id
            await a.wait_events(qid, (EventKind.DELIVERED,))
            (row,) = await a.recipients(qid)
            verp = w.codec.encode(qid, row.id, "a.test")
            assert verp is not None
            arf = arf_report(original_mail_from=verp, recipient="redacted@b.test")
            code, text = await asyncio.to_thread(send_to_mx, a, "fbl@a.test", arf,
                                                 "fbl-noreply@b.test")
            assert code == 250, text
            events = await a.wait_events(qid, (EventKind.COMPLAINED,))
            (complained,) = [e for e in events if e.kind is EventKind.COMPLAINED]
            assert complained.recipient == DAVE
            assert has(complained.attrs, {"feedback_type": "abuse", "mapped_by": "verp",
                                          "source": "arf"})
            entry = await a.server.store.find_suppression(DAVE, "a.test")
            assert entry is not None and entry.reason is SuppressionReason.COMPLAINT
            assert entry.queue_id == qid
            assert await a.mailbox(ALICE) == []

            # The FBL sends it again: acknowledged, recorded once.
            code, text = await asyncio.to_thread(send_to_mx, a, "fbl@a.test", arf,
                                                 "fbl-noreply@b.test")
            assert (code, text) == (250, "2.0.0 Ok: report already recorded")
            events = await a.server.store.list_events(qid)
            assert len([e for e in events if e.kind is EventKind.COMPLAINED]) == 1

            # A report without our token names anyone: recorded, nobody suppressed.
            forged = arf_report(original_mail_from="news@a.test", recipient="victim@b.test")
            code, text = await asyncio.to_thread(send_to_mx, a, "fbl@a.test", forged,
                                                 "anyone@elsewhere.test")
            assert code == 250, text
            assert await a.server.store.find_suppression("victim@b.test") is None
            unmapped = [e for e in await a.server.store.list_events()
                        if e.kind is EventKind.COMPLAINED and e.queue_id is None]
            assert len(unmapped) == 1 and has(unmapped[0].attrs, {
                "mapped": "no", "reported_recipient": "victim@b.test"})

            # [bounces] verp_max_age_days = 5: a token issued six days ago is refused at RCPT.
            old = w.codec.encode(qid, row.id, "a.test", day=w.codec.today() - 6)
            assert old is not None
            code, text = await asyncio.to_thread(send_to_mx, a, old, arf)
            assert (code, text) == (550, f"5.1.1 <{old}>: Recipient address rejected: "
                                         "expired bounce address")

    asyncio.run(scenario())


def arf_report(*, original_mail_from: str, recipient: str) -> bytes:
    """An RFC 5965 report as a feedback loop sends it; the complainant's address is redacted,
    so only the VERP sender maps it back."""
    boundary = "arf-boundary-1"
    return (
        "From: <fbl-noreply@b.test>\r\nTo: <fbl@a.test>\r\nSubject: FW: Offer\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=feedback-report; boundary=\"{boundary}\"\r\n"
        "\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{original_mail_from}>\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\n"
        "Source-IP: 127.0.0.1\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{original_mail_from}>\r\nFrom: <{ALICE}>\r\nTo: <{recipient}>\r\n"
        "Subject: Offer\r\nMessage-ID: <offer-1@a.test>\r\n\r\n"
        f"--{boundary}--\r\n").encode()

