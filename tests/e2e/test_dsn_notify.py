"""RFC 3461 notifications beyond failure, end to end: real instances, the loopback DNS server,
smtplib with NOTIFY/ORCPT/RET/ENVID.

- NOTIFY=SUCCESS to a server that offers DSN (B, a mailprime): A says nothing, B reports the
  delivery into bob's mailbox with a "delivered" DSN that travels back to A;
- NOTIFY=SUCCESS to a server that does not offer DSN: A reports "relayed";
- NOTIFY=SUCCESS for a local mailbox: "delivered" at accept time, before the 250;
- NOTIFY=DELAY to an MX that refuses: one "delayed" DSN, not repeated on the retries.

Each test runs its own event loop; smtplib runs in a thread so the instances keep serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from mailprime.config import Settings
from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import Event, EventKind
from mailprime.message.headers import format_date
from mailprime.net.smtp_server import serve_smtp
from mailprime.proto.smtp.types import ServerCapabilities, ServerLimits
from mailprime.runtime import start_server
from mailprime.services.inbound import InboundConfig, InboundService
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Dsn,
    Instance,
    Provisioning,
    dsn_field,
    make_settings,
    parse,
    parse_dsn,
    provision,
    refusing_port,
    running_instance,
    simple_message,
    smtp_client,
    wait_for,
)

pytestmark = pytest.mark.slow  # starts servers

ALICE = "alice@a.test"
CAROL = "carol@a.test"
DAVE = "dave@a.test"
BOB = "bob@b.test"
OUTCOMES = (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.EXPIRED, EventKind.DEFERRED)
A_ACCOUNTS = {ALICE: "alice-secret", CAROL: "carol-secret", DAVE: "dave-secret"}


@asynccontextmanager
async def started(settings: Settings, ca: trustme.CA, what: Provisioning) -> AsyncIterator[Instance]:
    await provision(settings, what)
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, what.accounts, what.domain)
    finally:
        await server.stop(grace=2.0)


@asynccontextmanager
async def mutual_pair(tmp: Path, ca: trustme.CA,
                      dns: DnsTestServer) -> AsyncIterator[tuple[Instance, Instance]]:
    """A (a.test) and B (b.test) that both route by the test DNS, each to the other's MX port,
    so that a DSN B sends travels back to A."""
    dns.zone.add_mx("a.test", 10, "mail.a.test")
    dns.zone.add_a("mail.a.test", "127.0.0.1")
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")
    a_settings = make_settings(tmp / "a", ca, hostname="mail.a.test", nameservers=[dns.address])
    b_settings = make_settings(tmp / "b", ca, hostname="mx.b.test", nameservers=[dns.address])
    # The listener ports are chosen in make_settings, before anything starts.
    a_settings.delivery.mx_port = _port(b_settings, "mx")
    b_settings.delivery.mx_port = _port(a_settings, "mx")
    async with (
        started(b_settings, ca, Provisioning("b.test", {BOB: "bob-secret"})) as b,
        started(a_settings, ca, Provisioning("a.test", A_ACCOUNTS)) as a,
    ):
        yield a, b


def _port(settings: Settings, listener: str) -> int:
    return next(lst.port for lst in settings.listeners if lst.name == listener)


def send(inst: Instance, user: str, rcpts: Sequence[tuple[str, Sequence[str]]], message: bytes,
         *, sender: str | None = None, mail_options: Sequence[str] = (),
         listener: str = "submission") -> str:
    """Blocking (run it in a thread): one message with ESMTP options per recipient; returns the
    queue id of the 250 reply."""
    with smtp_client(inst, listener, user=user if listener == "submission" else None) as client:
        code, reply = client.mail(user if sender is None else sender, list(mail_options))
        assert code == 250, reply
        for address, options in rcpts:
            code, reply = client.rcpt(address, list(options))
            assert code == 250, reply
        code, reply = client.data(message)
        assert code == 250, reply
    return reply.decode().split("queued as ", 1)[1].split()[0]


async def submit(inst: Instance, rcpts: Sequence[tuple[str, Sequence[str]]], subject: str,
                 **kwargs: object) -> str:
    message = simple_message(ALICE, rcpts[0][0], subject)
    return await asyncio.to_thread(send, inst, ALICE, rcpts, message, **kwargs)  # type: ignore[arg-type]


async def worker_idle(inst: Instance) -> None:
    """Waits until no delivery task is running: a job's DSNs are sent inside its task, so after
    its outcome was recorded, an idle worker has sent them too."""

    async def idle() -> bool | None:
        return True if inst.server.worker.in_flight == 0 else None

    await wait_for(idle, what="an idle delivery worker")


def dsn_events(events: Sequence[Event]) -> list[tuple[str | None, str]]:
    return [(e.recipient, dict(e.attrs).get("action", "")) for e in events
            if e.kind is EventKind.DSN_SENT]


async def only_report(inst: Instance, address: str) -> Dsn:
    ((_stored, content),) = await inst.wait_mailbox(address, 1)
    return parse_dsn(content)


def test_success_through_a_dsn_server_is_reported_by_that_server(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with mutual_pair(tmp_path, ca, dns_server) as (a, b):
            qid = await submit(a, [(BOB, ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@b.test"])],
                               "Tell me when it arrives",
                               mail_options=["RET=HDRS", "ENVID=order-17"])
            events = await a.wait_events(qid, OUTCOMES)
            assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.DELIVERED]
            # B offered DSN, so A passed NOTIFY on (RFC 3461 5.2.1) and reports nothing itself;
            # B delivered into bob's mailbox and answers with "delivered" (5.2.3).
            report = await only_report(a, ALICE)
            assert report.message["From"].addresses[0].domain == "mx.b.test"
            assert dsn_field(report.per_message, "Reporting-MTA") == "dns; mx.b.test"
            assert dsn_field(report.per_message, "Original-Envelope-Id") == "order-17"
            (block,) = report.per_recipient
            assert dsn_field(block, "Action") == "delivered"
            assert dsn_field(block, "Status") == "2.0.0"
            assert dsn_field(block, "Final-Recipient") == f"rfc822; {BOB}"
            assert dsn_field(block, "Original-Recipient") == f"rfc822; {BOB}"
            assert "Subject: Tell me when it arrives" in report.parts[2].get_content()
            await b.wait_mailbox(BOB, 1)

            await worker_idle(a)
            assert len(await a.mailbox(ALICE)) == 1  # no "relayed" from A
            assert dsn_events(await a.events(qid)) == []
            b_qid = events[-1].detail.split("queued as ", 1)[1].split()[0]
            assert dsn_events(await b.events(b_qid)) == [(BOB, "delivered")]

    asyncio.run(scenario())


def test_success_through_a_server_without_dsn_is_reported_as_relayed(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        dns_server.zone.add_mx("b.test", 10, "mx.b.test")
        dns_server.zone.add_a("mx.b.test", "127.0.0.1")
        async with running_instance(tmp_path / "b", ca, domain="b.test", hostname="mx.b.test",
                                    accounts={BOB: "bob-secret"}) as b:
            # B's store behind a listener that does not offer DSN (an older MTA).
            plain = await serve_smtp(
                InboundService(b.server.store, InboundConfig(hostname="mx.b.test", role="mx"),
                               SystemClock()),
                name="no-dsn", host="127.0.0.1", port=0, tls_mode="none", ssl_context=None,
                capabilities=ServerCapabilities(hostname="mx.b.test", dsn=False),
                limits=ServerLimits(), idle_timeout=10.0, data_timeout=10.0,
                max_connections_per_ip=10, allow_plaintext_auth=False, reuse_port=False)
            try:
                async with running_instance(tmp_path / "a", ca, domain="a.test",
                                            hostname="mail.a.test", accounts=A_ACCOUNTS,
                                            nameservers=[dns_server.address],
                                            mx_port=plain.port) as a:
                    qid = await submit(a, [(BOB, ["NOTIFY=SUCCESS"]), (f"x{BOB}", ["NOTIFY=NEVER"])],
                                       "Passed on", mail_options=["RET=FULL", "ENVID=e-9"])
                    await a.wait_events(qid, OUTCOMES, count=2)
                    report = await only_report(a, ALICE)
                    assert report.message["Subject"] == "Successful Mail Delivery Report"
                    assert dsn_field(report.per_message, "Reporting-MTA") == "dns; mail.a.test"
                    assert dsn_field(report.per_message, "Original-Envelope-Id") == "e-9"
                    (block,) = report.per_recipient  # the NOTIFY=NEVER one is not reported
                    assert dsn_field(block, "Action") == "relayed"
                    assert dsn_field(block, "Status") == "2.0.0"
                    assert dsn_field(block, "Remote-MTA") == "dns; mx.b.test"
                    assert dsn_field(block, "Diagnostic-Code").startswith("smtp; 250 2.0.0 ")
                    # Not a failure: headers only, whatever RET asked (RFC 3461 4.3).
                    assert report.parts[2].get_content_type() == "text/rfc822-headers"
                    await worker_idle(a)
                    assert dsn_events(await a.events(qid)) == [(BOB, "relayed")]
                    ((_s, content),) = await b.wait_mailbox(BOB, 1)
                    assert parse(content)["Subject"] == "Passed on"
            finally:
                await plain.drain(2.0)

    asyncio.run(scenario())


def test_local_delivery_with_notify_success_is_reported_at_accept(
        tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with running_instance(tmp_path / "a", ca, domain="a.test", hostname="mail.a.test",
                                    accounts=A_ACCOUNTS) as a:
            qid = await submit(a, [(CAROL, ["NOTIFY=SUCCESS", "ORCPT=rfc822;carol+2Bx@a.test"]),
                                   (DAVE, [])],
                               "Local news", mail_options=["RET=FULL", "ENVID=local-1"])
            # The report was queued before the 250: it is in alice's INBOX already.
            ((_stored, content),) = await a.mailbox(ALICE)
            report = parse_dsn(content)
            assert dsn_field(report.per_message, "Reporting-MTA") == "dns; mail.a.test"
            assert dsn_field(report.per_message, "Original-Envelope-Id") == "local-1"
            (block,) = report.per_recipient  # dave gave no NOTIFY: not reported
            assert dsn_field(block, "Action") == "delivered"
            assert dsn_field(block, "Status") == "2.0.0"
            assert dsn_field(block, "Final-Recipient") == f"rfc822; {CAROL}"
            assert dsn_field(block, "Original-Recipient") == "rfc822; carol+x@a.test"
            assert report.parts[2].get_content_type() == "text/rfc822-headers"
            assert "Subject: Local news" in report.parts[2].get_content()
            assert len(await a.mailbox(CAROL)) == len(await a.mailbox(DAVE)) == 1
            assert dsn_events(await a.events(qid)) == [(CAROL, "delivered")]

            # Never a report about a message from the null sender (RFC 3461 6.2).
            bounce = simple_message("MAILER-DAEMON@b.test", CAROL, "A bounce")
            null_qid = await asyncio.to_thread(send, a, ALICE, [(CAROL, ["NOTIFY=SUCCESS"])],
                                               bounce, sender="", listener="mx")
            assert len(await a.mailbox(CAROL)) == 2
            assert len(await a.mailbox(ALICE)) == 1
            assert dsn_events(await a.events(null_qid)) == []

    asyncio.run(scenario())


def test_delay_is_reported_once_not_on_every_retry(tmp_path: Path, ca: trustme.CA,
                                                  dns_server: DnsTestServer) -> None:
    async def scenario(port: int) -> None:
        dns_server.zone.add_mx("down.test", 10, "mx.down.test")
        dns_server.zone.add_a("mx.down.test", "127.0.0.1")
        settings = make_settings(tmp_path / "a", ca, hostname="mail.a.test",
                                 nameservers=[dns_server.address], mx_port=port, retry_first=1)
        settings.delivery.delay_warning = 0  # at the first deferral, for NOTIFY=DELAY only
        async with started(settings, ca, Provisioning("a.test", A_ACCOUNTS)) as a:
            slow, quiet = "slow@down.test", "quiet@down.test"
            qid = await submit(a, [(slow, ["NOTIFY=DELAY,FAILURE"]), (quiet, [])], "Patience",
                               mail_options=["ENVID=wait-3"])
            # Three attempts for both recipients: the warning may go out on the first only.
            await a.wait_events(qid, [EventKind.DEFERRED], count=6)
            await worker_idle(a)
            report = await only_report(a, ALICE)
            assert report.message["Subject"] == "Delayed Mail (still being retried)"
            assert dsn_field(report.per_message, "Original-Envelope-Id") == "wait-3"
            (block,) = report.per_recipient  # quiet had no NOTIFY and delay_warning is 0
            assert dsn_field(block, "Final-Recipient") == f"rfc822; {slow}"
            assert dsn_field(block, "Action") == "delayed"
            assert dsn_field(block, "Status") == "4.4.1"
            message = await a.server.store.get_message(QueueId(qid))
            assert message is not None  # the report names the queue lifetime's end
            assert dsn_field(block, "Will-Retry-Until") == format_date(message.expires_at)
            assert dsn_field(block, "Diagnostic-Code").startswith("x-mailprime; 451 4.4.1 ")
            assert dsn_events(await a.events(qid)) == [(slow, "delayed")]

    with refusing_port() as port:
        asyncio.run(scenario(port))
