"""asyncio driver of the IMAP server core: sockets, TLS, timeouts, IDLE and the per-IP cap.

    listener = await serve_imap(handler, name="imap", host="127.0.0.1", port=0,
                                tls_mode="starttls", ssl_context=ctx, limits=Limits(),
                                idle_timeout=1800, max_connections_per_ip=20,
                                allow_plaintext_login=False, reuse_port=False)
    ... listener.port ...
    await listener.drain(10.0)    # stop accepting, let sessions finish, then BYE the rest

Theory of operation. Each accepted socket gets a `StreamChannel` and a task running
`_Connection.run`: greet, then loop "take the core's next event; NEED_DATA: flush what is
written and read more; else hand the event to the session and write each response it yields".
Pipelined commands cost one read, and their answers one write. Responses go through
`ServerConnection.send`; a `StreamedLiteral` segment (a large body) is copied from its source
chunk by chunk, so memory stays bounded. The session's decisions reach the core here:
  * after every event, the session's `state` and `utf8` are copied into the core;
  * a literal inside a command (`LiteralRequest`) is accepted here: the core bounds its size;
  * APPEND: the session's first Continuation accepts the literal (`accept_literal`), a Tagged
    refuses it (`reject_literal`); nothing else may be sent in its place;
  * AUTHENTICATE: a Continuation is a SASL challenge (`start_authenticate`), the Tagged ends
    the exchange (`end_authenticate`);
  * IDLE: after the "+ idling" Continuation the core expects DONE (`start_idle`) and the driver
    waits for the client and for `session.wait_for_change()` at once, writing
    `session.idle_updates()` whenever the latter fires (RFC 2177);
  * STARTTLS: after a tagged OK the handshake runs on the same channel (bytes pipelined behind
    the command were dropped by the core), then `starttls_done` and `session.on_tls`.
A read waits at most `idle_timeout` (RFC 9051 5.4: at least 30 minutes), then `* BYE`.
`drain` interrupts idle readers, which answer `* BYE` (RFC 9051 7.1.5); a session busy in a
command finishes it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from mailprime.net.channel import StreamChannel
from mailprime.net.imap_handler import ImapHandler, ImapSession, LiteralSource, PeerInfo
from mailprime.net.listener import Listener, check_tls_mode, is_loopback
from mailprime.proto.imap.server import ServerConnection
from mailprime.proto.imap.types import (
    NEED_DATA,
    Append,
    AppendEnd,
    Authenticate,
    AuthenticateData,
    BadCommand,
    CommandReceived,
    ConnectionClosed,
    Continuation,
    Event,
    Idle,
    IdleDone,
    Limits,
    LiteralRequest,
    Response,
    ResponseCode,
    ResponseStatus,
    StartTls,
    State,
    StreamedLiteral,
    Tagged,
    WireSegment,
    bye,
    no,
)

log = logging.getLogger(__name__)

_FLUSH_AT = 64 * 1024  # buffered response octets written before the batch ends


@dataclass(frozen=True, slots=True)
class _Config:
    name: str
    implicit_tls: bool
    ssl_context: ssl.SSLContext | None
    starttls: bool  # STARTTLS offered (a "starttls" listener)
    limits: Limits
    idle_timeout: float
    max_connections_per_ip: int
    plaintext_login: bool  # allow_plaintext_login and a loopback listener


class _Closing(Exception):
    """The connection must end now (TLS handshake failed, a literal could not be streamed)."""


class _Connection:
    """One client: the event loop described in the module docstring."""

    def __init__(self, config: _Config, channel: StreamChannel, session: ImapSession, tls: bool) -> None:
        self._config = config
        self._channel = channel
        self._session = session
        self._tls = tls
        self._core = ServerConnection(config.limits)
        # Response octets not yet written: the pieces as the core made them (a message's octets
        # are one of them, uncopied), joined once when written.
        self._out: list[bytes] = []
        self._out_size = 0
        self._stopping = False
        self._idling = False
        self._authenticating = ""  # the AUTHENTICATE tag while a SASL exchange runs
        self.received = 0
        self.sent = 0

    def stop(self) -> None:
        """Asks the session to end with `* BYE` as soon as it waits for the client."""
        self._stopping = True
        self._channel.interrupt()

    async def run(self) -> None:
        core, session = self._core, self._session
        try:
            await self._send(await session.greeting())
            if session.state is not core.state:  # e.g. a PREAUTH greeting
                core.set_state(session.state)
            while session.state is not State.LOGOUT:
                event = core.next_event()
                if event is NEED_DATA:
                    await self._flush()
                    if not await self._receive():
                        break
                    continue
                if isinstance(event, ConnectionClosed):
                    break
                await self._handle(event)
        except _Closing as exc:
            log.debug("imap %s: closing: %s", self._config.name, exc)
        except Exception:
            log.exception("imap %s: session failed", self._config.name)
            with contextlib.suppress(Exception):
                await self._send(bye("Internal server error, closing"))
        finally:
            try:
                with contextlib.suppress(Exception):
                    await self._flush()
                await session.on_close(self.received, self.sent)
            finally:
                self._channel.close()

    # Reading ----------------------------------------------------------------------------------

    async def _receive(self) -> bool:
        """Feeds the core what the client sends next; False when the session must end."""
        if self._stopping:
            await self._say_bye("Server shutting down")
            return False
        try:
            async with asyncio.timeout(self._config.idle_timeout):
                data = await (self._idle_read() if self._idling else self._channel.read())
        except TimeoutError:  # RFC 9051 5.4: the autologout timer
            await self._say_bye("Autologout; idle for too long")
            return False
        if self._session.state is State.LOGOUT:  # an IDLE update ended the session
            await self._flush()
            return False
        if data is None or self._stopping:
            await self._say_bye("Server shutting down")
            return False
        self.received += len(data)
        self._core.receive_data(data)
        return True

    async def _idle_read(self) -> bytes | None:
        """While IDLE: the client's next bytes, writing the session's updates meanwhile."""
        read = asyncio.create_task(self._channel.read())
        try:
            while True:
                change = asyncio.create_task(self._session.wait_for_change())
                try:
                    done, _ = await asyncio.wait({read, change}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not change.done():
                        change.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await change
                if read in done:
                    return read.result()
                async for response in self._session.idle_updates():
                    await self._send(response)
                await self._flush()
                if self._session.state is State.LOGOUT:
                    return b""
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read

    # Writing ----------------------------------------------------------------------------------

    async def _send(self, response: Response) -> None:
        rest = self._buffer(response)
        if rest or self._out_size >= _FLUSH_AT:
            await self._write_rest(rest)

    def _buffer(self, response: Response) -> list[WireSegment]:
        """Queues `response`'s octets; returns its segments from the first streamed literal on
        (usually none). No await: a FETCH of a thousand small messages queues a thousand
        responses without suspending for each."""
        segments = self._core.send(response)
        for index, segment in enumerate(segments):
            if isinstance(segment, StreamedLiteral):
                return segments[index:]
            self._out.append(segment)
            self._out_size += len(segment)
        return []

    async def _write_rest(self, rest: list[WireSegment]) -> None:
        """Writes what `_buffer` queued when it is enough or a literal must stream, then the
        segments it left."""
        for segment in rest:
            if isinstance(segment, StreamedLiteral):
                await self._flush()
                await self._stream(segment)
            else:
                self._out.append(segment)
                self._out_size += len(segment)
        if self._out_size >= _FLUSH_AT:
            await self._flush()

    def _queue(self, data: bytes) -> None:
        """Octets the core returned outside `send` (literal continuations and refusals)."""
        if data:
            self._out.append(data)
            self._out_size += len(data)

    async def _stream(self, literal: StreamedLiteral) -> None:
        source = literal.source
        if not isinstance(source, LiteralSource):
            raise TypeError(f"a StreamedLiteral source needs chunks(), not {type(source).__name__}")
        remaining = literal.size
        try:
            async for chunk in source.chunks():
                piece = chunk[:remaining]
                await self._write(piece)
                remaining -= len(piece)
                if not remaining:
                    break
        except _Closing:
            raise
        except Exception as exc:  # e.g. the message was expunged and its blob released
            raise _Closing(f"streamed literal failed after {literal.size - remaining} octets: {exc}") from exc
        if remaining:  # the octet count is on the wire already: the stream cannot recover
            raise _Closing(f"streamed literal ended {remaining} octets short")

    async def _flush(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            await self._write(data)

    async def _write(self, data: bytes) -> None:
        """A write that waits at most `idle_timeout` for the client to read (a client that
        stops reading must not hold a session, and a streamed body, forever)."""
        try:
            async with asyncio.timeout(self._config.idle_timeout):
                await self._channel.write(data)
        except TimeoutError as exc:
            raise _Closing("the client stopped reading") from exc
        self.sent += len(data)

    async def _say_bye(self, text: str) -> None:
        await self._send(bye(text))
        await self._flush()

    # Events -----------------------------------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        core, session = self._core, self._session
        if isinstance(event, LiteralRequest):
            # A literal inside a command (a password, a search string): the core bounds its
            # size (Limits.max_literal), so it is taken; the command is judged once complete.
            self._queue(core.accept_literal())
            return
        self._idling = False  # whatever the core reports while idling (DONE, BAD) ends IDLE
        if isinstance(event, BadCommand):
            self._authenticating = ""  # the core ended a SASL exchange on a bad line itself
        command = event.command if isinstance(event, CommandReceived) else None
        tag = _tag_of(event) or self._authenticating
        append_pending = isinstance(command, Append)
        continued = False
        tagged: Tagged | None = None
        try:
            async for response in session.respond(event):
                if append_pending and isinstance(response, Continuation | Tagged):
                    append_pending = False
                    if isinstance(response, Continuation):
                        self._queue(core.accept_literal(response.text or "Ready for literal data"))
                    else:
                        self._queue(core.reject_literal(response))
                        tagged = response
                    continue
                if isinstance(response, Continuation):
                    continued = True
                elif isinstance(response, Tagged):
                    tagged = response
                    if self._authenticating:
                        core.end_authenticate()
                        self._authenticating = ""
                rest = self._buffer(response)
                if rest or self._out_size >= _FLUSH_AT:
                    await self._write_rest(rest)
        except _Closing:
            raise
        except Exception:
            log.exception("imap %s: the session failed on %s", self._config.name, type(event).__name__)
            if tagged is None and tag:
                answer = no(tag, "Internal server error", ResponseCode("SERVERBUG"))
                if append_pending:
                    append_pending = False
                    self._queue(core.reject_literal(answer))
                else:
                    await self._send(answer)
        if append_pending:  # the session neither accepted nor refused: refuse (never hang)
            self._queue(core.reject_literal(no(tag, "APPEND not processed", ResponseCode("SERVERBUG"))))
        if session.utf8 and not core.utf8:
            core.enable_utf8()
        if session.state is not core.state:
            core.set_state(session.state)
        if continued and (isinstance(command, Authenticate) or isinstance(event, AuthenticateData)):
            self._authenticating = tag
            core.start_authenticate(tag)
        elif continued and isinstance(command, Idle):
            await self._flush()
            core.start_idle(tag)
            self._idling = True
        elif isinstance(command, StartTls):
            if tagged is not None and tagged.status is ResponseStatus.OK:
                await self._flush()
                await self._start_tls()
            core.starttls_done()

    async def _start_tls(self) -> None:
        ctx = self._config.ssl_context
        assert ctx is not None  # STARTTLS is only offered with a context
        try:
            await self._channel.start_tls(ctx, timeout=min(self._config.idle_timeout, 60.0))
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            raise _Closing(f"TLS handshake failed: {exc}") from exc
        self._tls = True
        await self._session.on_tls()


def _tag_of(event: Event) -> str:
    if isinstance(event, CommandReceived | AppendEnd | IdleDone):
        return event.tag
    return ""


ImapListener = Listener
"""What `serve_imap` returns: `port`, `active_sessions`, `close()`, `drain(timeout)`."""


async def serve_imap(
    handler: ImapHandler,
    *,
    name: str,
    host: str,
    port: int,
    tls_mode: str,
    ssl_context: ssl.SSLContext | None,
    limits: Limits,
    idle_timeout: float,
    max_connections_per_ip: int,
    allow_plaintext_login: bool,
    reuse_port: bool,
) -> ImapListener:
    """Binds and starts an IMAP listener. `tls_mode` is "none", "starttls" (RFC 9051 6.2.1) or
    "implicit" (RFC 8314, port 993 style). Passwords are taken after TLS, or in the clear only
    when `allow_plaintext_login` and `host` is a loopback address."""
    check_tls_mode(name, tls_mode, ssl_context)
    config = _Config(
        name=name,
        implicit_tls=tls_mode == "implicit",
        ssl_context=ssl_context,
        starttls=tls_mode == "starttls",
        limits=limits,
        idle_timeout=idle_timeout,
        max_connections_per_ip=max_connections_per_ip,
        plaintext_login=allow_plaintext_login and is_loopback(host),
    )
    tls = config.implicit_tls

    def start(channel: StreamChannel, peer: PeerInfo) -> _Connection:
        session = handler.new_session(peer, tls, starttls=config.starttls,
                                      plaintext_login=config.plaintext_login,
                                      literal_plus=config.limits.literal_plus)
        return _Connection(config, channel, session, tls)

    listener = Listener(
        protocol="imap", name=name, start=start, max_connections_per_ip=max_connections_per_ip,
        # RFC 9051 7.1.5: BYE instead of a greeting refuses the connection.
        refusal=b"* BYE [UNAVAILABLE] Too many connections from your address\r\n", log=log,
        # IMAP clients stay connected for hours: waiting for them to leave is pointless.
        stop_at_once=True,
    )
    await listener.bind(host, port, implicit_tls=ssl_context if tls else None,
                        handshake_timeout=min(idle_timeout, 60.0), reuse_port=reuse_port)
    return listener
