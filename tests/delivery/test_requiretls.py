"""REQUIRETLS and "TLS-Required: No" on routes (RFC 8689 4.2.1, 4.2.2), and the choice between
retry and return when no route met the requirement: pure, no sockets; then the SMTP transport
against real STARTTLS servers on loopback (found through the loopback DNS server): a handshake
that times out defers the message, a certificate that does not verify returns it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
import trustme

from mailprime.adapters.smtp_dialer import SmtpDialer
from mailprime.delivery.mta_sts import StsTls
from mailprime.delivery.requiretls import (
    REQUIRETLS_TLS,
    RequireTlsTally,
    denies_tls,
    refuses_requiretls,
    routes_for,
)
from mailprime.delivery.router import Route, Router
from mailprime.delivery.smtp_transport import SmtpTransport, _tls_covers
from mailprime.delivery.tls_reports import TlsFailure
from mailprime.delivery.transport import TlsRequirement, TransactionReplies
from mailprime.domain.ids import BlobId, QueueId, RecipientId
from mailprime.domain.mail import (
    DeliveryJob,
    Priority,
    QueuedMessage,
    QueueRecipient,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.net.dns import DnsResolver
from mailprime.proto.smtp.types import Reply
from mailprime.storage.recent import MemoryBlob
from tests.support.dns_server import DnsTestServer

NOW = datetime(2030, 1, 1, tzinfo=UTC)
TESTING = StsTls(verify=True, enforce=False, policy_domain="b.test")
NO_POLICY = StsTls(verify=False, enforce=False, policy_domain="b.test",
                   policy_type="no-policy-found")
ENFORCE = StsTls(verify=True, enforce=True, policy_domain="b.test")
ROUTES = (Route("mx1.b.test", "192.0.2.1", 10, tls=TESTING),
          Route("mx2.b.test", "192.0.2.2", 20, tls=NO_POLICY),
          Route("mx3.b.test", "192.0.2.3", 30),
          Route("mx4.b.test", "192.0.2.4", 40, tls=ENFORCE))


def message(**flags: bool) -> QueuedMessage:
    return QueuedMessage(QueueId("q"), "a@a.test", BlobId(1), 10, Priority.NORMAL, NOW, NOW,
                         **flags)


def test_requiretls_makes_every_route_verified_and_enforced() -> None:
    routes = routes_for(message(require_tls=True), ROUTES)
    assert [r.mx_host for r in routes] == [r.mx_host for r in ROUTES]
    assert all(r.tls is not None and r.tls.verify and r.tls.enforce for r in routes)
    assert routes[2].tls == REQUIRETLS_TLS
    # MTA-STS requirements keep their type (and policy domain): TLS reports still count them.
    assert routes[0].tls == StsTls(verify=True, enforce=True, source="requiretls",
                                   policy_domain="b.test")
    assert isinstance(routes[1].tls, StsTls) and routes[1].tls.policy_type == "no-policy-found"
    # Only a verified, enforced pooled connection may carry such a job.
    for have, ok in ((None, False), (TESTING, False), (NO_POLICY, False), (ENFORCE, True),
                     (REQUIRETLS_TLS, True)):
        assert _tls_covers(have, routes[2].tls) is ok, have


def test_requiretls_wins_over_tls_required_no() -> None:
    both = routes_for(message(require_tls=True, tls_optional=True), ROUTES)
    assert all(r.tls is not None and r.tls.enforce for r in both)


def test_tls_required_no_drops_the_policy() -> None:
    assert [r.tls for r in routes_for(message(tls_optional=True), ROUTES)] == [None] * 4
    assert routes_for(message(), ROUTES) == ROUTES


def test_refusal_is_recognised_by_its_enhanced_code() -> None:
    local = Reply(550, "REQUIRETLS support required", "5.7.30")
    assert refuses_requiretls(TransactionReplies(local, (local,), None))
    other = Reply(550, "no", "5.7.1")
    assert not refuses_requiretls(TransactionReplies(other, (other,), None))


def test_returned_only_when_every_route_failed_the_requirement() -> None:
    tally = RequireTlsTally("b.test")
    assert tally.final() is None  # nothing tried (e.g. all routes deferred by shaping)
    tally.attempt()
    tally.no_tls("mx1[192.0.2.1]:25", "certificate verify failed")
    tally.attempt()  # mx2 unreachable: it may yet meet the requirement
    assert tally.final() is None
    tally.attempt()
    tally.not_offered("mx3[192.0.2.3]:25")
    assert tally.final() is None

    tls_only = RequireTlsTally("b.test")
    tls_only.attempt()
    tls_only.no_tls("mx1[192.0.2.1]:25", "STARTTLS not offered")
    assert tls_only.final() == Reply(
        550, "Encryption needed: no verified TLS session with a mail host of b.test "
             "(mx1[192.0.2.1]:25: STARTTLS not offered) (RFC 8689 4.2.1)", "5.7.10")

    mixed = RequireTlsTally("b.test")
    mixed.attempt()
    mixed.no_tls("mx1[192.0.2.1]:25", "certificate verify failed")
    mixed.attempt()
    mixed.not_offered("mx2[192.0.2.2]:25")
    final = mixed.final()
    assert final is not None and final.enhanced == "5.7.30"
    assert final.text == ("REQUIRETLS support required: no mail host of b.test offers REQUIRETLS "
                          "over verified TLS (mx2[192.0.2.2]:25) (RFC 8689 4.2.1)")


def test_plain_requirement_is_upgraded_not_replaced() -> None:
    loose = TlsRequirement(verify=False, source="mta-sts", enforce=False)
    (route,) = routes_for(message(require_tls=True), (Route("mx", "192.0.2.9", 0, tls=loose),))
    assert route.tls == REQUIRETLS_TLS


@pytest.mark.parametrize(("failure", "lacks_tls"), [
    (TlsFailure("mx.b.test[192.0.2.1]:25: TLS required but STARTTLS not offered",
                "starttls-not-supported"), True),
    (TlsFailure("mx.b.test[192.0.2.1]:25: STARTTLS refused: 454 4.7.0 TLS not available",
                "starttls-not-supported"), True),
    (TlsFailure("mx.b.test[192.0.2.1]:25: TLS handshake failed: certificate verify failed: "
                "unable to get local issuer certificate", "certificate-not-trusted"), True),
    (TlsFailure("mx.b.test[192.0.2.1]:25: TLS handshake failed: certificate verify failed: "
                "Hostname mismatch", "certificate-host-mismatch"), True),
    # A verification failure without an RFC 8460 type of its own is still one.
    (TlsFailure("mx.b.test[192.0.2.1]:25: TLS handshake failed: certificate verify failed: "
                "certificate is not yet valid", "validation-failure"), True),
    (TlsFailure("mx.b.test[192.0.2.1]:25: TLS handshake timed out", "validation-failure"), False),
    (TlsFailure("mx.b.test[192.0.2.1]:25: TLS handshake failed: Connection reset by peer",
                "validation-failure"), False),
])
def test_only_a_verdict_on_the_host_counts_as_no_tls(failure: TlsFailure, lacks_tls: bool) -> None:
    assert denies_tls(failure) is lacks_tls


STALL = 2.0  # seconds the silent server holds a connection after STARTTLS
COMMAND_TIMEOUT = 0.3  # the client's, far below STALL


@asynccontextmanager
async def starttls_server(after_starttls: ssl.SSLContext | str) -> AsyncIterator[int]:
    """An SMTP server on 127.0.0.1 that offers STARTTLS and answers it 220. Then, given a
    context, it does the handshake with that certificate; "stall": it never answers the
    ClientHello (and hangs up STALL seconds later); "hang-up": it closes on the ClientHello."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 mx.b.test ESMTP\r\n")
            while line := await reader.readline():
                if line[:4].upper() in (b"EHLO", b"HELO"):
                    writer.write(b"250-mx.b.test\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif line[:8].upper() == b"STARTTLS":
                    writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                    await writer.drain()
                    if isinstance(after_starttls, ssl.SSLContext):
                        await writer.start_tls(after_starttls)  # the client refuses the certificate
                    elif after_starttls == "hang-up":
                        await reader.read(1)  # the ClientHello has come
                    else:  # the client, whose command timeout is far shorter, gives up first
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(reader.read(), STALL)
                    return
                else:
                    writer.write(b"221 2.0.0 Bye\r\n")
                    return
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def deliver_requiretls(dns: DnsTestServer, port: int) -> RecipientOutcome:
    now = datetime.now(UTC)
    msg = QueuedMessage(QueueId("q1"), "alice@a.test", BlobId(1), 20, Priority.NORMAL, now,
                        now + timedelta(days=5), require_tls=True)
    rcpt = QueueRecipient(RecipientId(1), msg.id, "bob@b.test", "b.test",
                          RecipientStatus.PENDING, 0, now)
    dialer = SmtpDialer(helo_name="mail.a.test", ssl_context=None, require_tls=False,
                        connect_timeout=5.0, command_timeout=COMMAND_TIMEOUT)
    transport = SmtpTransport(Router(DnsResolver([dns.address], timeout=2.0)), dialer, port=port)
    try:
        (outcome,) = await transport.deliver(DeliveryJob(msg, "b.test", (rcpt,)),
                                             MemoryBlob(b"Subject: s\r\n\r\nsecret\r\n"))
    finally:
        await transport.close()
    return outcome


def mx_b(dns: DnsTestServer) -> None:
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")


def test_a_tls_handshake_timeout_defers_a_requiretls_message(dns_server: DnsTestServer) -> None:
    """About 5 s: after a handshake timeout the SMTP client waits its close timeout
    (net.smtp_client CLOSE_TIMEOUT) for the half-negotiated transport to close."""
    mx_b(dns_server)

    async def scenario() -> None:
        async with starttls_server("stall") as port:
            outcome = await deliver_requiretls(dns_server, port)
        assert outcome.status is RecipientStatus.PENDING, outcome
        assert outcome.reply.startswith(f"451 4.4.1 connect to mx.b.test[127.0.0.1]:{port}: ")
        assert outcome.reply.endswith("TLS handshake timed out"), outcome.reply

    asyncio.run(scenario())


def test_a_hang_up_in_the_handshake_defers_and_a_bad_certificate_returns(
        ca: trustme.CA, dns_server: DnsTestServer) -> None:
    mx_b(dns_server)
    untrusted = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the dialer trusts the system roots only
    ca.issue_cert("mx.b.test").configure_cert(untrusted)

    async def scenario() -> None:
        async with starttls_server("hang-up") as port:
            lost = await deliver_requiretls(dns_server, port)
        assert lost.status is RecipientStatus.PENDING, lost
        assert lost.reply.startswith("451 4.4.1 connect to mx.b.test[127.0.0.1]"), lost.reply
        assert "TLS handshake failed" in lost.reply, lost.reply
        async with starttls_server(untrusted) as port:
            refused = await deliver_requiretls(dns_server, port)
        assert refused.status is RecipientStatus.BOUNCED, refused
        assert refused.reply.startswith("550 5.7.10 Encryption needed: no verified TLS session "
                                        "with a mail host of b.test"), refused.reply
        assert "certificate verify failed" in refused.reply

    asyncio.run(scenario())
