"""The asyncio IMAP driver over real loopback sockets, with the real IMAP service and a real
SQLite store behind it: pipelining, STARTTLS (and the injection it must refuse), plaintext login
only where allowed, AUTHENTICATE with a continuation, literals accepted and refused in step, the
autologout timer, the per-IP cap, IDLE woken by another session, and draining."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailprime.domain.login_failures import FailurePolicy
from mailprime.net.imap_handler import PeerInfo
from mailprime.net.imap_server import ImapListener, serve_imap
from mailprime.net.tls import client_context, server_context
from mailprime.proto.imap.types import (
    Append,
    Atom,
    CommandReceived,
    Event,
    Limits,
    Noop,
    Response,
    ResponseStatus,
    State,
    Untagged,
    UntaggedStatus,
    ok,
)
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.context import ImapConfig
from mailprime.services.imap.handler import ImapService
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import SqlStore, open_store

WAIT = 10.0  # upper bound of any wait here; none is expected to come close
ALICE = "alice@example.com"
PASSWORD = "alice-password"


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
async def listening(tmp: Path, **kw: Any) -> AsyncIterator[tuple[ImapListener, SqlStore]]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=4096)
    await store.add_domain("example.com")
    await store.add_account(ALICE, hash_password(PASSWORD))
    config = ImapConfig(hostname="imap.test", failures=FailurePolicy(first_delay=0.0), idle_poll=0.2)
    service = ImapService(store, config, cache=MessageContentCache())
    options: dict[str, Any] = {
        "name": "imap", "host": "127.0.0.1", "port": 0, "tls_mode": "none", "ssl_context": None,
        "limits": Limits(), "idle_timeout": WAIT, "max_connections_per_ip": 20,
        "allow_plaintext_login": True, "reuse_port": False,
    }
    options.update(kw)
    listener = await serve_imap(service, **options)
    try:
        yield listener, store
    finally:
        await listener.drain(1.0)
        await store.close()


class Raw:
    """A raw IMAP client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, ssl_ctx: ssl.SSLContext | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx,
                                                       server_hostname="localhost" if ssl_ctx else None)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readline()

    async def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the one starting with `tag` + " "."""
        lines = []
        async with asyncio.timeout(WAIT):
            while True:
                line = await self.reader.readline()
                assert line, f"connection closed; got {lines}"
                lines.append(line)
                if line.startswith(tag + b" "):
                    return lines

    async def closed(self) -> bytes:
        """Everything until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def run(coro: Any) -> None:
    asyncio.run(coro)


def test_pipelined_commands_are_answered_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path) as (listener, _):
            client = await Raw.connect(listener.port)
            assert (await client.line()).startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2")
            await client.send(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\na2 SELECT INBOX\r\na3 NOOP\r\n'
                              "a4 LOGOUT\r\n".encode())
            lines = await client.until(b"a4")
            tags = [line.split(b" ")[0] for line in lines if not line.startswith(b"*")]
            assert tags == [b"a1", b"a2", b"a3", b"a4"]
            assert b"* BYE Logging out\r\n" in lines
            assert await client.closed() == b""
            await client.close()

    run(scenario())


def test_plaintext_login_only_where_allowed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path, allow_plaintext_login=False) as (listener, _):
            client = await Raw.connect(listener.port)
            greeting = await client.line()
            assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
            await client.send(f"a1 LOGIN {ALICE} {PASSWORD}\r\n".encode())
            assert (await client.until(b"a1"))[-1].startswith(b"a1 NO [PRIVACYREQUIRED]")
            await client.close()
        second = tmp_path / "second"
        second.mkdir()
        async with listening(second, allow_plaintext_login=True) as (listener, _):
            client = await Raw.connect(listener.port)
            greeting = await client.line()
            assert b"AUTH=PLAIN" in greeting and b"LOGINDISABLED" not in greeting
            await client.close()

    run(scenario())


