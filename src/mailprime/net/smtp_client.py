"""asyncio driver for the sans-IO SMTP client core: connect, greet, EHLO, STARTTLS, transactions.

    client = SmtpClient(helo_name="mx.sender.example", tls="opportunistic",
                        connect_timeout=30, command_timeout=300)
    session = await client.open("192.0.2.1", 25, server_name="mx.example.com")
    try:
        result = await session.send_message("bounce@sender.example",
                                            [RecipientSpec("a@example.com")], content)
        for outcome in result.outcomes(): ...
    finally:
        await session.close()

Theory of operation. A session owns one stream and one `ClientConnection`. Every exchange is
"write what the core encoded, then read until the core yields the reply to each command sent";
the core matches replies to commands, the driver only decides what to send next. Anything that
makes the connection unusable (connect failure, timeout, EOF, protocol violation, TLS failure,
421) raises a `SmtpClientError` subclass with a one-line reason naming the peer, and marks the
session broken so that `close()` only drops the socket. Replies that refuse a message or a
recipient are not errors: they come back in the `TransactionResult`.

Timeouts follow RFC 5321 4.5.3.2 with the two values the caller configures: `command_timeout`
for the greeting, EHLO, MAIL, RCPT, DATA, each BDAT and each write of message data (4.5.3.2.1-5
give 2 to 5 minutes), and `final_timeout` for the reply after the end of the message (4.5.3.2.6
gives 10 minutes, so it defaults to twice the command timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from mailprime.proto import LocalProtocolError, RemoteProtocolError
from mailprime.proto.smtp.client import (
    NEED_DATA,
    Bdat,
    ClientConnection,
    ClientState,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    Helo,
    LineEndNormaliser,
    Mail,
    Quit,
    Rcpt,
    ReplyReceived,
    Rset,
    StartTls,
)
from mailprime.proto.smtp.replies import Capabilities, ReplyLimits
from mailprime.proto.smtp.types import Reply

TlsPolicy = Literal["opportunistic", "required", "none"]
MessageContent = bytes | Iterable[bytes] | AsyncIterable[bytes]

READ_SIZE = 64 * 1024
# RFC 3030 leaves the chunk size to the client; 64 KiB keeps memory flat and syscalls few.
BDAT_CHUNK = 64 * 1024
# With PIPELINING, BDAT chunks go out without waiting; at most this many may await their reply,
# so that a refused chunk stops the stream early (RFC 3030 4.2) and replies cannot pile up.
BDAT_WINDOW = 8
# Time allowed for QUIT's 221 and the TLS close when closing: the peer may be gone.
CLOSE_TIMEOUT = 5.0


# Errors -----------------------------------------------------------------------------------


class SmtpClientError(Exception):
    """A session failed as a whole. `reason` is one line naming the peer, for logs and events;
    `reply` is the server's reply when one caused it (greeting, EHLO, STARTTLS, 421)."""

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class SmtpConnectError(SmtpClientError):
    """The TCP connection could not be made."""


class SmtpTimeoutError(SmtpClientError):
    """A connect, read or write exceeded its RFC 5321 4.5.3.2 timeout."""


class SmtpConnectionLost(SmtpClientError):
    """The peer closed or reset the connection mid-session."""


class SmtpProtocolError(SmtpClientError):
    """The peer broke the protocol (malformed or unexpected reply)."""


class SmtpTlsError(SmtpClientError):
    """TLS was required but not offered, refused, or the handshake failed. `kind` names the
    failure with its RFC 8460 4.3.2.1 result type (starttls-not-supported,
    certificate-host-mismatch, certificate-expired, certificate-not-trusted, validation-failure)
    so that TLS reports need not parse the reason."""

    def __init__(self, reason: str, reply: Reply | None = None,
                 kind: str = "validation-failure") -> None:
        super().__init__(reason, reply)
        self.kind = kind


class SmtpReplyError(SmtpClientError):
    """The server refused the session: greeting not 220, EHLO and HELO refused, or 421."""


# Results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    """One envelope recipient with its RFC 3461 parameters (sent only when DSN is offered)."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


