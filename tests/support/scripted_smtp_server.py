"""A scripted receiving SMTP server on loopback, for traffic-shaping tests.

It speaks just enough SMTP (RFC 5321: greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT)
for mailprime's client, runs in the test's event loop, and records what a provider would see:
every connection with its peer (source) address and the messages it carried, and the most
connections open at once. Its script throttles like a provider: the first `throttle_greetings`
connections get a 421 greeting, the first `throttle_messages` MAIL commands a 421 4.7.0 (then
the connection is closed, as RFC 5321 3.8 says a 421 does), later ones 250.
Limits: lines of at most 1000 octets (RFC 5321 4.5.3.1.6), messages of at most 1 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

MAX_LINE = 1000
MAX_MESSAGE = 1024 * 1024


@dataclass
class ReceivedMessage:
    sender: str
    recipients: list[str]
    peer: str  # the client's source address
    connection: int  # index into ScriptedSmtpServer.connections


@dataclass
class ConnectionRecord:
    peer: str
    messages: int = 0
    domains: set[str] = field(default_factory=set)  # recipient domains carried


class ScriptedSmtpServer:
    def __init__(self, host: str = "127.0.0.1", *, throttle_messages: int = 0,
                 throttle_greetings: int = 0,
                 throttle_reply: str = "421 4.7.0 Try again later, closing connection") -> None:
        self.host = host
        self.throttle_messages = throttle_messages
        self.throttle_greetings = throttle_greetings
        self.throttle_reply = throttle_reply
        self.connections: list[ConnectionRecord] = []
        self.messages: list[ReceivedMessage] = []
        self.throttled = 0  # 421s sent
        self.active = 0
        self.max_active = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._mail_commands = 0
        self._greetings = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> ScriptedSmtpServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, limit=MAX_LINE + 2)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> ScriptedSmtpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        record = ConnectionRecord(peer=str(writer.get_extra_info("peername")[0]))
        self.connections.append(record)
        try:
            await self._session(reader, writer, record, len(self.connections) - 1)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            self.active -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       record: ConnectionRecord, index: int) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        self._greetings += 1
        if self._greetings <= self.throttle_greetings:
            self.throttled += 1
            say("421 4.7.0 Too many connections, try again later")
            await writer.drain()
            return
        say("220 scripted.test ESMTP")
        sender: str | None = None
        recipients: list[str] = []
        while True:
            await writer.drain()
            raw = await reader.readuntil(b"\n")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                say("250 scripted.test")
            elif verb == "MAIL":
                self._mail_commands += 1
                if self._mail_commands <= self.throttle_messages:
                    self.throttled += 1
                    say(self.throttle_reply)
                    await writer.drain()
                    return
                sender, recipients = _address(line), []
                say("250 2.1.0 ok")
            elif verb == "RCPT":
                recipients.append(_address(line))
                say("250 2.1.5 ok")
            elif verb == "DATA":
                say("354 go ahead")
                await writer.drain()
                size = 0
                while (chunk := await reader.readuntil(b"\n")) != b".\r\n":
                    size += len(chunk)
                    if size > MAX_MESSAGE:
                        say("552 5.3.4 too big")
                        return
                assert sender is not None
                self.messages.append(ReceivedMessage(sender, recipients, record.peer, index))
                record.messages += 1
                record.domains.update(r.rpartition("@")[2] for r in recipients)
                say("250 2.0.0 queued")
            elif verb in ("RSET", "NOOP"):
                say("250 2.0.0 ok")
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                await writer.drain()
                return
            else:
                say("500 5.5.2 unknown command")


def _address(line: str) -> str:
    """The address inside <...> of a MAIL or RCPT line (parameters after it ignored)."""
    start, end = line.find("<"), line.find(">")
    return line[start + 1:end] if 0 <= start < end else ""


__all__ = ["ConnectionRecord", "ReceivedMessage", "ScriptedSmtpServer"]
