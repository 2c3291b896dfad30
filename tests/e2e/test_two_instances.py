"""Two real instances and a real DNS server: A (a.test) submits, looks up b.test's MX on the test
DNS server and delivers to B (b.test) over SMTP with STARTTLS; failures come back as RFC 3464
DSNs in the sender's INBOX on A.

Each test runs its own event loop (`asyncio.run`); smtplib runs in a thread so that both
instances keep serving. Waiting for a delivery polls A's or B's store with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import trustme

from mailprime.domain.mail import EventKind, RecipientStatus
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    dsn_field,
    parse,
    parse_dsn,
    refusing_port,
    running_instance,
    simple_message,
    submit,
)

pytestmark = pytest.mark.slow  # starts servers or runs the real command

ALICE = "alice@a.test"
BOB = "bob@b.test"
CAROL = "carol@b.test"
FINAL = (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.EXPIRED)
OUTCOMES = (*FINAL, EventKind.DEFERRED)


@asynccontextmanager
async def two_instances(tmp: Path, ca: trustme.CA,
                        dns: DnsTestServer) -> AsyncIterator[tuple[Instance, Instance]]:
    """B (b.test, MX mx.b.test -> 127.0.0.1) and A (a.test) that routes by the test DNS and
    connects to B's MX listener port."""
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")
    # A is started second: its outbound port is B's MX port, known once B is up.
    async with (
        running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                         accounts={BOB: "bob-secret", CAROL: "carol-secret"}) as b,
        running_instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                         accounts={ALICE: "alice-secret"}, nameservers=[dns.address],
                         mx_port=b.port("mx")) as a,
    ):
        yield a, b


def _queued_as(reply: str) -> str:
    assert "queued as " in reply, reply
    return reply.split("queued as ", 1)[1].split()[0]


