"""The asyncio SMTP server driver over real loopback sockets, driven by Python's smtplib and by
raw sockets: EHLO, STARTTLS and implicit TLS with a trustme CA, AUTH PLAIN/LOGIN, pipelining, BDAT,
SMTP smuggling, timeouts, the per-IP cap and draining. The handler below is a stand-in for the
inbound service: it accepts by simple rules and keeps messages in a list."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailprime.domain.errors import InvalidAddress
from mailprime.net.smtp_handler import AuthOutcome, PeerInfo
from mailprime.net.smtp_server import SmtpListener, serve_smtp
from mailprime.net.tls import client_context, server_context
from mailprime.proto.smtp.types import MailParams, RcptParams, Reply, ServerCapabilities, ServerLimits

HOST = "mx.test"
WAIT = 10.0  # upper bound of any wait in these tests; none is expected to come close


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# The stand-in handler ----------------------------------------------------------------------------


@dataclass
class Message:
    sender: str
    recipients: list[str]
    body: bytes
    tls: bool
    identity: str


@dataclass
class Handler:
    messages: list[Message] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    peers: list[PeerInfo] = field(default_factory=list)
    closed: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    connect_reply: Reply | None = None

    def new_session(self, peer: PeerInfo, tls: bool) -> Session:
        self.peers.append(peer)
        return Session(self, tls)

    async def wait_closed(self, n: int = 1) -> None:
        async with asyncio.timeout(WAIT):
            for _ in range(n):
                await self.closed.get()


@dataclass
class Session:
    handler: Handler
    tls: bool
    identity: str = ""
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    async def on_connect(self) -> Reply | None:
        return self.handler.connect_reply

    async def on_helo(self, name: str, extended: bool) -> Reply | None:
        return None

    async def on_tls(self) -> None:
        self.tls = True

    async def on_auth(self, mechanism: str, authzid: str, authcid: str, password: str) -> AuthOutcome:
        if authcid == "alice" and password == "secret":
            self.identity = authcid
            return AuthOutcome(ok=True, identity=authcid)
        return AuthOutcome(ok=False)

    async def on_mail(self, sender: str, params: MailParams) -> Reply:
        if sender.startswith("invalid"):
            raise InvalidAddress("sender rejected by the domain layer")
        self.sender = sender
        return Reply(250, "Ok", "2.1.0")

    async def on_rcpt(self, recipient: str, params: RcptParams) -> Reply:
        if recipient.startswith("boom"):
            raise RuntimeError("a bug in the service")
        if recipient.startswith("reject"):
            return Reply(550, "No such user", "5.1.1")
        self.recipients.append(recipient)
        return Reply(250, "Ok", "2.1.5")

    async def on_data_start(self) -> Reply | None:
        return None

    async def on_data_chunk(self, chunk: bytes) -> None:
        self.body += chunk

    async def on_data_end(self) -> Reply:
        assert self.sender is not None
        self.handler.messages.append(
            Message(self.sender, list(self.recipients), bytes(self.body), self.tls, self.identity)
        )
        self.sender, self.recipients, self.body = None, [], bytearray()
        return Reply(250, "Queued", "2.0.0")

    async def on_data_abort(self, reason: str) -> None:
        self.handler.aborts.append(reason)
        self.sender, self.recipients, self.body = None, [], bytearray()

    async def on_reset(self) -> None:
        self.sender, self.recipients, self.body = None, [], bytearray()

    async def on_close(self) -> None:
        self.handler.closed.put_nowait(None)


# Fixtures ----------------------------------------------------------------------------------------


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    base: Path = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(base / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(base / "cert.pem"))
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    server = server_context(base / "cert.pem", base / "key.pem")
    return Tls(server, client_context(True, str(base / "ca.pem")))


@asynccontextmanager
async def listening(handler: Handler, **kw: Any) -> AsyncIterator[SmtpListener]:
    options: dict[str, Any] = {
        "name": "mx",
        "host": "127.0.0.1",
        "port": 0,
        "tls_mode": "none",
        "ssl_context": None,
        "capabilities": ServerCapabilities(HOST, starttls=True, auth_mechanisms=("PLAIN", "LOGIN")),
        "limits": ServerLimits(max_message_size=100_000),
        "idle_timeout": WAIT,
        "data_timeout": WAIT,
        "max_connections_per_ip": 20,
        "allow_plaintext_auth": False,
        "reuse_port": False,
    }
    options.update(kw)
    listener = await serve_smtp(handler, **options)
    try:
        yield listener
    finally:
        await listener.drain(1.0)


async def in_thread(fn: Callable[[], Any]) -> Any:
    async with asyncio.timeout(WAIT):
        return await asyncio.to_thread(fn)


class Raw:
    """A raw client over asyncio streams, for what smtplib will not send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, ssl_ctx: ssl.SSLContext | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> bytes:
        """One whole (possibly multi-line) reply."""
        out = b""
        async with asyncio.timeout(WAIT):
            while True:
                line = await self.reader.readline()
                out += line
                if not line or line[3:4] == b" ":
                    return out

    async def replies(self, n: int) -> list[bytes]:
        return [await self.reply() for _ in range(n)]

    async def eof(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


# smtplib -----------------------------------------------------------------------------------------

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def test_ehlo_and_a_message_with_smtplib() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, ssl_context=None, tls_mode="none") as listener:

            def client() -> dict[str, str]:
                with smtplib.SMTP("127.0.0.1", listener.port, timeout=WAIT) as smtp:
                    code, _ = smtp.ehlo("client.test")
                    assert code == 250
                    refused = smtp.sendmail("a@b.test", ["r1@x.test", "reject@x.test", "r2@x.test"], MESSAGE)
                    assert set(refused) == {"reject@x.test"}
                    return dict(smtp.esmtp_features)

            features = await in_thread(client)
            await handler.wait_closed()
        expected = {"pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking", "dsn"}
        assert expected <= set(features)
        assert "starttls" not in features  # tls_mode "none"
        assert "auth" not in features  # no AUTH in the clear
        assert handler.messages == [Message("a@b.test", ["r1@x.test", "r2@x.test"], MESSAGE, False, "")]
        assert handler.peers[0].ip == "127.0.0.1" and handler.peers[0].listener == "mx"

    run(main())


