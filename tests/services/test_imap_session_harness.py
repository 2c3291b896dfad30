"""The harness for the IMAP session tests: a real SQLite store in a temporary directory, the real
`ImapService`, and clients that drive sessions with parsed commands (no sockets, no protocol
core) and read the responses back as the wire text the serializer makes of them.

The other `test_imap_session_*` modules import `env`, `Client` and `wire` from here; the tests
below check the harness itself and the greeting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailprime.domain.login_failures import FailurePolicy
from mailprime.domain.mail import Account
from mailprime.net.imap_handler import LiteralSource
from mailprime.proto.imap.serializer import serialize
from mailprime.proto.imap.types import (
    Append,
    AppendData,
    AppendEnd,
    Command,
    CommandReceived,
    Event,
    Login,
    Response,
    Select,
    State,
    StreamedLiteral,
    Tagged,
)
from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.context import ImapConfig
from mailprime.services.imap.handler import ImapService
from mailprime.services.imap.quota import QuotaLimits
from mailprime.services.imap.session import ImapSession
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import SqlStore, open_store

ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "alice-password"
MSG = b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: hello\r\n\r\nHello Alice.\r\n"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@dataclass
class Env:
    store: SqlStore
    service: ImapService
    alice: Account
    tmp: Path

    def client(self, *, tls: bool = True, plaintext_login: bool = False) -> Client:
        return Client(self, tls=tls, plaintext_login=plaintext_login)

    async def inbox_id(self, name: str = "INBOX") -> Any:
        box = await self.store.get_mailbox(self.alice.id, name)
        assert box is not None
        return box.id

    async def deliver(self, data: bytes = MSG, mailbox: str = "INBOX", **kw: Any) -> int:
        """Puts a message in alice's mailbox directly through storage (like an SMTP delivery)."""
        stored = await self.store.append_message(await self.inbox_id(mailbox), data, **kw)
        return stored.uid


@asynccontextmanager
async def env(tmp: Path, *, quota: QuotaLimits | None = None, max_sessions: int = 20,
              failures: FailurePolicy | None = None, max_append: int = 10 * 1024 * 1024,
              inline_max: int = 64 * 1024) -> AsyncIterator[Env]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=inline_max)
    try:
        await store.add_domain("example.com")
        alice = await store.add_account(ALICE, hash_password(PASSWORD))
        config = ImapConfig(hostname="imap.example.com", max_append=max_append,
                            quota=quota or QuotaLimits(), max_sessions_per_account=max_sessions,
                            failures=failures or FailurePolicy(first_delay=0.0), idle_poll=0.2)
        yield Env(store, ImapService(store, config, cache=MessageContentCache()), alice, tmp)
    finally:
        await store.close()


async def wire(responses: list[Response], *, utf8: bool = False) -> str:
    """The responses as the server would write them (streamed literals read from their source)."""
    out = bytearray()
    for response in responses:
        for segment in serialize(response, utf8=utf8):
            if isinstance(segment, StreamedLiteral):
                source = segment.source
                assert isinstance(source, LiteralSource)
                out += b"".join([chunk async for chunk in source.chunks()])
            else:
                out += segment
    return out.decode("utf-8", "replace")


class Client:
    _port = 40000

    def __init__(self, environment: Env, *, tls: bool, plaintext_login: bool) -> None:
        Client._port += 1
        self.env = environment
        self.session: ImapSession = environment.service.new_session(
            PeerInfo("127.0.0.1", Client._port, "imap"), tls, starttls=True,
            plaintext_login=plaintext_login, literal_plus=True)
        self._n = 0

    def tag(self) -> str:
        self._n += 1
        return f"a{self._n}"

    @property
    def state(self) -> State:
        return self.session.state

    async def events(self, event: Event) -> list[Response]:
        return [r async for r in self.session.respond(event)]

    async def run(self, command: Command, tag: str | None = None) -> list[Response]:
        return await self.events(CommandReceived(tag or self.tag(), command))

    async def text(self, command: Command, tag: str | None = None) -> str:
        """The wire text of the answer to `command`, with the tags numbered a1, a2..."""
        return await wire(await self.run(command, tag), utf8=self.session.utf8)

    async def ok(self, command: Command) -> list[Response]:
        responses = await self.run(command)
        last = responses[-1]
        assert isinstance(last, Tagged) and last.status.value == "OK", responses
        return responses

    async def login(self, user: str = ALICE, password: str = PASSWORD) -> None:
        await self.ok(Login(user, password))

    async def select(self, mailbox: str = "INBOX") -> list[Response]:
        return await self.ok(Select(mailbox))

    async def append(self, mailbox: str, data: bytes, *, flags: frozenset[str] = frozenset(),
                     date: datetime | None = None) -> list[Response]:
        """APPEND as the core reports it: the command at the literal, the data, the end."""
        tag = self.tag()
        first = await self.run(Append(mailbox, flags, date, len(data)), tag)
        if isinstance(first[-1], Tagged):
            return first  # refused before the literal
        out = list(first)
        for start in range(0, len(data), 65536):
            out += await self.events(AppendData(data[start:start + 65536]))
        return out + await self.events(AppendEnd(tag))


# The harness itself --------------------------------------------------------------------------


def test_greeting_names_the_host_and_the_capabilities(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = e.client(tls=False)
            text = await wire([await client.session.greeting()])
            assert text.startswith("* OK [CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE "
                                   "IDLE STARTTLS LOGINDISABLED] imap.example.com IMAP server ready")
            assert client.state is State.NOT_AUTHENTICATED

    run(scenario())


def test_append_then_select_sees_the_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = e.client()
            await client.login()
            answer = await wire(await client.append("INBOX", MSG))
            assert answer.startswith("+ Ready for literal data\r\na2 OK [APPENDUID ")
            text = await wire(await client.select())
            assert "* 1 EXISTS\r\n" in text
            assert client.state is State.SELECTED

    run(scenario())
