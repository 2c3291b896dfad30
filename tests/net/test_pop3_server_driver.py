"""The asyncio POP3 server driver over real loopback sockets, driven by Python's poplib and by raw
sockets: STLS and implicit TLS with a trustme CA, USER/PASS and AUTH PLAIN, pipelining, STLS
injection, streaming of large messages, failed-login pacing, the idle timeout, the per-IP cap and
draining. The handler below is a stand-in for the POP3 service: an in-memory maildrop."""

from __future__ import annotations

import asyncio
import base64
import logging
import poplib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailprime.domain.errors import StorageError
from mailprime.net.pop3_handler import ContentSink, PeerInfo
from mailprime.net.pop3_server import Pop3Listener, serve_pop3
from mailprime.net.tls import client_context, server_context
from mailprime.proto.pop3.multiline import encode_known, encode_whole
from mailprime.proto.pop3.types import LoginAccepted, MessageInfo, Pop3Capabilities, Pop3Limits, Reply

HOST = "pop.test"
WAIT = 10.0  # upper bound of any wait in these tests; none is expected to come close
ONE = b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n"
TWO = b"Subject: two\r\n\r\n" + b"line of the second message\r\n" * 3


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# The stand-in handler ----------------------------------------------------------------------------


@dataclass
class Handler:
    messages: list[bytes] = field(default_factory=lambda: [ONE, TWO])
    updates: list[tuple[int, ...]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, authcid)
    closed: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    piece: int = 8192
    idle: int = 0  # on_idle calls
    encode_ahead: bool = False  # RETR answered with sink.write_encoded

    def new_session(self, peer: PeerInfo, tls: bool) -> Session:
        return Session(self, tls)

    async def wait_closed(self, n: int = 1) -> None:
        async with asyncio.timeout(WAIT):
            for _ in range(n):
                await self.closed.get()


@dataclass
class Session:
    handler: Handler
    tls: bool

    async def on_connect(self) -> Reply | None:
        return None

    async def on_tls(self) -> None:
        self.tls = True

    async def on_login(self, mechanism: str, authzid: str, authcid: str,
                       password: str) -> LoginAccepted | Reply:
        self.handler.logins.append((mechanism, authcid))
        if authcid == "storage":
            raise StorageError("database is down")
        if authcid == "alice" and password == "secret":
            return LoginAccepted(tuple(MessageInfo(len(m), f"7.{i}")
                                       for i, m in enumerate(self.handler.messages, 1)))
        return Reply.negative("Authentication failed", "AUTH")

    async def on_retrieve(self, number: int, lines: int | None, sink: ContentSink) -> Reply | None:
        content = self.handler.messages[number - 1]
        if content == b"GONE":
            return Reply.negative("Message was removed")
        if self.handler.encode_ahead and lines is None:
            await sink.write_encoded(encode_known(content, crlf_only=True, dot_lines=True)
                                     if content.count(b"\n") == content.count(b"\r\n")
                                     else [encode_whole(content)])
            return None
        piece = self.handler.piece
        for i in range(0, len(content), piece):
            if content.startswith(b"BREAK") and i > 0:
                raise StorageError("spool file vanished")
            if not await sink.write(content[i:i + piece]):
                break
        return None

    def on_idle(self) -> None:
        self.handler.idle += 1

    async def on_update(self, deleted: Sequence[int]) -> Reply:
        self.handler.updates.append(tuple(deleted))
        return Reply.positive(f"{HOST} POP3 server signing off")

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
    return Tls(server_context(base / "cert.pem", base / "key.pem"),
               client_context(True, str(base / "ca.pem")))


@asynccontextmanager
async def listening(handler: Handler, **kw: Any) -> AsyncIterator[Pop3Listener]:
    options: dict[str, Any] = {
        "name": "pop3",
        "host": "127.0.0.1",
        "port": 0,
        "tls_mode": "none",
        "ssl_context": None,
        "capabilities": Pop3Capabilities(HOST),
        "limits": Pop3Limits(),
        "idle_timeout": WAIT,
        "max_connections_per_ip": 20,
        "allow_plaintext_auth": True,
        "auth_failure_delay": 0.01,
        "reuse_port": False,
    }
    options.update(kw)
    listener = await serve_pop3(handler, **options)
    try:
        yield listener
    finally:
        await listener.drain(1.0)


async def in_thread(fn: Callable[[], Any]) -> Any:
    async with asyncio.timeout(WAIT):
        return await asyncio.to_thread(fn)


