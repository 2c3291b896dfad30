"""A scripted SMTP server on loopback for tests: answers each RCPT (and MAIL, DATA) as the test
says, records every transaction, and can close the connection after a reply (as a 421 does).

Theory of operation. One asyncio server (plain streams, no TLS, no PIPELINING advertised, so a
client sends one command at a time) runs in the test's event loop. Each connection reads lines
of at most MAX_LINE octets (RFC 5321 4.5.3.1.4: 512 for a command line) and answers from
`Script`: `mail(sender)`, `rcpt(sender, recipient)` and `data(sender, recipients)` return a
`Step` (the reply line, and whether to close after it); defaults accept everything. The body is
read up to the lone "." line (RFC 5321 4.5.2 dot-unstuffing applied) and at most MAX_BODY octets.
Every MAIL..end-of-data (or MAIL..RSET/close) is kept as a `Transaction` in `transactions`;
`wait_for(count)` waits on an asyncio.Condition, never by polling the clock.

A reply text with an enhanced status code is passed verbatim: the script writes the whole
line ("452 4.2.2 Mailbox full"), so a test can send exactly what a provider sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

MAX_LINE = 1000  # RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with CRLF
MAX_BODY = 10 * 1024 * 1024
MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: the minimum a server must accept


@dataclass(frozen=True, slots=True)
class Step:
    reply: str  # e.g. "250 2.1.5 Ok", without CRLF
    close: bool = False  # close the connection after sending it


@dataclass(slots=True)
class Transaction:
    sender: str
    recipients: list[str] = field(default_factory=list)  # those answered 2xx
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> reply line
    data: bytes | None = None  # None: no DATA accepted
    data_reply: str = ""


def _accept_all(*_args: object) -> Step | None:
    return None


@dataclass
class Script:
    """What to answer; a callable returning None means the default (accept)."""

    mail: Callable[[str], Step | None] = _accept_all
    rcpt: Callable[[str, str], Step | None] = _accept_all
    data: Callable[[str, list[str]], Step | None] = _accept_all

    @classmethod
    def by_recipient(cls, replies: dict[str, str], *, close_on_421: bool = True) -> Script:
        """RCPT answers per recipient address (lower-cased); others are accepted. A 421 closes
        the connection after it is sent, as RFC 5321 3.8 describes."""
        table = {k.lower(): v for k, v in replies.items()}

        def rcpt(_sender: str, recipient: str) -> Step | None:
            reply = table.get(recipient.lower())
            if reply is None:
                return None
            return Step(reply, close=close_on_421 and reply.startswith("421"))

        return cls(rcpt=rcpt)


class ScriptedSmtpServer:
    def __init__(self, script: Script | None = None, *, hostname: str = "scripted.test") -> None:
        self.script = script or Script()
        self.hostname = hostname
        self.transactions: list[Transaction] = []
        self.connections = 0
        self.commands: list[str] = []  # every command line received, in order
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listens on host:port (0: an ephemeral port). Any 127.0.0.0/8 address works on
        Linux, so a test can put two servers on one port number: a sender delivers to one
        `mx_port` and the DNS tells it which address."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Transaction]:
        """Waits until `count` transactions have ended (DATA answered, or given up)."""

        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.transactions) >= count)

        await asyncio.wait_for(enough(), timeout)
        return list(self.transactions)

    async def _record(self, tx: Transaction) -> None:
        async with self._changed:
            self.transactions.append(tx)
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        tx: Transaction | None = None
        try:
            writer.write(f"220 {self.hostname} ESMTP scripted\r\n".encode())
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    break
                if len(line) > MAX_LINE:
                    writer.write(b"500 5.5.2 Line too long\r\n")
                    break
                command = line.decode("utf-8", "replace").rstrip("\r\n")
                self.commands.append(command)
                verb = command.split(" ", 1)[0].upper()
                step, tx = await self._answer(verb, command, tx, reader, writer)
                writer.write(step.reply.encode() + b"\r\n")
                await writer.drain()
                if step.close or verb == "QUIT":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if tx is not None:
                await self._record(tx)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _answer(self, verb: str, command: str, tx: Transaction | None,
                      reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> tuple[Step, Transaction | None]:
        if verb == "EHLO":
            return Step(f"250-{self.hostname}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                        "250 ENHANCEDSTATUSCODES"), tx
        if verb == "HELO":
            return Step(f"250 {self.hostname}"), tx
        if verb == "NOOP":
            return Step("250 2.0.0 Ok"), tx
        if verb == "QUIT":
            return Step("221 2.0.0 Bye"), tx
        if verb == "RSET":
            if tx is not None:
                await self._record(tx)
            return Step("250 2.0.0 Ok"), None
        if verb == "MAIL":
            sender = _path(command)
            step = self.script.mail(sender) or Step("250 2.1.0 Ok")
            return step, Transaction(sender) if step.reply.startswith("2") else tx
        if verb == "RCPT":
            if tx is None:
                return Step("503 5.5.1 Need MAIL"), tx
            if len(tx.recipients) >= MAX_RECIPIENTS:
                return Step("452 4.5.3 Too many recipients"), tx
            recipient = _path(command)
            step = self.script.rcpt(tx.sender, recipient) or Step("250 2.1.5 Ok")
            if step.reply.startswith("2"):
                tx.recipients.append(recipient)
            else:
                tx.refused[recipient] = step.reply
            return step, tx
        if verb == "DATA":
            if tx is None or not tx.recipients:
                return Step("554 5.5.1 No valid recipients"), tx
            return await self._data(tx, reader, writer), None
        return Step("502 5.5.2 Command not implemented"), tx

    async def _data(self, tx: Transaction, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> Step:
        writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        await writer.drain()
        body = bytearray()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("connection closed in DATA")
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]  # RFC 5321 4.5.2 transparency
            if len(body) + len(line) <= MAX_BODY:
                body += line
        step = self.script.data(tx.sender, tx.recipients) or Step("250 2.0.0 Ok: queued")
        tx.data = bytes(body) if step.reply.startswith("2") else None
        tx.data_reply = step.reply
        await self._record(tx)
        return step


def _path(command: str) -> str:
    """The address in "MAIL FROM:<a@b> SIZE=1" / "RCPT TO:<c@d>"."""
    _, _, rest = command.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1:rest.find(">")] if ">" in rest else rest[1:]
    return rest.split(" ", 1)[0]


@asynccontextmanager
async def scripted_smtp(script: Script | None = None, *, hostname: str = "scripted.test",
                        host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[ScriptedSmtpServer]:
    server = ScriptedSmtpServer(script, hostname=hostname)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.stop()