def test_starttls_then_auth_plain_and_login(tls: Tls) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, tls_mode="starttls", ssl_context=tls.server) as listener:

            def client() -> None:
                with smtplib.SMTP("127.0.0.1", listener.port, timeout=WAIT) as smtp:
                    smtp.ehlo("client.test")
                    assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
                    with pytest.raises(smtplib.SMTPNotSupportedError):
                        smtp.login("alice", "secret")
                    smtp.starttls(context=tls.client)
                    smtp.ehlo("client.test")
                    assert not smtp.has_extn("starttls")
                    assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
                    with pytest.raises(smtplib.SMTPAuthenticationError) as bad:
                        smtp.login("alice", "wrong")
                    assert bad.value.smtp_code == 535
                    smtp.login("alice", "secret")
                    smtp.sendmail("alice@b.test", ["r@x.test"], MESSAGE)
                with smtplib.SMTP("127.0.0.1", listener.port, timeout=WAIT) as smtp:
                    smtp.starttls(context=tls.client)
                    smtp.ehlo("client.test")
                    smtp.user, smtp.password = "alice", "secret"  # what auth_login reads
                    code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
                    assert code == 235

            await in_thread(client)
            await handler.wait_closed(2)
        assert handler.messages == [Message("alice@b.test", ["r@x.test"], MESSAGE, True, "alice")]

    run(main())


def test_implicit_tls(tls: Tls) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, tls_mode="implicit", ssl_context=tls.server) as listener:

            def client() -> None:
                with smtplib.SMTP_SSL("127.0.0.1", listener.port, context=tls.client, timeout=WAIT) as smtp:
                    smtp.ehlo("client.test")
                    assert not smtp.has_extn("starttls") and smtp.has_extn("auth")
                    smtp.login("alice", "secret")
                    smtp.sendmail("alice@b.test", ["r@x.test"], MESSAGE)

            await in_thread(client)
            await handler.wait_closed()
            # an unverifying client context (opportunistic TLS) connects too, TLS 1.2 at least
            raw = await Raw.connect(listener.port, client_context(verify=False))
            assert (await raw.reply()).startswith(b"220 ")
            ssl_object = raw.writer.get_extra_info("ssl_object")
            assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            await raw.close()
            await handler.wait_closed()
        assert handler.messages[0].tls and handler.messages[0].identity == "alice"

    run(main())


def test_plaintext_auth_only_when_allowed_on_loopback() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, allow_plaintext_auth=True) as listener:

            def client() -> None:
                with smtplib.SMTP("127.0.0.1", listener.port, timeout=WAIT) as smtp:
                    smtp.ehlo("client.test")
                    smtp.login("alice", "secret")

            await in_thread(client)
            await handler.wait_closed()

    run(main())


# Raw sockets -------------------------------------------------------------------------------------

ENVELOPE = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<r@x.test>\r\n"
QUEUED = b"250 2.0.0 Queued\r\n"
BYE = b"221 2.0.0 mx.test closing connection\r\n"


async def greeted(port: int) -> Raw:
    raw = await Raw.connect(port)
    assert (await raw.reply()).startswith(b"220 mx.test ESMTP")
    await raw.send(b"EHLO client.test\r\n")
    assert (await raw.reply()).startswith(b"250-mx.test\r\n")
    return raw