def test_starttls_drops_commands_pipelined_behind_it(tmp_path: Path, tls: Tls) -> None:
    async def scenario() -> None:
        async with listening(tmp_path, tls_mode="starttls", ssl_context=tls.server,
                             allow_plaintext_login=False) as (listener, _):
            client = await Raw.connect(listener.port)
            assert b"STARTTLS" in await client.line()
            # RFC 3501 6.2.1: a command sent with STARTTLS before the handshake is never run.
            await client.send(f"a1 STARTTLS\r\na2 LOGIN {ALICE} {PASSWORD}\r\n".encode())
            assert await client.line() == b"a1 OK Begin TLS negotiation now\r\n"
            await client.writer.start_tls(tls.client, server_hostname="localhost")
            await client.send(b"a3 CAPABILITY\r\n")
            lines = await client.until(b"a3")
            assert not any(line.startswith(b"a2") for line in lines)
            assert b"AUTH=PLAIN" in lines[0] and b"STARTTLS" not in lines[0]
            await client.send(b"a4 STARTTLS\r\n")
            assert (await client.until(b"a4"))[-1].startswith(b"a4 BAD")
            await client.close()

    run(scenario())


def test_authenticate_plain_with_a_continuation_and_with_sasl_ir(tmp_path: Path) -> None:
    async def scenario() -> None:
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
        async with listening(tmp_path) as (listener, _):
            client = await Raw.connect(listener.port)
            await client.line()
            await client.send(b"a1 AUTHENTICATE PLAIN\r\n")
            assert await client.line() == b"+ \r\n"
            await client.send(token + b"\r\n")
            assert (await client.line()).startswith(b"a1 OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
            await client.close()
            client = await Raw.connect(listener.port)
            await client.line()
            await client.send(b"b1 AUTHENTICATE PLAIN " + token + b"\r\n")
            assert (await client.line()).startswith(b"b1 OK ")
            await client.close()
            client = await Raw.connect(listener.port)
            await client.line()
            await client.send(b"c1 AUTHENTICATE PLAIN\r\n")
            assert await client.line() == b"+ \r\n"
            await client.send(b"*\r\n")
            assert (await client.line()).startswith(b"c1 BAD")
            await client.send(b"c2 NOOP\r\n")
            assert (await client.line()).startswith(b"c2 OK")
            await client.close()

    run(scenario())


def test_refused_literals_keep_the_stream_in_step(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path) as (listener, _):
            client = await Raw.connect(listener.port)
            await client.line()
            await client.send(f"a1 LOGIN {ALICE} {PASSWORD}\r\n".encode())
            await client.until(b"a1")
            # Non-synchronizing: the client sends the octets anyway; the server skips them.
            await client.send(b"a2 APPEND Nowhere {14+}\r\nSubject: x\r\n\r\n\r\na3 NOOP\r\n")
            assert (await client.until(b"a2"))[-1].startswith(b"a2 NO [TRYCREATE]")
            assert (await client.until(b"a3"))[-1].startswith(b"a3 OK")
            # Synchronizing: refused before "+", so nothing follows but the next command.
            await client.send(b"a4 APPEND Nowhere {14}\r\n")
            assert (await client.until(b"a4"))[-1].startswith(b"a4 NO [TRYCREATE]")
            await client.send(b"a5 APPEND INBOX {14}\r\n")
            assert await client.line() == b"+ Ready for literal data\r\n"
            await client.send(b"Subject: x\r\n\r\n\r\n")
            assert (await client.until(b"a5"))[-1].startswith(b"a5 OK [APPENDUID ")
            # A literal inside another command (a quoted password as a literal).
            await client.send(b"a6 SELECT {5}\r\n")
            assert (await client.line()).startswith(b"+ ")
            await client.send(b"INBOX\r\n")
            lines = await client.until(b"a6")
            assert b"* 1 EXISTS\r\n" in lines and lines[-1].startswith(b"a6 OK [READ-WRITE]")
            await client.close()

    run(scenario())


def test_autologout_after_the_idle_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path, idle_timeout=0.3) as (listener, _):
            client = await Raw.connect(listener.port)
            await client.line()
            assert (await client.closed()).startswith(b"* BYE Autologout")
            await client.close()

    run(scenario())


def test_connections_per_ip_are_capped(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path, max_connections_per_ip=1) as (listener, _):
            first = await Raw.connect(listener.port)
            assert (await first.line()).startswith(b"* OK")
            second = await Raw.connect(listener.port)
            assert (await second.closed()).startswith(b"* BYE [UNAVAILABLE] Too many connections")
            await second.close()
            await first.close()

    run(scenario())


