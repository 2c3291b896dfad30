"""REQUIRETLS and "TLS-Required: No" (RFC 8689) end to end: real mailprime instances, trustme
certificates that each side verifies against the MX name, and the loopback DNS server.

A (a.test) takes alice's submission and relays to b.test, whose MX mx.b.test is B on 127.0.0.1;
B's certificate names mx.b.test. A trusts the test CA through `[mta_sts] ca_file`, the roots it
verifies MX certificates with. The MTA-STS cases reuse the setup of test_mta_sts_delivery.py."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from mailprime.config import MtaStsSettings
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind, QueuedMessage, QueueRecipient
from mailprime.runtime import start_server
from tests.e2e.test_mta_sts_delivery import setup
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    Provisioning,
    SmtpResult,
    dsn_field,
    make_settings,
    parse,
    parse_dsn,
    provision,
    simple_message,
    smtp_client,
    wait_for,
)

pytestmark = pytest.mark.slow  # starts servers

ALICE = "alice@a.test"
BOB = "bob@b.test"
FORWARD = "fwd@b.test"  # an alias on B to a remote address: B queues its copy for relay
OUTCOMES = (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.EXPIRED, EventKind.DEFERRED)


@asynccontextmanager
async def instance(tmp: Path, ca: trustme.CA, *, domain: str, hostname: str,
                   accounts: dict[str, str], requiretls: bool = True,
                   aliases: tuple[tuple[str, str], ...] = (), nameservers: list[str] | None = None,
                   mx_port: int = 25) -> AsyncIterator[Instance]:
    settings = make_settings(tmp, ca, hostname=hostname, nameservers=nameservers, mx_port=mx_port)
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings.mta_sts = MtaStsSettings(ca_file=str(ca_file), requiretls=requiretls,
                                      fetch_timeout=5.0, recheck_seconds=0)
    await provision(settings, Provisioning(domain, accounts, aliases))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, accounts, domain)
    finally:
        await server.stop(grace=2.0)


@asynccontextmanager
async def a_and_b(tmp: Path, ca: trustme.CA, dns: DnsTestServer, *,
                  b_requiretls: bool = True) -> AsyncIterator[tuple[Instance, Instance]]:
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")
    async with (
        # B forwards fwd@b.test to c.test, which has no DNS: its copy bounces there, which is
        # not what these tests look at (B's queue row is).
        instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                 accounts={BOB: "bob-secret"}, requiretls=b_requiretls,
                 aliases=((FORWARD, "carol@c.test"),), nameservers=[dns.address]) as b,
        instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                 accounts={ALICE: "alice-secret"}, nameservers=[dns.address],
                 mx_port=b.port("mx")) as a,
    ):
        yield a, b


async def _null_sender_rows(
        inst: Instance) -> list[tuple[QueuedMessage, Sequence[QueueRecipient]]] | None:
    rows = [row for row in await inst.server.store.list_queue() if row[0].sender == ""]
    return rows or None


def send(inst: Instance, recipients: Sequence[str], message: bytes,
         options: Sequence[str] = ("REQUIRETLS",)) -> SmtpResult:
    """Blocking: alice submits over STARTTLS with AUTH and these MAIL parameters."""
    with smtp_client(inst, "submission", user=ALICE) as client:
        assert client.has_extn("requiretls")  # offered after STARTTLS
        code, resp = client.mail(ALICE, list(options))
        assert code == 250, resp
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        code, resp = client.data(message)
        assert code == 250, resp
    return SmtpResult(code, resp.decode(), {})


async def submit_requiretls(inst: Instance, recipients: Sequence[str], subject: str,
                            options: Sequence[str] = ("REQUIRETLS",)) -> str:
    message = simple_message(ALICE, recipients[0], subject)
    result = await asyncio.to_thread(send, inst, recipients, message, options)
    return result.queue_id


def test_relayed_with_requiretls_over_verified_tls(tmp_path: Path, ca: trustme.CA,
                                                  dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with a_and_b(tmp_path, ca, dns_server) as (a, b):
            qid = await submit_requiretls(a, [BOB, FORWARD], "secret plans")
            queued = await a.server.store.get_message(QueueId(qid))
            assert queued is not None and queued.require_tls and not queued.tls_optional
            events = await a.wait_events(qid, OUTCOMES, count=2)
            outcomes = [e for e in events if e.kind in OUTCOMES]
            assert [e.kind for e in outcomes] == [EventKind.DELIVERED] * 2, outcomes
            # B: received over TLS, and its own queue row (the forwarded copy) is tagged, so it
            # would relay it under the same requirement (RFC 8689 4.1).
            ((_, content),) = await b.wait_mailbox(BOB, 1)
            received = str(parse(content)["Received"])
            assert "by mx.b.test" in received and "with ESMTPS" in received, received
            (forwarded,) = [e for e in outcomes if e.recipient == FORWARD]
            b_qid = forwarded.detail.split("queued as ", 1)[1].split()[0]
            b_msg = await b.server.store.get_message(QueueId(b_qid))
            assert b_msg is not None and b_msg.require_tls
            # c.test does not exist: B's DSN goes back from <>, without REQUIRETLS (RFC 8689 5).
            (dsn,) = [m for m, _ in await wait_for(lambda: _null_sender_rows(b))]
            assert not dsn.require_tls

    asyncio.run(scenario())


def test_next_hop_without_requiretls_bounces_5_7_30(tmp_path: Path, ca: trustme.CA,
                                                    dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with a_and_b(tmp_path, ca, dns_server, b_requiretls=False) as (a, b):
            qid = await submit_requiretls(a, [BOB], "not without REQUIRETLS",
                                          options=("REQUIRETLS", "RET=FULL"))
            events = await a.wait_events(qid, OUTCOMES)
            (bounced,) = [e for e in events if e.kind in OUTCOMES]
            assert bounced.kind is EventKind.BOUNCED
            assert bounced.detail.startswith("550 5.7.30 REQUIRETLS support required: no mail "
                                             "host of b.test offers REQUIRETLS"), bounced.detail
            assert await b.mailbox(BOB) == []  # never sent: the client refused before MAIL
            ((_, content),) = await a.wait_mailbox(ALICE, 1)
            dsn = parse_dsn(content)
            (rcpt,) = dsn.per_recipient
            assert dsn_field(rcpt, "Status") == "5.7.30"
            assert dsn_field(rcpt, "Action") == "failed"
            # RFC 8689 5: returned as if RET=HDRS, whatever RET the sender gave.
            returned = dsn.parts[-1]
            assert returned.get_content_type() == "text/rfc822-headers"
            assert b"Hello." not in content
            dsn_row = [m for m, _ in await a.server.store.list_queue() if m.sender == ""]
            assert dsn_row == []  # the DSN went to a local mailbox: nothing queued with REQUIRETLS

    asyncio.run(scenario())


def test_an_unreachable_mx_keeps_the_message_queued(tmp_path: Path, ca: trustme.CA,
                                                    dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        # mx0.b.test (preferred) is 127.0.0.3, where nothing listens: it proves nothing about
        # TLS, so the refusal by B alone is not final (RFC 8689 4.2.1 asks every MX).
        dns_server.zone.add_mx("b.test", 5, "mx0.b.test")
        dns_server.zone.add_a("mx0.b.test", "127.0.0.3")
        async with a_and_b(tmp_path, ca, dns_server, b_requiretls=False) as (a, b):
            qid = await submit_requiretls(a, [BOB], "wait for a path")
            events = await a.wait_events(qid, OUTCOMES)
            (deferred,) = [e for e in events if e.kind in OUTCOMES]
            assert deferred.kind is EventKind.DEFERRED
            assert deferred.detail.startswith("451 4.4.1 mx.b.test[127.0.0.1]:")
            assert deferred.detail.endswith(" does not offer REQUIRETLS"), deferred.detail
            assert await b.mailbox(BOB) == []

    asyncio.run(scenario())


def test_requiretls_only_after_starttls(tmp_path: Path, ca: trustme.CA) -> None:
    def plaintext_then_tls(inst: Instance) -> None:
        with smtp_client(inst, "mx", tls=False) as client:
            assert not client.has_extn("requiretls")
            code, resp = client.mail(ALICE, ["REQUIRETLS"])
            assert (code, resp) == (530, b"5.7.10 Must issue a STARTTLS command first: "
                                         b"REQUIRETLS needs a TLS session (RFC 8689)")
            client.starttls(context=inst.client_tls())
            client.ehlo("client.test")
            assert client.has_extn("requiretls")
            assert client.mail(ALICE, ["REQUIRETLS"])[0] == 250
        with smtp_client(inst, "submissions") as client:  # implicit TLS
            assert client.has_extn("requiretls")

    async def scenario() -> None:
        async with instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                            accounts={ALICE: "alice-secret"}) as a:
            await asyncio.to_thread(plaintext_then_tls, a)

    asyncio.run(scenario())


def test_requiretls_is_not_offered_when_switched_off(tmp_path: Path, ca: trustme.CA) -> None:
    def tls_session(inst: Instance) -> None:
        with smtp_client(inst, "mx") as client:
            assert not client.has_extn("requiretls")
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail(ALICE, [BOB], b"x", mail_options=["REQUIRETLS"])
            assert refused.value.smtp_code == 555

    async def scenario() -> None:
        async with instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                            accounts={ALICE: "alice-secret"}, requiretls=False) as a:
            await asyncio.to_thread(tls_session, a)

    asyncio.run(scenario())


def test_tls_required_no_ignores_an_enforced_policy(tmp_path: Path, ca: trustme.CA,
                                                    dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        # Enforce mode, and the MX's certificate does not name wrong.b.test: without the header
        # the message is deferred (test_mta_sts_delivery).
        async with setup(tmp_path, ca, dns_server, mode="enforce", mx="wrong.b.test") as s:
            message = simple_message(ALICE, BOB, "deliver anyway",
                                     extra_headers="TLS-Required: No\r\n")
            result = await asyncio.to_thread(send, s.a, [BOB], message, ())
            events = await s.a.wait_events(result.queue_id, OUTCOMES)
            outcome = events[-1]
            assert outcome.kind is EventKind.DELIVERED, outcome.detail
            queued = await s.a.server.store.get_message(QueueId(result.queue_id))
            assert queued is not None and queued.tls_optional and not queued.require_tls
            ((_, content),) = await s.b.wait_mailbox(BOB, 1)
            assert parse(content)["TLS-Required"] == "No"  # passed on (RFC 8689 4.2.2)

    asyncio.run(scenario())


def test_requiretls_wins_over_tls_required_no_and_a_testing_policy(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        # Testing mode alone would deliver over the unverified certificate; REQUIRETLS makes the
        # verification binding, and the header field is ignored beside it (RFC 8689 4.1).
        async with setup(tmp_path, ca, dns_server, mode="testing", mx="wrong.b.test") as s:
            message = simple_message(ALICE, BOB, "verified or nothing",
                                     extra_headers="TLS-Required: No\r\n")
            result = await asyncio.to_thread(send, s.a, [BOB], message)
            events = await s.a.wait_events(result.queue_id, OUTCOMES)
            outcome = events[-1]
            assert outcome.kind is EventKind.BOUNCED, outcome.detail
            assert outcome.detail.startswith(
                "550 5.7.10 Encryption needed: no verified TLS session with a mail host of "
                "b.test (wrong.b.test[127.0.0.1]:"), outcome.detail
            assert "certificate verify failed" in outcome.detail
            queued = await s.a.server.store.get_message(QueueId(result.queue_id))
            assert queued is not None and queued.require_tls and not queued.tls_optional
            assert await s.b.mailbox(BOB) == []

    asyncio.run(scenario())