def test_pipelined_commands_are_answered_in_order() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await greeted(listener.port)
            await raw.send(
                b"MAIL FROM:<a@b.test>\r\nRCPT TO:<r1@x.test>\r\nRCPT TO:<reject@x.test>\r\n"
                b"RCPT TO:<r2@x.test>\r\nDATA\r\n"
            )
            assert await raw.replies(5) == [
                b"250 2.1.0 Ok\r\n",
                b"250 2.1.5 Ok\r\n",
                b"550 5.1.1 No such user\r\n",
                b"250 2.1.5 Ok\r\n",
                b"354 End data with <CR><LF>.<CR><LF>\r\n",
            ]
            await raw.send(b"hello\r\n.\r\nQUIT\r\n")
            assert await raw.replies(2) == [QUEUED, BYE]
            assert await raw.eof() == b""
            await raw.close()
            await handler.wait_closed()
        assert handler.messages[0].recipients == ["r1@x.test", "r2@x.test"]

    run(main())


def test_bdat_over_a_raw_socket() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await greeted(listener.port)
            payload = b"binary\r\n.\r\nQUIT\r\n\0\xff"
            await raw.send(ENVELOPE + b"BDAT %d\r\n" % len(payload) + payload + b"BDAT 0 LAST\r\nQUIT\r\n")
            assert await raw.replies(5) == [
                b"250 2.1.0 Ok\r\n",
                b"250 2.1.5 Ok\r\n",
                b"250 2.0.0 %d octets received\r\n" % len(payload),
                b"250 2.0.0 Queued\r\n",
                b"221 2.0.0 mx.test closing connection\r\n",
            ]
            await raw.close()
            await handler.wait_closed()
        assert handler.messages[0].body == payload

    run(main())


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"], ids=repr)
def test_smtp_smuggling_is_refused(fake_end: bytes) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await greeted(listener.port)
            await raw.send(ENVELOPE + b"DATA\r\n")
            assert (await raw.replies(3))[2].startswith(b"354 ")
            await raw.send(
                b"Subject: hi\r\n\r\nhello" + fake_end
                + b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<victim@x.test>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n"
            )
            assert await raw.replies(2) == [
                b"550 5.5.2 Bare CR or LF not allowed in message, use CRLF\r\n",
                b"250 2.0.0 Ok\r\n",
            ]
            await raw.close()
            await handler.wait_closed()
        assert handler.messages == []
        assert handler.aborts == ["bare CR or LF in message"]

    run(main())


def test_starttls_drops_injected_plaintext(tls: Tls) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, tls_mode="starttls", ssl_context=tls.server) as listener:
            raw = await greeted(listener.port)
            await raw.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
            assert await raw.reply() == b"220 2.0.0 Ready to start TLS\r\n"
            async with asyncio.timeout(WAIT):
                await raw.writer.start_tls(tls.client, server_hostname="localhost")
            await raw.send(b"MAIL FROM:<a@b.test>\r\n")
            # the injected MAIL never ran: after TLS the session starts over (RFC 3207 4.2)
            assert await raw.reply() == b"503 5.5.1 Send HELO/EHLO first\r\n"
            await raw.close()
            await handler.wait_closed()

    run(main())


def test_service_errors_become_replies() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await greeted(listener.port)
            await raw.send(b"MAIL FROM:<invalid@b.test>\r\n")
            assert await raw.reply() == b"501 5.1.3 sender rejected by the domain layer\r\n"
            await raw.send(ENVELOPE + b"BDAT 4\r\nabcdRCPT TO:<boom@x.test>\r\n")
            assert await raw.replies(4) == [
                b"250 2.1.0 Ok\r\n",
                b"250 2.1.5 Ok\r\n",
                b"250 2.0.0 4 octets received\r\n",
                b"421 4.3.0 mx.test Local error, closing\r\n",
            ]
            assert await raw.eof() == b""
            await raw.close()
            await handler.wait_closed()
        assert handler.aborts == ["connection closed by the server"]

    run(main())


def test_refused_connection_greeting() -> None:
    async def main() -> None:
        handler = Handler(connect_reply=Reply(554, "mx.test No service for you", "5.7.1"))
        async with listening(handler) as listener:
            raw = await Raw.connect(listener.port)
            assert await raw.reply() == b"554 5.7.1 mx.test No service for you\r\n"
            await raw.send(b"EHLO c\r\nQUIT\r\n")
            assert await raw.replies(2) == [
                b"503 5.5.1 Bad sequence of commands\r\n",
                b"221 2.0.0 mx.test closing connection\r\n",
            ]
            await raw.close()
            await handler.wait_closed()

    run(main())


# Timeouts, limits, shutdown ----------------------------------------------------------------------


