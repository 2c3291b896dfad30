"""The SMTP client and dialer under a TLS requirement (MTA-STS RFC 8461 4.2, REQUIRETLS RFC 8689)
against a scripted server on loopback with trustme certificates: each failure carries its RFC 8460
result type, and REQUIRETLS goes out only where offered over TLS (else 550 5.7.30, locally)."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
import trustme

from mailprime.adapters.smtp_dialer import SmtpDialer
from mailprime.delivery.tls_reports import TlsFailure
from mailprime.delivery.transport import TlsRequirement
from mailprime.net.smtp_client import SmtpClient, SmtpTlsError
from mailprime.proto.smtp.types import Reply
from tests.net.test_smtp_client_driver import ScriptedServer, rcpts, run

MX = "mx.example.test"


def server_ctx(ca: trustme.CA, name: str = MX, **kwargs: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name, **kwargs).configure_cert(ctx)  # type: ignore[arg-type]
    return ctx


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def client(**kwargs: object) -> SmtpClient:
    options: dict[str, object] = {"helo_name": "client.test", "tls": "opportunistic",
                                  "connect_timeout": 5.0, "command_timeout": 5.0}
    options.update(kwargs)
    return SmtpClient(**options)  # type: ignore[arg-type]


async def tls_kind(srv: ScriptedServer, ctx: ssl.SSLContext, name: str = MX) -> str:
    with pytest.raises(SmtpTlsError) as info:
        await client().open("127.0.0.1", srv.port, server_name=name, tls="required",
                            ssl_context=ctx)
    return info.value.kind


def test_failures_carry_their_rfc_8460_result_type(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(tls=server_ctx(ca)) as srv:
            assert await tls_kind(srv, trusting(ca), "other.example.test") == \
                "certificate-host-mismatch"
            assert await tls_kind(srv, trusting(trustme.CA())) == "certificate-not-trusted"
        past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        expired = server_ctx(ca, not_before=past - dt.timedelta(days=30), not_after=past)
        async with ScriptedServer(tls=expired) as srv:
            assert await tls_kind(srv, trusting(ca)) == "certificate-expired"
        async with ScriptedServer() as srv:  # STARTTLS not offered
            assert await tls_kind(srv, trusting(ca)) == "starttls-not-supported"
        refuse = {"STARTTLS": ["454 4.7.0 TLS not available"]}
        async with ScriptedServer(tls=server_ctx(ca), replies=refuse) as srv:
            assert await tls_kind(srv, trusting(ca)) == "starttls-not-supported"

    run(main())


def test_per_session_requirement_overrides_the_client_policy(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(tls=server_ctx(ca)) as srv:
            opportunistic = client()  # its own policy would accept any certificate
            session = await opportunistic.open("127.0.0.1", srv.port, server_name=MX,
                                               tls="required", ssl_context=trusting(ca))
            async with session:
                assert session.tls_active and not session.tls_fallback
            with pytest.raises(SmtpTlsError):  # no plaintext retry under a requirement
                await opportunistic.open("127.0.0.1", srv.port, server_name="wrong.test",
                                         tls="required", ssl_context=trusting(ca))
            assert srv.connections == 2

    run(main())


def test_dialer_raises_tls_failure_and_verifies_only_when_asked(ca: trustme.CA) -> None:
    async def main() -> None:
        dialer = SmtpDialer(helo_name="client.test", ssl_context=None, require_tls=False,
                            connect_timeout=5.0, command_timeout=5.0,
                            verify_context=trusting(ca))
        async with ScriptedServer(tls=server_ctx(ca, "wrong.example.test")) as srv:
            with pytest.raises(TlsFailure) as info:
                await dialer.connect("127.0.0.1", srv.port, server_name=MX,
                                     tls=TlsRequirement(verify=True))
            assert info.value.result_type == "certificate-host-mismatch"
            assert (info.value.transient, info.value.enhanced) == (True, "4.7.5")
            # STARTTLS required but not verified: the wrong name is accepted.
            conn = await dialer.connect("127.0.0.1", srv.port, server_name=MX,
                                        tls=TlsRequirement(verify=False))
            assert conn.tls_active
            await conn.close()
        async with ScriptedServer() as srv:
            with pytest.raises(TlsFailure) as info:
                await dialer.connect("127.0.0.1", srv.port, server_name=MX,
                                     tls=TlsRequirement(verify=False))
            assert info.value.result_type == "starttls-not-supported"
            plain = await dialer.connect("127.0.0.1", srv.port, server_name=MX)  # no requirement
            assert not plain.tls_active
            await plain.close()

    run(main())


def test_requiretls_is_passed_on_where_offered_over_tls(ca: trustme.CA) -> None:
    async def main() -> None:
        offers = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "REQUIRETLS"]
        async with ScriptedServer(tls=server_ctx(ca), keywords=offers) as srv:
            async with await client().open("127.0.0.1", srv.port, server_name=MX, tls="required",
                                           ssl_context=trusting(ca)) as session:
                result = await session.send_message("a@sender.test", rcpts("b@example.test"),
                                                    b"x", require_tls=True)
                assert result.data_reply == Reply(250, "ok", "2.0.0")
            assert "MAIL FROM:<a@sender.test> REQUIRETLS" in srv.commands

    run(main())


def test_requiretls_without_the_offer_or_without_tls_is_refused_locally(ca: trustme.CA) -> None:
    async def main() -> None:
        async with (ScriptedServer(tls=server_ctx(ca)) as srv,  # TLS, no REQUIRETLS offered
                    await client().open("127.0.0.1", srv.port, server_name=MX) as session):
            result = await session.send_message("a@sender.test", rcpts("b@example.test"),
                                                b"x", require_tls=True)
        refusal = Reply(550, "REQUIRETLS support required: the next hop does not offer it "
                             "(RFC 8689)", "5.7.30")
        assert (result.mail_reply, result.rcpt_replies, result.sent) == (refusal, (refusal,),
                                                                          False)
        assert not any(c.startswith("MAIL") for c in srv.commands)
        offers = ["PIPELINING", "REQUIRETLS"]
        async with (ScriptedServer(keywords=offers) as srv,  # offered, but in plaintext
                    await client(tls="none").open("127.0.0.1", srv.port) as session):
            result = await session.send_message("a@sender.test", rcpts("b@example.test"),
                                                b"x", require_tls=True)
        assert result.mail_reply.enhanced == "5.7.30" and not result.sent

    run(main())