class Raw:
    """A raw client over asyncio streams, for what poplib will not send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, ssl_ctx: ssl.SSLContext | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx)
        raw = cls(reader, writer)
        assert (await raw.line()).startswith(b"+OK")
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readline()

    async def until(self, end: bytes) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readuntil(end)

    async def eof(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


# poplib ------------------------------------------------------------------------------------------


def test_stls_then_user_pass_and_every_command_with_poplib(tls: Tls) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, tls_mode="starttls", ssl_context=tls.server,
                             allow_plaintext_auth=False) as listener:

            def client() -> dict[str, Any]:
                pop = poplib.POP3("127.0.0.1", listener.port, timeout=WAIT)
                seen: dict[str, Any] = {"welcome": pop.getwelcome(), "plain_capa": pop.capa()}
                with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext authentication"):
                    pop.user("alice")
                pop.stls(context=tls.client)
                seen["tls_capa"] = pop.capa()
                pop.user("alice")
                pop.pass_("secret")
                seen["stat"] = pop.stat()
                seen["list"] = pop.list()[1]
                seen["uidl"] = pop.uidl()[1]
                seen["retr"] = pop.retr(1)[1]
                seen["top"] = pop.top(2, 1)[1]
                seen["dele"] = pop.dele(1)
                seen["list_after"] = pop.list()[1]
                seen["quit"] = pop.quit()
                return seen

            seen = await in_thread(client)
            await handler.wait_closed()
        assert seen["welcome"] == b"+OK pop.test POP3 server ready"
        assert "STLS" in seen["plain_capa"] and "USER" not in seen["plain_capa"]
        assert "STLS" not in seen["tls_capa"]
        assert seen["tls_capa"]["USER"] == [] and seen["tls_capa"]["SASL"] == ["PLAIN", "LOGIN"]
        assert seen["stat"] == (2, len(ONE) + len(TWO))
        assert seen["list"] == [f"1 {len(ONE)}".encode(), f"2 {len(TWO)}".encode()]
        assert seen["uidl"] == [b"1 7.1", b"2 7.2"]
        assert b"\r\n".join(seen["retr"]) + b"\r\n" == ONE  # poplib un-stuffs the leading dot
        assert seen["top"] == [b"Subject: two", b"", b"line of the second message"]
        assert seen["dele"] == b"+OK Message 1 deleted"
        assert seen["list_after"] == [f"2 {len(TWO)}".encode()]
        assert seen["quit"] == b"+OK pop.test POP3 server signing off"
        assert handler.updates == [(1,)]
        assert handler.logins == [("USER", "alice")]

    run(main())


def test_implicit_tls_and_auth_plain_both_ways(tls: Tls) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, tls_mode="implicit", ssl_context=tls.server,
                             allow_plaintext_auth=False) as listener:
            token = base64.b64encode(b"\0alice\0secret")

            def initial_response() -> bytes:
                pop = poplib.POP3_SSL("127.0.0.1", listener.port, context=tls.client, timeout=WAIT)
                assert "STLS" not in pop.capa()
                answer = pop._shortcmd("AUTH PLAIN " + token.decode())
                pop.quit()
                return answer

            def continuation() -> bytes:
                pop = poplib.POP3_SSL("127.0.0.1", listener.port, context=tls.client, timeout=WAIT)
                pop._putcmd("AUTH PLAIN")
                challenge, _ = pop._getline()
                assert challenge == b"+ "
                answer = pop._shortcmd(token.decode())
                pop.rset()
                pop.quit()
                return answer

            assert await in_thread(initial_response) == b"+OK Maildrop has 2 messages (%d octets)" % (
                len(ONE) + len(TWO))
            assert (await in_thread(continuation)).startswith(b"+OK Maildrop has 2 messages")
            await handler.wait_closed(2)
        assert handler.logins == [("PLAIN", "alice"), ("PLAIN", "alice")]
        assert handler.updates == [(), ()]

    run(main())


def test_large_message_streams_intact_in_pieces() -> None:
    """A 3 MB message written in 8 KiB pieces through the sink (flushed every 64 KiB), with a
    line that needs stuffing at every piece boundary's neighbourhood."""
    async def main() -> None:
        line = b".dotted line of the big message, padded to sixty-four octets..\r\n"
        big = b"Subject: big\r\n\r\n" + line * (3 * 1024 * 1024 // len(line))
        handler = Handler(messages=[big, b""])
        async with listening(handler) as listener:

            def client() -> tuple[list[bytes], list[bytes]]:
                pop = poplib.POP3("127.0.0.1", listener.port, timeout=WAIT)
                pop.user("alice")
                pop.pass_("secret")
                _, lines, _ = pop.retr(1)
                _, empty, _ = pop.retr(2)
                pop.quit()
                return lines, empty

            lines, empty = await in_thread(client)
        assert b"\r\n".join(lines) + b"\r\n" == big
        assert empty == []

    run(main())


def test_empty_message_and_refusals_and_storage_errors() -> None:
    async def main() -> None:
        handler = Handler(messages=[b"", b"GONE", b"BREAK" + b"x" * 100], piece=10)
        async with listening(handler) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"USER storage\r\nPASS x\r\n")
            assert await raw.line() == b"+OK\r\n"
            assert await raw.line() == b"-ERR [SYS/TEMP] Temporary server error, try again later\r\n"
            await raw.send(b"USER alice\r\nPASS secret\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\n")
            assert await raw.line() == b"+OK\r\n"
            assert (await raw.line()).startswith(b"+OK Maildrop has 3 messages")
            assert await raw.line() == b"+OK 0 octets\r\n"
            assert await raw.line() == b".\r\n"
            assert await raw.line() == b"-ERR Message was removed\r\n"
            # Storage fails after the first piece: the response is cut off, never terminated.
            assert await raw.eof() == b"+OK 105 octets\r\nBREAKxxxxx"
            await raw.close()
            await handler.wait_closed(1)
        assert handler.updates == []

    run(main())