class DeliveryOutcome(enum.Enum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"  # 4xx: try again later
    PERMANENT = "permanent"  # 5xx: bounce


@dataclass(frozen=True, slots=True)
class RecipientResult:
    address: str
    outcome: DeliveryOutcome
    reply: Reply  # the reply that decided it


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The replies of one mail transaction (RFC 5321 3.3).

    `rcpt_replies` has one reply per recipient, in order. When MAIL was refused they are the
    pipelined RCPTs' replies (typically 503) or, without pipelining, copies of the MAIL reply;
    `outcomes()` judges by the MAIL reply either way. `data_reply` is None when no recipient was
    accepted. `sent` is False when the client refused the message itself (SMTPUTF8 or SIZE not
    possible with this server) and the replies are local ones.
    """

    mail_reply: Reply
    rcpt_replies: tuple[Reply, ...]
    data_reply: Reply | None
    recipients: tuple[str, ...]  # the addresses, in the order of rcpt_replies
    sent: bool = True

    def outcomes(self) -> tuple[RecipientResult, ...]:
        """Each recipient's final outcome: accepted at RCPT and 2xx after the data: delivered;
        otherwise the deciding reply's class: 4xx transient, 5xx permanent."""
        out: list[RecipientResult] = []
        for address, rcpt in zip(self.recipients, self.rcpt_replies, strict=True):
            if not self.mail_reply.is_positive:
                decider = self.mail_reply
            elif not rcpt.is_positive:
                decider = rcpt
            elif self.data_reply is None:
                # Cannot happen with a consistent result; never call it delivered.
                out.append(RecipientResult(address, DeliveryOutcome.TRANSIENT, rcpt))
                continue
            else:
                decider = self.data_reply
            out.append(RecipientResult(address, classify(decider), decider))
        return tuple(out)


def classify(reply: Reply) -> DeliveryOutcome:
    """2xx delivered, 5xx permanent, anything else (4xx, or a stray 3xx) transient."""
    if 200 <= reply.code < 300:
        return DeliveryOutcome.DELIVERED
    if reply.is_permanent:
        return DeliveryOutcome.PERMANENT
    return DeliveryOutcome.TRANSIENT


# Client -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpClient:
    """Connection settings shared by every session a delivery worker opens."""

    helo_name: str
    tls: TlsPolicy = "opportunistic"
    # None: a default context, verifying in "required" mode and not in "opportunistic" mode
    # (RFC 7435: unauthenticated encryption beats plaintext). A context given is used as is.
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    final_timeout: float | None = None  # None: 2 x command_timeout (RFC 5321 4.5.3.2.6)
    limits: ReplyLimits | None = None

    async def open(self, host_ip: str, port: int, *, server_name: str | None = None,
                   source_ip: str | None = None, tls: TlsPolicy | None = None,
                   ssl_context: ssl.SSLContext | None = None) -> SmtpClientSession:
        """Connects (from `source_ip` when given), reads the greeting, says EHLO (HELO if
        refused), and upgrades with STARTTLS per the TLS policy. In opportunistic mode a failed
        TLS handshake is followed by one plaintext reconnection (`session.tls_fallback` says
        why). `tls` and `ssl_context` override the client's own for this session (a route
        whose MTA-STS policy demands verified TLS, RFC 8461 4.2)."""
        policy = tls or self.tls
        try:
            return await self._open(host_ip, port, server_name, policy, source_ip=source_ip,
                                   ssl_context=ssl_context)
        except SmtpTlsError as exc:
            if policy != "opportunistic":
                raise
            session = await self._open(host_ip, port, server_name, "none", source_ip=source_ip)
            session.tls_fallback = exc.reason
            return session

    async def _open(
        self, host_ip: str, port: int, server_name: str | None, tls: TlsPolicy, *,
        source_ip: str | None = None, ssl_context: ssl.SSLContext | None = None,
    ) -> SmtpClientSession:
        label = f"{server_name}[{host_ip}]:{port}" if server_name else f"[{host_ip}]:{port}"
        local_addr = (source_ip, 0) if source_ip else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host_ip, port, limit=READ_SIZE,
                                                               local_addr=local_addr)
        except TimeoutError:
            raise SmtpConnectError(
                f"connect to {host_ip}:{port}: timed out after {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise SmtpConnectError(f"connect to {host_ip}:{port}: {_os_reason(exc)}") from exc
        session = SmtpClientSession(
            reader, writer, ClientConnection(self.helo_name, self.limits),
            peer=(host_ip, port), description=label,
            command_timeout=self.command_timeout,
            final_timeout=self.final_timeout or 2 * self.command_timeout,
        )
        try:
            await session._handshake(tls, ssl_context or self._context(tls), server_name)
        except BaseException as exc:
            if not isinstance(exc, SmtpClientError):
                session._broken = True  # cancelled or our bug: no QUIT, just drop the socket
            await session.close()
            raise
        return session

    def _context(self, tls: TlsPolicy) -> ssl.SSLContext | None:
        if tls == "none":
            return None
        if self.ssl_context is not None:
            return self.ssl_context
        return _default_context(verify=tls == "required")


@functools.cache
def _default_context(*, verify: bool) -> ssl.SSLContext:
    """Built once: loading the system trust store costs more than a handshake."""
    if verify:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_session(
    host_ip: str,
    port: int,
    *,
    helo_name: str,
    tls: TlsPolicy = "opportunistic",
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 30.0,
    command_timeout: float = 300.0,
    final_timeout: float | None = None,
    server_name: str | None = None,
) -> SmtpClientSession:
    """One-shot form of `SmtpClient(...).open(...)`."""
    client = SmtpClient(
        helo_name=helo_name, tls=tls, ssl_context=ssl_context, connect_timeout=connect_timeout,
        command_timeout=command_timeout, final_timeout=final_timeout,
    )
    return await client.open(host_ip, port, server_name=server_name)


# Session ----------------------------------------------------------------------------------


class SmtpClientSession:
    """An open, greeted SMTP session; may carry any number of transactions in sequence."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: ClientConnection,
        *,
        peer: tuple[str, int],
        description: str,
        command_timeout: float,
        final_timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self.peer = peer
        self.description = description  # "name[ip]:port", for logs and events
        self.greeting = Reply(0)
        self.tls_active = False
        self.tls_fallback = ""  # why opportunistic TLS was not used, if it failed
        self._command_timeout = command_timeout
        self._final_timeout = final_timeout
        self._broken = False
        self._closed = False
        self._busy = False

    @property
    def capabilities(self) -> Capabilities:
        return self._conn.capabilities

    def is_usable(self) -> bool:
        """Connected, healthy and able to start another transaction."""
        return (
            not self._broken
            and not self._closed
            and not self._busy
            and self._conn.state in (ClientState.READY, ClientState.MAIL, ClientState.BDAT)
        )

    async def __aenter__(self) -> SmtpClientSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Low-level exchange --------------------------------------------------------------------

    def _fail(self, exc: SmtpClientError) -> SmtpClientError:
        self._broken = True
        return exc

    async def _write(self, data: bytes, what: str) -> None:
        try:
            self._writer.write(data)
            async with asyncio.timeout(self._command_timeout):
                await self._writer.drain()
        except TimeoutError:
            raise self._fail(SmtpTimeoutError(
                f"{self.description}: timed out after {self._command_timeout:g}s writing {what}"
            )) from None
        except (OSError, ssl.SSLError) as exc:  # ConnectionError is an OSError
            raise self._fail(SmtpConnectionLost(f"{self.description}: connection lost writing {what}: "
                                                f"{_os_reason(exc)}")) from exc

    async def _send(self, *commands: Command) -> None:
        """Encodes and writes commands in one write (a pipeline group when more than one)."""
        wire = b"".join(self._conn.send(c) for c in commands)
        await self._write(wire, _names(commands))

    async def _reply(self, what: str, timeout: float | None = None) -> ReplyReceived:
        """Reads until the core yields the next reply. Bounded by the timeout and the core's
        line and line-count limits (a peer dribbling bytes still hits the deadline)."""
        limit = self._command_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                while True:
                    event = self._conn.next_event()
                    if event is NEED_DATA:
                        self._conn.receive_data(await self._reader.read(READ_SIZE))
                        continue
                    if isinstance(event, ConnectionClosed):
                        raise self._fail(SmtpConnectionLost(
                            f"{self.description}: connection closed by peer waiting for reply to {what}"
                        ))
                    assert isinstance(event, ReplyReceived)
                    if event.reply.code == 421:
                        raise self._fail(SmtpReplyError(
                            f"{self.description}: service closing after {what}: {event.reply.one_line()}",
                            event.reply,
                        ))
                    return event
        except TimeoutError:
            raise self._fail(SmtpTimeoutError(
                f"{self.description}: timed out after {limit:g}s waiting for reply to {what}"
            )) from None
        except RemoteProtocolError as exc:
            raise self._fail(
                SmtpProtocolError(f"{self.description}: protocol error after {what}: {exc}")
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise self._fail(SmtpConnectionLost(
                f"{self.description}: connection lost waiting for reply to {what}: {_os_reason(exc)}"
            )) from exc

    async def _command(self, command: Command, what: str) -> Reply:
        await self._send(command)
        return (await self._reply(what)).reply

    # Session set-up ------------------------------------------------------------------------

    async def _handshake(self, tls: TlsPolicy, ctx: ssl.SSLContext | None, server_name: str | None) -> None:
        greeting = (await self._reply("connect")).reply
        self.greeting = greeting
        if greeting.code != 220:
            raise SmtpReplyError(f"{self.description}: greeting: {greeting.one_line()}", greeting)
        await self._hello()
        if tls == "none" or ctx is None:
            return
        if not self.capabilities.starttls:
            if tls == "required":
                raise SmtpTlsError(f"{self.description}: TLS required but STARTTLS not offered",
                                   kind="starttls-not-supported")
            return
        reply = await self._command(StartTls(), "STARTTLS")
        if reply.code != 220:
            if tls == "required":
                raise SmtpTlsError(f"{self.description}: STARTTLS refused: {reply.one_line()}", reply,
                                   kind="starttls-not-supported")
            # RFC 3207 4: after a refused STARTTLS the session goes on in plaintext.
            self.tls_fallback = f"STARTTLS refused: {reply.one_line()}"
            return
        try:
            async with asyncio.timeout(self._command_timeout):
                await self._writer.start_tls(ctx, server_hostname=server_name or self.peer[0])
        except TimeoutError:
            raise self._fail(SmtpTlsError(f"{self.description}: TLS handshake timed out")) from None
        except (OSError, ssl.SSLError) as exc:
            raise self._fail(
                SmtpTlsError(f"{self.description}: TLS handshake failed: {_os_reason(exc)}",
                             kind=_tls_failure_kind(exc))
            ) from exc
        self.tls_active = True
        await self._hello()  # RFC 3207 4.2: forget the pre-TLS capabilities and ask again

    async def _hello(self) -> None:
        reply = await self._command(Ehlo(), "EHLO")
        if reply.code == 250:
            return
        # RFC 5321 3.2: a server that does not speak ESMTP refuses EHLO; fall back to HELO.
        helo = await self._command(Helo(), "HELO")
        if helo.code != 250:
            raise SmtpReplyError(
                f"{self.description}: EHLO/HELO refused: {reply.one_line()} / {helo.one_line()}", helo
            )

    # Transactions --------------------------------------------------------------------------

    async def send_message(
        self,
        sender: str,
        recipients: Sequence[RecipientSpec],
        content: MessageContent,
        *,
        smtputf8: bool = False,
        body_8bit: bool = False,
        ret: str | None = None,
        envid: str | None = None,
        size: int | None = None,
        require_tls: bool = False,
    ) -> TransactionResult:
        """One mail transaction. `content` is the whole message (CRLF or LF line ends; bare LF
        is converted) as bytes or as chunks, sync or async. `size` is announced with SIZE when
        offered (computed for bytes content). `require_tls`: the message carries REQUIRETLS
        (RFC 8689), passed on as the MAIL parameter; a session without TLS or a server that
        does not offer it gets the local refusal 550 5.7.30 (RFC 8689 5). Raises SmtpClientError
        if the session fails; refusals come back as replies in the result."""
        if not recipients:
            raise ValueError("a transaction needs at least one recipient")
        if self._closed or self._broken or self._busy:
            raise SmtpClientError(f"{self.description}: session is not usable")
        self._busy = True
        try:
            return await self._transaction(
                sender, recipients, content, smtputf8=smtputf8, body_8bit=body_8bit,
                ret=ret, envid=envid, size=size, require_tls=require_tls,
            )
        except LocalProtocolError:
            self._broken = True  # our own bug: the core's state can no longer be trusted
            raise
        except asyncio.CancelledError:
            self._broken = True  # a half-written command may be on the wire
            raise
        finally:
            self._busy = False

    async def _transaction(
        self,
        sender: str,
        recipients: Sequence[RecipientSpec],
        content: MessageContent,
        *,
        smtputf8: bool,
        body_8bit: bool,
        ret: str | None,
        envid: str | None,
        size: int | None,
        require_tls: bool = False,
    ) -> TransactionResult:
        caps = self.capabilities
        addresses = tuple(r.address for r in recipients)
        # RFC 6531 3.4: a non-ASCII envelope address needs SMTPUTF8 whatever the caller said.
        smtputf8 = smtputf8 or not all(a.isascii() for a in (sender, *addresses))
        if size is None and isinstance(content, bytes):
            size = len(content)
        refusal = _local_refusal(caps, smtputf8=smtputf8, size=size,
                                 require_tls=require_tls, tls_active=self.tls_active)
        if refusal is not None:
            return TransactionResult(refusal, (refusal,) * len(recipients), None, addresses, sent=False)
        mail = Mail(
            sender,
            size=size if caps.size and size is not None else None,
            # RFC 6152: declare 8bit only where offered; elsewhere send as is (as Postfix does)
            # and let the receiver judge; downgrading is the message layer's job.
            body="8BITMIME" if body_8bit and caps.eightbitmime else None,
            smtputf8=smtputf8,
            ret=ret if caps.dsn else None,
            envid=envid if caps.dsn else None,
            requiretls=require_tls,
        )
        rcpts = [
            Rcpt(r.address, r.notify if caps.dsn else (), r.orcpt if caps.dsn else None) for r in recipients
        ]
        # A transaction left open by an earlier failure must be reset first (RFC 5321 4.1.1.5).
        needs_rset = self._conn.state is not ClientState.READY
        chunking = caps.chunking
        if caps.pipelining:
            # RFC 2920 3.1: RSET, MAIL and RCPT may be grouped; DATA ends the group.
            group: list[Command] = [*([Rset()] if needs_rset else []), mail, *rcpts]
            if not chunking:
                group.append(Data())
            await self._send(*group)
            if needs_rset:
                await self._reply("RSET")
            mail_reply = (await self._reply("MAIL FROM")).reply
            rcpt_replies = [(await self._reply("RCPT TO")).reply for _ in rcpts]
        else:
            if needs_rset:
                await self._command(Rset(), "RSET")
            mail_reply = await self._command(mail, "MAIL FROM")
            if not mail_reply.is_positive:
                return TransactionResult(mail_reply, (mail_reply,) * len(rcpts), None, addresses)
            rcpt_replies = [await self._command(r, "RCPT TO") for r in rcpts]
        accepted = mail_reply.is_positive and any(r.is_positive for r in rcpt_replies)
        if chunking:
            data_reply = await self._send_bdat(content) if accepted else None
        else:
            data_reply = await self._send_data(content, accepted, pipelined=caps.pipelining)
        return TransactionResult(mail_reply, tuple(rcpt_replies), data_reply, addresses)

    async def _send_data(self, content: MessageContent, accepted: bool, *, pipelined: bool) -> Reply | None:
        if not pipelined:
            if not accepted:
                return None
            await self._send(Data())
        reply = (await self._reply("DATA")).reply
        if reply.code != 354:
            return reply if accepted else None
        if not accepted:
            # RFC 2920 3.1: DATA got 354 although no recipient was accepted; send an empty
            # message so the server's final reply ends the transaction, and ignore that reply.
            await self._write(self._conn.send_message_data(b""), "end of data")
            await self._reply("end of data", self._final_timeout)
            return None
        async with contextlib.aclosing(_pieces(content)) as pieces:
            async for piece in pieces:
                wire = self._conn.send_message_data(piece, final=False)
                if wire:
                    await self._write(wire, "message data")
        await self._write(self._conn.send_message_data(b""), "end of data")
        return (await self._reply("end of data", self._final_timeout)).reply

    async def _send_bdat(self, content: MessageContent) -> Reply:
        """Streams the message as BDAT chunks of BDAT_CHUNK octets, the last one with LAST.

        Line ends are normalised as for DATA, but nothing is dot-stuffed (RFC 3030 2: the octets
        go as they are). With PIPELINING up to BDAT_WINDOW chunks await their replies; the first
        refusal stops the stream (RFC 3030 4.2: no BDAT after a failed one) and is the data
        reply; the transaction is then left open and reset before the next one.
        """
        window = BDAT_WINDOW if self.capabilities.pipelining else 1
        outstanding = 0  # BDATs written whose replies are unread
        last_sent = False
        failure: Reply | None = None
        final = Reply(0)

        async def collect() -> None:
            nonlocal outstanding, failure, final
            timeout = self._final_timeout if last_sent and outstanding == 1 else self._command_timeout
            final = (await self._reply("BDAT", timeout)).reply
            outstanding -= 1
            if not final.is_positive and failure is None:
                failure = final

        async def send_chunk(chunk: bytes, last: bool) -> None:
            nonlocal outstanding, last_sent
            while outstanding >= window:
                await collect()
            if failure is None:
                await self._send(Bdat(chunk, last))
                outstanding += 1
                last_sent = last

        normaliser = LineEndNormaliser()
        buffer = bytearray()
        async with contextlib.aclosing(_pieces(content)) as pieces:
            async for piece in pieces:
                buffer += normaliser.feed(piece)
                while len(buffer) >= BDAT_CHUNK and failure is None:
                    await send_chunk(bytes(buffer[:BDAT_CHUNK]), False)
                    del buffer[:BDAT_CHUNK]
                if failure is not None:
                    break
        if failure is None:
            buffer += normaliser.finish()
            await send_chunk(bytes(buffer), True)
        while outstanding:  # bounded: one reply per BDAT written
            await collect()
        return failure or final

    # Closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Says QUIT when the session is sane, then closes; never raises for a vanished peer."""
        if self._closed:
            return
        self._closed = True
        if self._busy:
            self._broken = True  # a transaction is mid-flight in another task: no QUIT into it
        try:
            if not self._broken and self._conn.state not in (ClientState.CLOSED, ClientState.DATA_BODY):
                self._command_timeout = min(self._command_timeout, CLOSE_TIMEOUT)
                await self._send(Quit())
                await self._reply("QUIT")
        except (SmtpClientError, LocalProtocolError):
            pass  # the peer is gone or the state forbids QUIT: dropping the socket is enough
        finally:
            await self._close_transport()

    async def _close_transport(self) -> None:
        writer = self._writer
        try:
            writer.close()
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await writer.wait_closed()
        except (OSError, ssl.SSLError, TimeoutError):
            writer.transport.abort()


# Helpers ----------------------------------------------------------------------------------


def _local_refusal(caps: Capabilities, *, smtputf8: bool, size: int | None,
                   require_tls: bool = False, tls_active: bool = False) -> Reply | None:
    """Refusals decided without asking the server."""
    if require_tls and not (tls_active and caps.offers("REQUIRETLS")):
        # RFC 8689 4.2.1 / 5: a REQUIRETLS message never goes to a hop that cannot promise it.
        return Reply(550, "REQUIRETLS support required: the next hop does not offer it "
                          "(RFC 8689)", "5.7.30")
    if smtputf8 and not caps.smtputf8:
        # RFC 6531 3.4: a message that needs SMTPUTF8 must not go to a server without it.
        return Reply(553, "server does not support SMTPUTF8 (RFC 6531 3.4)", "5.6.7")
    if caps.max_size is not None and size is not None and size > caps.max_size:
        # RFC 1870 6: don't send what exceeds the server's declared fixed maximum.
        return Reply(552, f"message size {size} exceeds the server's fixed limit {caps.max_size}", "5.3.4")
    return None


async def _pieces(content: MessageContent) -> AsyncGenerator[bytes, None]:
    if isinstance(content, bytes | bytearray | memoryview):
        view = memoryview(content)
        for start in range(0, len(view), BDAT_CHUNK):
            yield bytes(view[start : start + BDAT_CHUNK])
    elif isinstance(content, AsyncIterable):
        async for piece in content:
            yield bytes(piece)
    else:
        for piece in content:
            yield bytes(piece)


# OpenSSL X509_V_ERR_* codes (x509_vfy.h) -> RFC 8460 4.3.2.1 result types.
_CERT_EXPIRED = frozenset({10, 12})  # CERT_HAS_EXPIRED, CRL_HAS_EXPIRED
_CERT_NOT_TRUSTED = frozenset({2, 18, 19, 20, 21, 27, 28})  # unknown issuer, self-signed, untrusted
_HOST_MISMATCH = frozenset({62})  # X509_V_ERR_HOSTNAME_MISMATCH


def _tls_failure_kind(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _HOST_MISMATCH:
            return "certificate-host-mismatch"
        if exc.verify_code in _CERT_EXPIRED:
            return "certificate-expired"
        if exc.verify_code in _CERT_NOT_TRUSTED:
            return "certificate-not-trusted"
    return "validation-failure"


def _names(commands: Sequence[Command]) -> str:
    names = {
        Mail: "MAIL FROM", Rcpt: "RCPT TO", Data: "DATA", Rset: "RSET", Quit: "QUIT",
        Ehlo: "EHLO", Helo: "HELO", StartTls: "STARTTLS", Bdat: "BDAT",
    }
    return "+".join(dict.fromkeys(names.get(type(c), type(c).__name__.upper()) for c in commands))


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        # asyncio words connect failures as "Connect call failed (addr)"; the errno says why.
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