def test_idle_timeout_sends_421() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, idle_timeout=0.2) as listener:
            raw = await greeted(listener.port)
            assert await raw.reply() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
            assert await raw.eof() == b""
            await raw.close()
            await handler.wait_closed()

    run(main())


def test_data_timeout_aborts_the_message() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, data_timeout=0.2) as listener:
            raw = await greeted(listener.port)
            await raw.send(ENVELOPE + b"DATA\r\n")
            await raw.replies(3)
            await raw.send(b"Subject: half a message\r\n")
            assert await raw.reply() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
            await raw.close()
            await handler.wait_closed()
        assert handler.aborts == ["connection closed by the server"]

    run(main())


def test_eof_mid_data_aborts() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await greeted(listener.port)
            await raw.send(ENVELOPE + b"DATA\r\n")
            await raw.replies(3)
            await raw.send(b"Subject: cut short\r\n")
            await raw.close()
            await handler.wait_closed()
        assert handler.aborts == ["connection lost"]
        assert handler.messages == []

    run(main())


def test_per_ip_connection_cap() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, max_connections_per_ip=2) as listener:
            first, second = await greeted(listener.port), await greeted(listener.port)
            third = await Raw.connect(listener.port)
            assert await third.reply() == (
                b"421 4.7.0 Too many connections from your address, try again later\r\n"
            )
            assert await third.eof() == b""
            await third.close()
            await first.send(b"QUIT\r\n")
            await first.reply()
            await first.close()
            await handler.wait_closed()
            fourth = await greeted(listener.port)  # a slot is free again
            for raw in (second, fourth):
                await raw.close()
            await handler.wait_closed(2)

    run(main())


def test_drain_ends_idle_sessions_with_421_and_stops_accepting() -> None:
    async def main() -> None:
        handler = Handler()
        listener = await serve_smtp(
            handler, name="mx", host="127.0.0.1", port=0, tls_mode="none", ssl_context=None,
            capabilities=ServerCapabilities(HOST), limits=ServerLimits(), idle_timeout=WAIT,
            data_timeout=WAIT, max_connections_per_ip=5, allow_plaintext_auth=False, reuse_port=False,
        )
        port = listener.port
        raw = await greeted(port)
        await raw.send(ENVELOPE + b"DATA\r\npart of a message\r\n")
        await raw.replies(3)
        await listener.close()
        with pytest.raises(OSError):
            await Raw.connect(port)
        await listener.drain(0.1)
        assert await raw.reply() == b"421 4.3.2 mx.test Server shutting down\r\n"
        assert await raw.eof() == b""
        await raw.close()
        assert handler.aborts == ["connection closed by the server"]
        assert listener.active_sessions == 0

    run(main())


def test_drain_waits_for_a_session_that_finishes() -> None:
    async def main() -> None:
        handler = Handler()
        listener = await serve_smtp(
            handler, name="mx", host="127.0.0.1", port=0, tls_mode="none", ssl_context=None,
            capabilities=ServerCapabilities(HOST), limits=ServerLimits(), idle_timeout=WAIT,
            data_timeout=WAIT, max_connections_per_ip=5, allow_plaintext_auth=False, reuse_port=False,
        )
        raw = await greeted(listener.port)
        drain = asyncio.create_task(listener.drain(WAIT))
        await raw.send(ENVELOPE + b"DATA\r\nhello\r\n.\r\nQUIT\r\n")
        assert (await raw.replies(5))[3:] == [QUEUED, BYE]
        async with asyncio.timeout(WAIT):
            await drain
        await raw.close()
        assert len(handler.messages) == 1

    run(main())


def test_reuse_port_lets_two_listeners_share_a_port() -> None:
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        handler = Handler()
        async with listening(handler, port=port, reuse_port=True) as one, listening(
            handler, port=port, reuse_port=True
        ) as two:
            assert one.port == two.port == port
            raw = await greeted(port)
            await raw.close()
            await handler.wait_closed()

    run(main())


def test_bad_tls_configuration_is_refused() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="needs an ssl_context"):
            await serve_smtp(
                Handler(), name="mx", host="127.0.0.1", port=0, tls_mode="implicit", ssl_context=None,
                capabilities=ServerCapabilities(HOST), limits=ServerLimits(), idle_timeout=1,
                data_timeout=1, max_connections_per_ip=1, allow_plaintext_auth=False, reuse_port=False,
            )
        with pytest.raises(ValueError, match="tls_mode"):
            await serve_smtp(
                Handler(), name="mx", host="127.0.0.1", port=0, tls_mode="sometimes", ssl_context=None,
                capabilities=ServerCapabilities(HOST), limits=ServerLimits(), idle_timeout=1,
                data_timeout=1, max_connections_per_ip=1, allow_plaintext_auth=False, reuse_port=False,
            )

    run(main())
