"""The asyncio SMTP client driver against Postfix's smtp-sink and a scripted asyncio server
(for STARTTLS with trustme certificates, CHUNKING and error paths). Real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailprime.net.smtp_client import (
    BDAT_CHUNK,
    DeliveryOutcome,
    RecipientSpec,
    SmtpClient,
    SmtpClientError,
    SmtpClientSession,
    SmtpConnectError,
    SmtpConnectionLost,
    SmtpProtocolError,
    SmtpReplyError,
    SmtpTimeoutError,
    SmtpTlsError,
    TransactionResult,
    classify,
    open_session,
)
from mailprime.proto.smtp.types import Reply

SMTP_SINK = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/local/sbin")
HELO = "client.test"
MESSAGE = b"Subject: test\r\n\r\n.leading dot\r\n..two dots\nbare lf line\r\n.\r\nend"
# What a server keeps of MESSAGE: dots unstuffed, every line end CRLF, a final CRLF added.
RECEIVED = b"Subject: test\r\n\r\n.leading dot\r\n..two dots\r\nbare lf line\r\n.\r\nend\r\n"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rcpts(*addresses: str) -> list[RecipientSpec]:
    return [RecipientSpec(a) for a in addresses]


# Scripted server --------------------------------------------------------------------------


@dataclass
class ScriptedServer:
    """A small SMTP server whose replies a test overrides: `replies` maps a full command line
    ("RCPT TO:<x@y>"), a verb ("MAIL") or "." (end of DATA) to replies used in turn. A reply of
    "HANG" never answers, "CLOSE" drops the connection."""

    keywords: list[str] = field(default_factory=lambda: ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"])
    tls: ssl.SSLContext | None = None
    replies: dict[str, list[str]] = field(default_factory=dict)
    greeting: str = "220 scripted.test ESMTP"
    starttls_garbage: bool = False  # say 220 to STARTTLS, then plaintext instead of a handshake
    inject_after_starttls: bytes = b""
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    bdat_sizes: list[int] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _override(self, line: str, verb: str) -> str | None:
        for key in (line, verb):
            queue = self.replies.get(key)
            if queue:
                return queue.pop(0)
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Teardown of a connection left hanging on purpose; finishing normally keeps
            # asyncio's stream callback from logging the cancellation as an error.
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False
        chunks = bytearray()
        if not self.greeting:  # a server that accepts and says nothing
            await reader.read()
            return
        writer.write(self.greeting.encode() + b"\r\n")
        for _ in range(1000):  # bounded conversation
            line = await reader.readline()
            if not line:
                return
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            self.commands.append(text)
            verb = text.split(" ")[0].upper()
            if verb in ("MAIL", "RCPT"):
                verb = text.split(":")[0].upper()
                verb = {"MAIL FROM": "MAIL", "RCPT TO": "RCPT"}.get(verb, verb)
            override = self._override(text, verb)
            if override == "HANG":
                await asyncio.Event().wait()
            if override == "CLOSE":
                return
            if verb == "EHLO" and override is None:
                offered = [*self.keywords, *(["STARTTLS"] if self.tls and not tls else [])]
                lines = ["scripted.test", *offered]
                override = "\r\n".join(
                    f"250{' ' if i == len(lines) - 1 else '-'}{kw}" for i, kw in enumerate(lines)
                )
            elif verb == "STARTTLS" and override is None:
                writer.write(b"220 2.0.0 ready\r\n" + self.inject_after_starttls)
                await writer.drain()
                if self.starttls_garbage:
                    await reader.read(1)  # the ClientHello has begun: answer it with nonsense
                    writer.write(b"this is not TLS\r\n")
                    return
                assert self.tls is not None
                await writer.start_tls(self.tls)
                tls = True
                continue
            elif verb == "DATA" and override is None:
                writer.write(b"354 go ahead\r\n")
                self.messages.append(await read_data(reader))
                override = self._override(".", ".")
                if override == "HANG":
                    await asyncio.Event().wait()
            elif verb == "BDAT":
                size = int(text.split()[1])
                chunks += await reader.readexactly(size)
                self.bdat_sizes.append(size)
                if override is None and text.upper().endswith(" LAST"):
                    self.messages.append(bytes(chunks))
                    chunks.clear()
            elif verb == "RSET":
                chunks.clear()
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            writer.write((override or "250 2.0.0 ok").encode() + b"\r\n")


async def read_data(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    for _ in range(100_000):
        line = await reader.readline()
        if line in (b".\r\n", b""):
            return bytes(body)
        body += line[1:] if line.startswith(b".") else line
    raise AssertionError("message too long for the test server")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.example.test").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def client(**kwargs: Any) -> SmtpClient:
    options: dict[str, Any] = {
        "helo_name": HELO, "tls": "none", "connect_timeout": 5.0, "command_timeout": 5.0,
    }
    options.update(kwargs)
    return SmtpClient(**options)


# STARTTLS ---------------------------------------------------------------------------------


def test_opportunistic_starttls_accepts_an_unverified_certificate(server_tls: ssl.SSLContext) -> None:
    async def main() -> None:
        async with ScriptedServer(tls=server_tls) as srv:
            session = await client(tls="opportunistic").open("127.0.0.1", srv.port)
            async with session:
                assert session.tls_active and not session.tls_fallback
                assert not session.capabilities.starttls  # the post-TLS EHLO does not offer it
                result = await session.send_message("a@sender.test", rcpts("b@example.test"), MESSAGE)
                assert result.data_reply == Reply(250, "ok", "2.0.0")
            assert [c.split()[0] for c in srv.commands] == [
                "EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "DATA", "QUIT",
            ]
            assert srv.messages == [RECEIVED]

    run(main())


def test_required_tls_verifies_the_certificate(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async def main() -> None:
        async with ScriptedServer(tls=server_tls) as srv:
            good = client(tls="required", ssl_context=client_tls)
            async with await good.open("127.0.0.1", srv.port, server_name="mx.example.test") as session:
                assert session.tls_active
                assert session.description == f"mx.example.test[127.0.0.1]:{srv.port}"
            # The system trust store does not know the test CA: required TLS must fail, no fallback.
            with pytest.raises(SmtpTlsError, match="TLS handshake failed"):
                await client(tls="required").open("127.0.0.1", srv.port, server_name="mx.example.test")
            wrong_name = client(tls="required", ssl_context=client_tls)
            with pytest.raises(SmtpTlsError):
                await wrong_name.open("127.0.0.1", srv.port, server_name="other.example.test")
            assert srv.connections == 3

    run(main())


def test_opportunistic_falls_back_to_plaintext_when_the_handshake_fails() -> None:
    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # only to make STARTTLS offered
        async with ScriptedServer(tls=ctx, starttls_garbage=True) as srv:
            async with await client(tls="opportunistic").open("127.0.0.1", srv.port) as session:
                assert not session.tls_active
                assert "TLS handshake failed" in session.tls_fallback
                result = await session.send_message("a@sender.test", rcpts("b@example.test"), b"x")
                assert result.data_reply is not None and result.data_reply.code == 250
            assert srv.connections == 2
            assert srv.commands[-5:] == ["EHLO client.test", "MAIL FROM:<a@sender.test>",
                                         "RCPT TO:<b@example.test>", "DATA", "QUIT"]

    run(main())


def test_refused_starttls(server_tls: ssl.SSLContext) -> None:
    async def main() -> None:
        refuse = {"STARTTLS": ["454 4.7.0 TLS not available"] * 2}
        async with ScriptedServer(tls=server_tls, replies=refuse) as srv:
            async with await client(tls="opportunistic").open("127.0.0.1", srv.port) as session:
                assert not session.tls_active
                assert session.tls_fallback == "STARTTLS refused: 454 4.7.0 TLS not available"
                await session.send_message("a@sender.test", rcpts("b@example.test"), b"x")
            with pytest.raises(SmtpTlsError, match="STARTTLS refused") as info:
                await client(tls="required").open("127.0.0.1", srv.port)
            assert info.value.reply == Reply(454, "TLS not available", "4.7.0")
            assert srv.commands[-1] == "QUIT"  # a refusal still ends politely

    run(main())


def test_required_tls_without_starttls_offered() -> None:
    async def main() -> None:
        async with ScriptedServer() as srv:
            with pytest.raises(SmtpTlsError, match="STARTTLS not offered"):
                await client(tls="required").open("127.0.0.1", srv.port)

    run(main())


def test_starttls_response_injection_is_a_protocol_error(server_tls: ssl.SSLContext) -> None:
    async def main() -> None:
        async with ScriptedServer(tls=server_tls, inject_after_starttls=b"250 injected\r\n") as srv:
            with pytest.raises(SmtpProtocolError, match="after STARTTLS"):
                await client(tls="opportunistic").open("127.0.0.1", srv.port)

    run(main())


# Transactions -----------------------------------------------------------------------------


def test_chunking_streams_bdat_chunks_with_pipelining() -> None:
    async def main() -> None:
        body = b"Subject: big\n\n" + b"".join(b"line %06d with a bare LF\n" % i for i in range(8000))
        expected = body.replace(b"\n", b"\r\n")
        async with ScriptedServer(keywords=["PIPELINING", "CHUNKING", "ENHANCEDSTATUSCODES"]) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:

                async def pieces() -> AsyncIterator[bytes]:
                    for i in range(0, len(body), 10_000):
                        yield body[i : i + 10_000]

                result = await session.send_message("a@sender.test", rcpts("b@example.test"), pieces())
                assert result.data_reply == Reply(250, "ok", "2.0.0")
                # A second message on the same session, as bytes, with no RSET in between.
                result = await session.send_message("a@sender.test", rcpts("c@example.test"), b"hi\r\n")
                assert result.outcomes()[0].outcome is DeliveryOutcome.DELIVERED
            assert srv.messages == [expected, b"hi\r\n"]
            assert srv.bdat_sizes[:-1] == [BDAT_CHUNK] * (len(expected) // BDAT_CHUNK) + [
                len(expected) % BDAT_CHUNK
            ]
            assert "RSET" not in srv.commands
            assert "DATA" not in srv.commands

    run(main())


def test_refused_bdat_chunk_stops_the_stream_and_the_next_transaction_resets() -> None:
    async def main() -> None:
        replies = {"BDAT": ["250 2.0.0 ok", "552 5.3.4 message too big"]}
        for keywords in (["PIPELINING", "CHUNKING"], ["CHUNKING"]):
            keywords.append("ENHANCEDSTATUSCODES")
            script = {k: list(v) for k, v in replies.items()}
            async with ScriptedServer(keywords=keywords, replies=script) as srv:
                async with await client().open("127.0.0.1", srv.port) as session:
                    big = b"x" * (BDAT_CHUNK * 20)
                    result = await session.send_message("a@sender.test", rcpts("b@example.test"), big)
                    assert result.data_reply == Reply(552, "message too big", "5.3.4")
                    assert [o.outcome for o in result.outcomes()] == [DeliveryOutcome.PERMANENT]
                    assert session.is_usable()
                    await session.send_message("a@sender.test", rcpts("b@example.test"), b"small\r\n")
                bdats = [c for c in srv.commands if c.startswith("BDAT")]
                # Stopped within the pipelining window, far before the 20 chunks + LAST.
                assert 2 <= len(bdats) <= 12
                assert srv.commands.index("RSET") > srv.commands.index(bdats[1])
                assert srv.messages == [b"small\r\n"]

    run(main())


def test_per_recipient_outcomes() -> None:
    async def main() -> None:
        replies = {
            "RCPT TO:<gone@example.test>": ["550 5.1.1 no such user"],
            "RCPT TO:<full@example.test>": ["452 4.2.2 mailbox full"],
        }
        async with ScriptedServer(replies=replies) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:
                result = await session.send_message(
                    "a@sender.test",
                    rcpts("ok@example.test", "gone@example.test", "full@example.test"),
                    MESSAGE,
                )
            assert [(o.address, o.outcome, o.reply.code) for o in result.outcomes()] == [
                ("ok@example.test", DeliveryOutcome.DELIVERED, 250),
                ("gone@example.test", DeliveryOutcome.PERMANENT, 550),
                ("full@example.test", DeliveryOutcome.TRANSIENT, 452),
            ]
            # One write held MAIL, the RCPTs and DATA (RFC 2920); the server saw them in order.
            assert [c.split(":")[0] for c in srv.commands[1:6]] == ["MAIL FROM", "RCPT TO", "RCPT TO",
                                                                    "RCPT TO", "DATA"]

    run(main())


def test_refused_mail_makes_every_recipient_follow_the_mail_reply() -> None:
    async def main() -> None:
        replies = {"MAIL": ["451 4.7.1 greylisted"], "RCPT": ["503 5.5.1 need MAIL", "503 5.5.1 need MAIL"],
                   "DATA": ["503 5.5.1 need RCPT"]}
        async with (
            ScriptedServer(replies=replies) as srv,
            await client().open("127.0.0.1", srv.port) as session,
        ):
            result = await session.send_message("a@sender.test", rcpts("b@x.test", "c@x.test"), b"x")
            assert result.data_reply is None
            assert [r.code for r in result.rcpt_replies] == [503, 503]
            assert {o.outcome for o in result.outcomes()} == {DeliveryOutcome.TRANSIENT}
            assert [o.reply.code for o in result.outcomes()] == [451, 451]
            # The session is still good for another message.
            result = await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")
            assert result.data_reply is not None and result.data_reply.code == 250

    run(main())


def test_refused_data_then_reuse_sends_rset() -> None:
    async def main() -> None:
        async with ScriptedServer(replies={"DATA": ["451 4.3.0 try later"]}) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:
                first = await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")
                assert first.data_reply == Reply(451, "try later", "4.3.0")
                assert first.outcomes()[0].outcome is DeliveryOutcome.TRANSIENT
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"y")
            assert srv.commands[3:5] == ["DATA", "RSET"]
            assert srv.messages == [b"y\r\n"]

    run(main())


def test_smtputf8_and_size_are_refused_locally_when_the_server_cannot_take_them() -> None:
    async def main() -> None:
        async with ScriptedServer(keywords=["PIPELINING", "SIZE 100"]) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:
                result = await session.send_message("a@sender.test", rcpts("jöran@bücher.test"), b"x")
                assert not result.sent
                assert result.mail_reply.enhanced == "5.6.7"
                assert result.outcomes()[0].outcome is DeliveryOutcome.PERMANENT
                result = await session.send_message("a@sender.test", rcpts("b@x.test"), b"x" * 101)
                assert not result.sent and result.mail_reply.code == 552
                result = await session.send_message("a@sender.test", rcpts("b@x.test"), b"x" * 100)
                assert result.sent
            assert srv.commands[1] == "MAIL FROM:<a@sender.test> SIZE=100"

    run(main())


def test_smtputf8_offered() -> None:
    async def main() -> None:
        async with ScriptedServer(keywords=["SMTPUTF8", "8BITMIME"]) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:
                body = "Subject: é\r\n\r\nü\r\n".encode()
                to = rcpts("jöran@bücher.test")
                await session.send_message("a@sender.test", to, [body], body_8bit=True)
            assert srv.commands[1:3] == ["MAIL FROM:<a@sender.test> BODY=8BITMIME SMTPUTF8",
                                         "RCPT TO:<jöran@bücher.test>"]
            assert srv.messages == [body]

    run(main())


def test_helo_fallback() -> None:
    async def main() -> None:
        async with ScriptedServer(replies={"EHLO": ["502 5.5.2 no ESMTP here"]}) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:
                assert not session.capabilities.esmtp
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"x", ret="FULL", envid="e1")
            assert srv.commands[:3] == ["EHLO client.test", "HELO client.test", "MAIL FROM:<a@sender.test>"]

    run(main())


# Failures ---------------------------------------------------------------------------------


def test_connect_refused() -> None:
    async def main() -> None:
        port = free_port()
        with pytest.raises(SmtpConnectError) as info:
            await open_session("127.0.0.1", port, helo_name=HELO, tls="none", connect_timeout=5)
        assert info.value.reason == f"connect to 127.0.0.1:{port}: Connection refused"

    run(main())


def test_refused_greeting() -> None:
    async def main() -> None:
        async with ScriptedServer(greeting="554 5.7.1 no service for you") as srv:
            with pytest.raises(SmtpReplyError, match="greeting: 554") as info:
                await client().open("127.0.0.1", srv.port)
            assert info.value.reply is not None and info.value.reply.code == 554
            assert srv.commands == ["QUIT"]

    run(main())


def test_timeout_waiting_for_the_greeting() -> None:
    async def main() -> None:
        async with ScriptedServer(greeting="") as srv:
            with pytest.raises(SmtpTimeoutError) as info:
                await client(command_timeout=0.2).open("127.0.0.1", srv.port)
            expected = f"[127.0.0.1]:{srv.port}: timed out after 0.2s waiting for reply to connect"
            assert info.value.reason == expected

    run(main())


def test_timeout_waiting_for_the_final_reply() -> None:
    async def main() -> None:
        async with ScriptedServer(replies={".": ["HANG"]}) as srv:
            session = await client(command_timeout=5.0, final_timeout=0.2).open("127.0.0.1", srv.port)
            with pytest.raises(SmtpTimeoutError, match="waiting for reply to end of data"):
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")
            assert not session.is_usable()
            await session.close()
            assert srv.commands[-1] == "DATA"  # a broken session does not try QUIT

    run(main())


def test_connection_dropped_mid_transaction() -> None:
    async def main() -> None:
        async with ScriptedServer(replies={"RCPT": ["CLOSE"]}) as srv:
            session = await client().open("127.0.0.1", srv.port)
            with pytest.raises(SmtpConnectionLost, match="connection closed by peer") as info:
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")
            assert str(info.value).startswith(f"[127.0.0.1]:{srv.port}: ")
            await session.close()

    run(main())


def test_421_mid_session() -> None:
    async def main() -> None:
        async with ScriptedServer(replies={"MAIL": ["421 4.3.2 shutting down"]}) as srv:
            session = await client().open("127.0.0.1", srv.port)
            with pytest.raises(SmtpReplyError, match="service closing") as info:
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")
            assert info.value.reply is not None and info.value.reply.code == 421
            await session.close()

    run(main())


def test_garbage_reply_is_a_protocol_error() -> None:
    async def main() -> None:
        garbage = {"MAIL": ["hello there"]}
        async with (
            ScriptedServer(replies=garbage) as srv,
            await client().open("127.0.0.1", srv.port) as session,
        ):
            with pytest.raises(SmtpProtocolError, match="malformed reply"):
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")
            with pytest.raises(SmtpClientError, match="not usable"):
                await session.send_message("a@sender.test", rcpts("b@x.test"), b"x")

    run(main())


def test_close_when_the_peer_is_gone() -> None:
    async def main() -> None:
        async with ScriptedServer(replies={"NOOP": ["CLOSE"], "QUIT": ["CLOSE"]}) as srv:
            session = await client().open("127.0.0.1", srv.port)
            await session.close()  # QUIT gets no reply: still no exception
            await session.close()  # idempotent
            assert srv.commands == ["EHLO client.test", "QUIT"]

    run(main())


def test_outcome_helper() -> None:
    ok, temp, perm = Reply(250, "ok"), Reply(450, "later"), Reply(550, "no")
    result = TransactionResult(ok, (ok, perm, ok), temp, ("a@x", "b@x", "c@x"))
    assert [o.outcome for o in result.outcomes()] == [
        DeliveryOutcome.TRANSIENT, DeliveryOutcome.PERMANENT, DeliveryOutcome.TRANSIENT,
    ]
    assert classify(Reply(354, "?")) is DeliveryOutcome.TRANSIENT


# Postfix smtp-sink ------------------------------------------------------------------------


@dataclass
class Sink:
    port: int
    dumps: Path

    def received(self) -> list[tuple[str, list[str], bytes]]:
        """(MAIL args, RCPT args, message with CRLF line ends) of each transaction that reached
        DATA. smtp-sink opens a dump at MAIL and removes it at disconnect if no DATA followed;
        such a file (it may still exist when the client is done) has no Received: line."""
        out = []
        for path in self.dumps.iterdir():
            lines = path.read_bytes().split(b"\n")
            if not any(ln.startswith(b"Received: ") for ln in lines):
                continue
            mail = next(ln for ln in lines if ln.startswith(b"X-Mail-Args: "))[13:].decode()
            rcpt = [ln[13:].decode() for ln in lines if ln.startswith(b"X-Rcpt-Args: ")]
            start = next(i for i, ln in enumerate(lines) if ln.startswith(b"Received: ")) + 3
            body = lines[start:-2]  # smtp-sink appends an empty line after the message
            out.append((mail, rcpt, b"".join(ln + b"\r\n" for ln in body)))
        return out


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    if SMTP_SINK is None:
        pytest.skip("Postfix smtp-sink not installed (Debian: apt-get install postfix)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> Sink:
        assert SMTP_SINK is not None
        port = free_port()
        dumps = tmp_path / f"dump{len(procs)}"
        dumps.mkdir()
        user = ["-u", "root"] if os.geteuid() == 0 else []  # it refuses to run as root without -u
        proc = subprocess.Popen(
            [SMTP_SINK, *user, *flags, "-d", f"{dumps}/%M.", f"127.0.0.1:{port}", "16"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        procs.append(proc)
        # Readiness: connect until it listens; between tries wait on the process itself, so a
        # start-up failure shows at once instead of as a timeout.
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return Sink(port, dumps)
            except ConnectionRefusedError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.01)
                    assert proc.stderr is not None
                    pytest.fail(f"smtp-sink exited: {proc.stderr.read().decode()}")
        pytest.fail("smtp-sink did not start listening")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_sink_pipelined_transactions_with_reuse(smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink()

    async def main() -> None:
        session: SmtpClientSession = await open_session(
            "127.0.0.1", sink.port, helo_name=HELO, tls="opportunistic", connect_timeout=5, command_timeout=10
        )
        async with session:
            assert session.greeting.code == 220 and session.peer == ("127.0.0.1", sink.port)
            caps = session.capabilities
            assert caps.pipelining and caps.dsn and caps.eightbitmime and caps.enhancedstatuscodes
            assert not session.tls_active and not session.tls_fallback  # smtp-sink has no STARTTLS
            first = await session.send_message(
                "bounce@sender.test",
                [RecipientSpec("a@example.test", ("SUCCESS", "FAILURE"), "rfc822;a@example.test"),
                 RecipientSpec("b@example.test", ("NEVER",))],
                MESSAGE, body_8bit=True, ret="HDRS", envid="queue+id",
            )
            assert first.mail_reply.enhanced == "2.1.0"
            assert [o.outcome for o in first.outcomes()] == [DeliveryOutcome.DELIVERED] * 2
            pieces = iter([b"Subject: 2\r\n", b"\r\nbody"])
            second = await session.send_message("", rcpts("c@example.test"), pieces)
            assert second.data_reply is not None and second.data_reply.is_positive

    run(main())
    # Both dumps may carry the same time stamp: tell them apart by sender.
    (mail2, rcpt2, body2), (mail1, rcpt1, body1) = sorted(sink.received())
    assert mail1 == "<bounce@sender.test> BODY=8BITMIME RET=HDRS ENVID=queue+2Bid"
    assert rcpt1 == ["<a@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.test",
                     "<b@example.test> NOTIFY=NEVER"]
    assert body1 == RECEIVED
    assert (mail2, rcpt2, body2) == ("<>", ["<c@example.test>"], b"Subject: 2\r\n\r\nbody\r\n")


def test_sink_without_pipelining_or_extensions(smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink("-p", "-8", "-N", "-E")

    async def main() -> None:
        session = await open_session("127.0.0.1", sink.port, helo_name=HELO, tls="none")
        async with session:
            assert not session.capabilities.pipelining and not session.capabilities.dsn
            result = await session.send_message(
                "a@sender.test", [RecipientSpec("b@example.test", ("SUCCESS",))], MESSAGE,
                body_8bit=True, ret="FULL",
            )
            assert result.data_reply is not None
            assert result.data_reply.enhanced is None and result.data_reply.text.startswith("2.0.0")

    run(main())
    # Parameters of extensions that were not offered are not sent.
    assert sink.received() == [("<a@sender.test>", ["<b@example.test>"], RECEIVED)]


def test_sink_refusing_recipients(smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink("-f", "RCPT")

    async def main() -> None:
        async with await open_session("127.0.0.1", sink.port, helo_name=HELO, tls="none") as session:
            result = await session.send_message("a@sender.test", rcpts("b@x.test", "c@x.test"), MESSAGE)
            assert result.data_reply is None
            assert [o.outcome for o in result.outcomes()] == [DeliveryOutcome.PERMANENT] * 2
            assert session.is_usable()

    run(main())
    assert sink.received() == []


def test_sink_soft_refusing_mail(smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink("-r", "MAIL")

    async def main() -> None:
        async with await open_session("127.0.0.1", sink.port, helo_name=HELO, tls="none") as session:
            result = await session.send_message("a@sender.test", rcpts("b@x.test", "c@x.test"), MESSAGE)
            assert result.mail_reply.is_transient
            assert result.rcpt_replies == (result.mail_reply,) * 2  # -r implies no PIPELINING
            assert [o.outcome for o in result.outcomes()] == [DeliveryOutcome.TRANSIENT] * 2

    run(main())


def test_sink_421_and_disconnects(smtp_sink: Callable[..., Sink]) -> None:
    closing = smtp_sink("-Q", "RCPT")
    vanishing = smtp_sink("-q", "DATA")
    refusing = smtp_sink("-f", "CONNECT")

    async def main() -> None:
        async with await open_session("127.0.0.1", closing.port, helo_name=HELO, tls="none") as session:
            with pytest.raises(SmtpReplyError, match="421"):
                await session.send_message("a@sender.test", rcpts("b@x.test"), MESSAGE)
        async with await open_session("127.0.0.1", vanishing.port, helo_name=HELO, tls="none") as session:
            with pytest.raises(SmtpConnectionLost, match="closed by peer"):
                await session.send_message("a@sender.test", rcpts("b@x.test"), MESSAGE)
        with pytest.raises(SmtpReplyError, match="greeting: 5"):
            await open_session("127.0.0.1", refusing.port, helo_name=HELO, tls="none")

    run(main())


def test_sink_tls_required_but_not_offered(smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink()

    async def main() -> None:
        with pytest.raises(SmtpTlsError) as info:
            await open_session("127.0.0.1", sink.port, helo_name=HELO, tls="required")
        assert info.value.reason == f"[127.0.0.1]:{sink.port}: TLS required but STARTTLS not offered"

    run(main())


def test_354_after_all_recipients_were_refused_gets_an_empty_message() -> None:
    async def main() -> None:
        # RFC 2920 3.1: a server may say 354 to a pipelined DATA although no RCPT succeeded.
        async with ScriptedServer(replies={"RCPT": ["550 5.1.1 no such user"]}) as srv:
            async with await client().open("127.0.0.1", srv.port) as session:
                result = await session.send_message("a@sender.test", rcpts("b@x.test"), MESSAGE)
                assert result.data_reply is None
                assert result.outcomes()[0].outcome is DeliveryOutcome.PERMANENT
                assert session.is_usable()
            assert srv.messages == [b""]

    run(main())