def test_message_is_delivered_by_mx_lookup(tmp_path: Path, ca: trustme.CA,
                                           dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with two_instances(tmp_path, ca, dns_server) as (a, b):
            result = await submit(a, ALICE, ALICE, [BOB], simple_message(ALICE, BOB, "Hello B"))
            assert result.code == 250
            qid = result.queue_id

            events = await a.wait_events(qid, OUTCOMES)
            assert [(e.kind, e.recipient) for e in events] == [
                (EventKind.QUEUED, BOB), (EventKind.DELIVERED, BOB)]
            delivered = events[1]
            assert delivered.detail.startswith("250 2.0.0 ")
            assert dict(delivered.attrs)["remote_host"].startswith("mx.b.test[127.0.0.1]:")
            b_qid = _queued_as(delivered.detail)
            (rcpt,) = await a.recipients(qid)
            assert (rcpt.status, rcpt.attempts) == (RecipientStatus.DELIVERED, 1)

            # B filed it in bob's INBOX under the queue id it answered with.
            b_events = await b.events(b_qid)
            assert [(e.kind, e.recipient) for e in b_events] == [(EventKind.STORED, BOB)]
            ((stored, content),) = await b.wait_mailbox(BOB, 1)
            assert stored.uid == 1
            msg = parse(content)
            assert msg["Subject"] == "Hello B"
            received = [str(r) for r in msg.get_all("Received") or []]
            assert len(received) == 2
            # B's trace field on top (it received last), A's beneath (RFC 5321 4.4).
            assert "by mx.b.test" in received[0] and f"id {b_qid}" in received[0]
            assert "with ESMTPS " in received[0] and "from mail.a.test" in received[0]
            assert "by mail.a.test" in received[1] and f"id {qid}" in received[1]
            assert "with ESMTPSA " in received[1]  # submitted over TLS with AUTH (RFC 3848)
            assert msg["Message-ID"] is not None and msg["Date"] is not None  # added on submission

        asked = {(q.name, q.qtype) for q in dns_server.queries}
        assert ("b.test", "MX") in asked and ("mx.b.test", "A") in asked

    asyncio.run(scenario())


def test_unknown_recipient_comes_back_as_dsn(tmp_path: Path, ca: trustme.CA,
                                             dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with two_instances(tmp_path, ca, dns_server) as (a, b):
            nobody = "nobody@b.test"
            result = await submit(a, ALICE, ALICE, [nobody],
                                  simple_message(ALICE, nobody, "Anyone there?"))
            qid = result.queue_id
            events = await a.wait_events(qid, OUTCOMES)
            bounced = next(e for e in events if e.kind in OUTCOMES)  # (SUPPRESSED follows it)
            assert (bounced.kind, bounced.recipient) == (EventKind.BOUNCED, nobody)
            assert bounced.detail.startswith("550 5.1.1 ")

            ((_stored, content),) = await a.wait_mailbox(ALICE, 1)
            dsn = parse_dsn(content)  # multipart/report; report-type=delivery-status
            assert dsn.message["To"].addresses[0].addr_spec == ALICE
            assert dsn.message["Auto-Submitted"] == "auto-replied"
            assert [p.get_content_type() for p in dsn.parts] == [
                "text/plain", "message/delivery-status", "text/rfc822-headers"]
            assert dsn_field(dsn.per_message, "Reporting-MTA") == "dns; mail.a.test"
            (rcpt,) = dsn.per_recipient
            assert dsn_field(rcpt, "Final-Recipient") == f"rfc822; {nobody}"
            assert dsn_field(rcpt, "Action") == "failed"
            assert dsn_field(rcpt, "Status") == "5.1.1"
            assert dsn_field(rcpt, "Remote-MTA") == "dns; mx.b.test"
            assert dsn_field(rcpt, "Diagnostic-Code").startswith("smtp; 550 5.1.1")
            # The returned header section is the original's: the subject is still there.
            assert "Subject: Anyone there?" in dsn.parts[2].get_content()
            assert await b.mailbox(BOB) == []

            # The DSN itself went from the null sender to a local mailbox: nothing was queued
            # for it, so no DSN can ever bounce back (RFC 5321 4.5.5).
            dsn_events = [e for e in await a.events() if e.queue_id != qid]
            assert {e.kind for e in dsn_events} == {EventKind.STORED}

    asyncio.run(scenario())


def test_recipients_of_one_domain_share_one_transaction(tmp_path: Path, ca: trustme.CA,
                                                        dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with two_instances(tmp_path, ca, dns_server) as (a, b):
            # Without VERP: with it, each recipient has its own transaction (verp_split).
            a.server.worker.verp = None
            result = await submit(a, ALICE, ALICE, [BOB, CAROL],
                                  simple_message(ALICE, BOB, "To both of you"))
            qid = result.queue_id
            events = await a.wait_events(qid, OUTCOMES, count=2)
            delivered = [e for e in events if e.kind is EventKind.DELIVERED]
            assert {e.recipient for e in delivered} == {BOB, CAROL}
            # One transaction: B answered the DATA once, with one queue id for both recipients.
            (b_qid,) = {_queued_as(e.detail) for e in delivered}
            b_events = await b.events(b_qid)
            assert sorted((e.kind, e.recipient) for e in b_events) == [
                (EventKind.STORED, BOB), (EventKind.STORED, CAROL)]
            ((_s1, to_bob),) = await b.wait_mailbox(BOB, 1)
            ((_s2, to_carol),) = await b.wait_mailbox(CAROL, 1)
            assert to_bob == to_carol
            top = (parse(to_bob).get_all("Received") or [""])[0]
            assert f"id {b_qid}" in top and "for <" not in top  # no single "for" with two rcpts

    asyncio.run(scenario())


def test_null_mx_domain_bounces_at_once(tmp_path: Path, ca: trustme.CA,
                                        dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        dns_server.zone.add_null_mx("nomail.test")
        async with running_instance(tmp_path / "a", ca, domain="a.test", hostname="mail.a.test",
                                    accounts={ALICE: "alice-secret"},
                                    nameservers=[dns_server.address]) as a:
            target = "someone@nomail.test"
            result = await submit(a, ALICE, ALICE, [target], simple_message(ALICE, target, "x"))
            events = [e for e in await a.wait_events(result.queue_id, OUTCOMES)
                      if e.kind is not EventKind.SUPPRESSED]  # (the address is suppressed too)
            assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.BOUNCED]
            assert events[-1].detail.startswith("556 5.1.10 ")  # RFC 7505 4.2

            ((_stored, content),) = await a.wait_mailbox(ALICE, 1)
            (status,) = parse_dsn(content).per_recipient
            assert dsn_field(status, "Action") == "failed"
            assert dsn_field(status, "Status") == "5.1.10"
            assert dsn_field(status, "Remote-MTA") == ""  # nobody was contacted
            # Our own reason, not a remote reply: an "x-" diagnostic type (RFC 3464 2.3.6).
            assert dsn_field(status, "Diagnostic-Code").startswith("x-mailprime; 556 5.1.10")

    asyncio.run(scenario())


def test_refusing_mx_defers_with_a_retry_time(tmp_path: Path, ca: trustme.CA,
                                              dns_server: DnsTestServer) -> None:
    async def scenario(port: int) -> None:
        dns_server.zone.add_mx("down.test", 10, "mx.down.test")
        dns_server.zone.add_a("mx.down.test", "127.0.0.1")
        async with running_instance(tmp_path / "a", ca, domain="a.test", hostname="mail.a.test",
                                    accounts={ALICE: "alice-secret"},
                                    nameservers=[dns_server.address], mx_port=port,
                                    retry_first=60) as a:
            target = "someone@down.test"
            result = await submit(a, ALICE, ALICE, [target], simple_message(ALICE, target, "x"))
            events = await a.wait_events(result.queue_id, OUTCOMES)
            assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.DEFERRED]
            deferred = events[-1]
            assert deferred.detail.startswith("451 4.4.1 ")
            assert f"connect to mx.down.test[127.0.0.1]:{port}" in deferred.detail
            (rcpt,) = await a.recipients(result.queue_id)
            assert rcpt.status is RecipientStatus.PENDING and rcpt.attempts == 1
            assert rcpt.last_reply == deferred.detail
            wait = rcpt.next_attempt_at - deferred.at
            assert timedelta(seconds=59) <= wait <= timedelta(seconds=61)
            assert await a.mailbox(ALICE) == []  # no DSN for a deferral

    with refusing_port() as port:
        asyncio.run(scenario(port))


def test_expired_message_bounces_with_dsn(tmp_path: Path, ca: trustme.CA,
                                          dns_server: DnsTestServer) -> None:
    async def scenario(port: int) -> None:
        dns_server.zone.add_mx("down.test", 10, "mx.down.test")
        dns_server.zone.add_a("mx.down.test", "127.0.0.1")
        async with running_instance(tmp_path / "a", ca, domain="a.test", hostname="mail.a.test",
                                    accounts={ALICE: "alice-secret"},
                                    nameservers=[dns_server.address], mx_port=port,
                                    retry_first=1, max_queue_lifetime=2) as a:
            target = "someone@down.test"
            result = await submit(a, ALICE, ALICE, [target], simple_message(ALICE, target, "x"))
            events = await a.wait_events(result.queue_id, FINAL)
            kinds = [e.kind for e in events]
            assert kinds[0] is EventKind.QUEUED and kinds[-1] is EventKind.EXPIRED
            assert set(kinds[1:-1]) <= {EventKind.DEFERRED}
            (rcpt,) = await a.recipients(result.queue_id)
            assert rcpt.status is RecipientStatus.EXPIRED

            ((_stored, content),) = await a.wait_mailbox(ALICE, 1)
            dsn = parse_dsn(content)
            assert dsn.message["Subject"] == "Undelivered Mail Returned to Sender"
            (status,) = dsn.per_recipient
            assert dsn_field(status, "Action") == "failed"
            assert dsn_field(status, "Status") == "5.4.1"  # the last attempt's 4.4.1, now final
            assert "connect to mx.down.test" in dsn_field(status, "Diagnostic-Code")

    with refusing_port() as port:
        asyncio.run(scenario(port))