# Raw sockets: pipelining, STLS injection ---------------------------------------------------------


def test_pipelined_session_in_one_packet() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n")
            wire = await raw.eof()
            await raw.close()
        assert wire == (
            b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
            b"PIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION mailprime\r\n.\r\n"
            b"+OK\r\n" + b"+OK Maildrop has 2 messages (%d octets)\r\n" % (len(ONE) + len(TWO))
            + b"+OK 2 %d\r\n" % (len(ONE) + len(TWO))
            + b"+OK %d octets\r\n" % len(ONE) + b"Subject: one\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
            + b"+OK Message 2 deleted\r\n+OK pop.test POP3 server signing off\r\n")
        assert handler.updates == [(2,)]

    run(main())


def test_messages_encoded_ahead_go_out_byte_for_byte_like_streamed_ones() -> None:
    async def main() -> None:
        session = b"USER alice\r\nPASS secret\r\nRETR 1\r\nTOP 2 1\r\nRETR 2\r\nSTAT\r\nQUIT\r\n"
        wires: dict[bool, list[bytes]] = {}
        for encode_ahead in (False, True):
            handler = Handler(encode_ahead=encode_ahead)
            async with listening(handler) as listener:
                raw = await Raw.connect(listener.port)  # one command at a time
                answers = []
                for line in session.splitlines(keepends=True):
                    await raw.send(line)
                    multi = line.startswith((b"RETR", b"TOP"))
                    answers.append(await (raw.until(b"\r\n.\r\n") if multi else raw.line()))
                await raw.close()
                raw = await Raw.connect(listener.port)  # and pipelined, in one packet
                await raw.send(session)
                wires[encode_ahead] = [b"".join(answers), await raw.eof()]
                await raw.close()
                await handler.wait_closed(2)
            assert handler.idle >= 8  # an idle moment before every read
        assert wires[True] == wires[False]
        assert wires[True][0] == wires[True][1] and wires[True][1].count(b"\r\n.\r\n") == 3

    run(main())


def test_stls_discards_commands_injected_before_the_handshake(tls: Tls) -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, tls_mode="starttls", ssl_context=tls.server,
                             allow_plaintext_auth=False) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"STLS\r\nUSER alice\r\nPASS secret\r\n")
            assert await raw.line() == b"+OK Begin TLS negotiation\r\n"
            await raw.writer.start_tls(tls.client, server_hostname="localhost")
            await raw.send(b"STAT\r\nQUIT\r\n")
            assert await raw.line() == b"-ERR Command not valid in this state\r\n"
            assert await raw.line() == b"+OK pop.test POP3 server signing off\r\n"
            await raw.close()
            await handler.wait_closed()
        assert handler.logins == []

    run(main())


# Limits: failed logins, idle timeout, per-IP cap, drain ------------------------------------------