def test_idle_is_woken_by_another_session_and_drain_says_bye(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path) as (listener, _):
            idler, other = await Raw.connect(listener.port), await Raw.connect(listener.port)
            for client in (idler, other):
                await client.line()
                await client.send(f"a1 LOGIN {ALICE} {PASSWORD}\r\na2 SELECT INBOX\r\n".encode())
                await client.until(b"a2")
            await idler.send(b"a3 IDLE\r\n")
            assert await idler.line() == b"+ idling\r\n"
            await other.send(b"b1 APPEND INBOX {14+}\r\nSubject: x\r\n\r\n\r\n")
            assert (await other.until(b"b1"))[-1].startswith(b"b1 OK")
            assert await idler.line() == b"* 1 EXISTS\r\n"
            assert await idler.line() == b"* 0 RECENT\r\n"
            await other.send(b"b2 STORE 1 +FLAGS (\\Flagged)\r\n")
            await other.until(b"b2")
            assert await idler.line() == b"* 1 FETCH (FLAGS (\\Flagged) UID 1)\r\n"
            await listener.drain(1.0)
            assert (await idler.closed()).startswith(b"* BYE Server shutting down")
            assert (await other.closed()).startswith(b"* BYE Server shutting down")
            await idler.close()
            await other.close()

    run(scenario())


# A stand-in session whose command fails with a bug: the driver still answers the tag ----------


class BrokenSession:
    """Satisfies ImapSession; FETCH "raises" (a bug), everything else is OK."""

    state = State.SELECTED
    utf8 = False

    async def greeting(self) -> UntaggedStatus:
        return UntaggedStatus(ResponseStatus.OK, "stand-in ready")

    async def respond(self, event: Event) -> AsyncIterator[Response]:
        if isinstance(event, CommandReceived):
            if isinstance(event.command, Append):
                raise RuntimeError("a bug before deciding on the literal")
            if not isinstance(event.command, Noop):
                yield Untagged((1, Atom("EXISTS")))
                raise RuntimeError("a bug in the middle of a command")
            yield ok(event.tag)

    async def wait_for_change(self) -> None:
        await asyncio.Event().wait()

    async def idle_updates(self) -> AsyncIterator[Response]:
        return
        yield

    async def on_tls(self) -> None:
        pass

    async def on_close(self, received: int, sent: int) -> None:
        pass


class BrokenHandler:
    def new_session(self, peer: PeerInfo, tls: bool, *, starttls: bool, plaintext_login: bool,
                    literal_plus: bool) -> BrokenSession:
        return BrokenSession()


def test_a_failing_session_gets_serverbug_and_the_connection_lives(tmp_path: Path) -> None:
    async def scenario() -> None:
        listener = await serve_imap(BrokenHandler(), name="imap", host="127.0.0.1", port=0,
                                    tls_mode="none", ssl_context=None, limits=Limits(),
                                    idle_timeout=WAIT, max_connections_per_ip=5,
                                    allow_plaintext_login=True, reuse_port=False)
        try:
            client = await Raw.connect(listener.port)
            assert await client.line() == b"* OK stand-in ready\r\n"
            await client.send(b"a1 FETCH 1 FLAGS\r\n")
            assert await client.until(b"a1") == [b"* 1 EXISTS\r\n",
                                                  b"a1 NO [SERVERBUG] Internal server error\r\n"]
            await client.send(b"a2 APPEND INBOX {5}\r\n")
            assert await client.until(b"a2") == [b"a2 NO [SERVERBUG] Internal server error\r\n"]
            await client.send(b"a3 NOOP\r\n")
            assert await client.until(b"a3") == [b"a3 OK completed\r\n"]
            await client.close()
        finally:
            await listener.drain(1.0)

    run(scenario())


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with listening(tmp_path, idle_timeout=0.5) as (listener, store):
            account = await store.get_account(ALICE)
            assert account is not None
            inbox = await store.get_mailbox(account.id, "INBOX")
            assert inbox is not None
            big = b"Subject: big\r\n\r\n" + b"z" * (24 * 1024 * 1024) + b"\r\n"
            await store.append_message(inbox.id, big)
            client = await Raw.connect(listener.port)
            await client.line()
            await client.send(f"a1 LOGIN {ALICE} {PASSWORD}\r\na2 SELECT INBOX\r\n".encode())
            await client.until(b"a2")
            await client.send(b"a3 FETCH 1 BODY.PEEK[]\r\n")  # ... and read nothing
            async with asyncio.timeout(WAIT):
                while listener.active_sessions:
                    await asyncio.sleep(0.05)
            received = await client.closed()  # what the socket buffers held, then EOF
            assert len(received) < len(big)
            await client.close()

    run(scenario())