def test_failed_logins_are_paced_then_the_connection_closes() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, auth_failure_delay=0.1,
                             limits=Pop3Limits(max_auth_failures=3)) as listener:
            raw = await Raw.connect(listener.port)
            started = time.monotonic()
            await raw.send(b"USER alice\r\nPASS a\r\nUSER alice\r\nPASS b\r\nUSER alice\r\nPASS c\r\n"
                           b"USER alice\r\nPASS secret\r\n")
            wire = await raw.eof()
            elapsed = time.monotonic() - started
            await raw.close()
        assert wire == b"+OK\r\n-ERR [AUTH] Authentication failed\r\n" * 3
        assert elapsed >= 0.1 + 0.2 + 0.4  # 0.1 s doubling: a lower bound, never an upper one
        assert len(handler.logins) == 3

    run(main())


def test_idle_timeout_closes_silently_and_deletes_nothing() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, idle_timeout=0.3) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\n")
            assert await raw.line() == b"+OK\r\n"
            assert (await raw.line()).startswith(b"+OK Maildrop")
            assert await raw.line() == b"+OK Message 1 deleted\r\n"
            assert await raw.eof() == b""  # RFC 1939 3: no response, and no UPDATE
            await raw.close()
            await handler.wait_closed()
        assert handler.updates == []

    run(main())


def test_a_client_that_stops_reading_is_dropped_after_the_idle_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    """RETR of a message larger than the socket buffers to a client that never reads: the write
    waits at most idle_timeout, then the connection is aborted and nothing is deleted."""
    async def main() -> None:
        big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 500_000  # 40 MB
        handler = Handler(messages=[big], piece=64 * 1024)
        async with listening(handler, idle_timeout=0.3) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\nRSET\r\nRETR 1\r\nQUIT\r\n")
            started = time.monotonic()
            await handler.wait_closed()  # without the client reading a single octet more
            assert time.monotonic() - started >= 0.3
            await raw.close()
        assert handler.updates == []

    with caplog.at_level(logging.DEBUG, logger="mailprime.net.pop3_server"):
        run(main())
    assert "closing: the client stopped reading" in caplog.text


def test_a_dropped_connection_deletes_nothing() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\nDELE 2\r\n")
            for _ in range(4):
                await raw.line()
            await raw.close()
            await handler.wait_closed()
        assert handler.updates == []

    run(main())


def test_per_ip_connection_cap() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler, max_connections_per_ip=1) as listener:
            first = await Raw.connect(listener.port)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            async with asyncio.timeout(WAIT):
                refused = await reader.read()
            writer.close()
            await first.send(b"QUIT\r\n")
            assert (await first.eof()).startswith(b"+OK")
            await first.close()
            await handler.wait_closed()
            second = await Raw.connect(listener.port)  # the slot is free again
            await second.close()
        assert refused == b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"

    run(main())


def test_drain_ends_idle_sessions_without_update() -> None:
    async def main() -> None:
        handler = Handler()
        async with listening(handler) as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\n")
            for _ in range(3):
                await raw.line()
            await listener.drain(0.0)
            assert await raw.eof() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
            await raw.close()
        assert handler.updates == []
        assert listener.active_sessions == 0

    run(main())


def test_serve_pop3_checks_its_tls_arguments() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="tls_mode"):
            await serve_pop3(Handler(), name="x", host="127.0.0.1", port=0, tls_mode="tls",
                             ssl_context=None, capabilities=Pop3Capabilities(HOST), limits=Pop3Limits(),
                             idle_timeout=1, max_connections_per_ip=1, allow_plaintext_auth=False,
                             auth_failure_delay=0, reuse_port=False)
        with pytest.raises(ValueError, match="needs an ssl_context"):
            await serve_pop3(Handler(), name="x", host="127.0.0.1", port=0, tls_mode="implicit",
                             ssl_context=None, capabilities=Pop3Capabilities(HOST), limits=Pop3Limits(),
                             idle_timeout=1, max_connections_per_ip=1, allow_plaintext_auth=False,
                             auth_failure_delay=0, reuse_port=False)

    run(main())


def test_plaintext_login_needs_a_loopback_listener() -> None:
    """allow_plaintext_auth is ignored on a non-loopback address (here the wildcard)."""
    async def main() -> None:
        handler = Handler()
        async with listening(handler, host="0.0.0.0") as listener:
            raw = await Raw.connect(listener.port)
            await raw.send(b"USER alice\r\nQUIT\r\n")
            assert (await raw.line()).startswith(b"-ERR [AUTH] Plaintext authentication disallowed")
            await raw.close()

    run(main())
