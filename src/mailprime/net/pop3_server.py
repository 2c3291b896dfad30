"""asyncio driver of the POP3 server core: sockets, TLS, timeouts, failed-login pacing and the
per-IP cap.

    listener = await serve_pop3(handler, name="pop3", host="127.0.0.1", port=0, tls_mode="starttls",
                                ssl_context=ctx, capabilities=Pop3Capabilities("mail.example"),
                                limits=Pop3Limits(), idle_timeout=600, max_connections_per_ip=20,
                                allow_plaintext_auth=False, auth_failure_delay=1.0,
                                reuse_port=False)
    ... listener.port ...
    await listener.drain(10.0)    # stop accepting, let sessions finish, then "-ERR [SYS/TEMP]"

Theory of operation. Each accepted socket gets a `StreamChannel` and a task running
`_Connection.run`: greet, then loop "read what arrived, feed `ServerConnection`, dispatch every
event to the `Pop3Session`, write all responses of the batch in one write", so pipelined commands
(RFC 2449 6.6) cost one read and one write per batch. Before each read the session's `on_idle`
may do work ahead of the next command (the POP3 service encodes the message a client that is
reading its maildrop in order will ask for next), while the client reads the last answer. RETR
and TOP stream: the session reads the stored message in pieces and pushes them through a
`_Sink`, which encodes them with the core (or takes a message encoded ahead) and writes whenever
64 KiB are pending, waiting (bounded by the idle timeout) while the client is slow to read;
memory stays bounded whatever the message size. A read waits at most
`idle_timeout` (RFC 1939 3: at least 10 minutes); then the connection closes silently and, as
after any other drop, nothing is deleted. A write waits as long for a client that stopped
reading, then the connection is aborted. One timer per connection keeps both bounds: it wakes
every `idle_timeout` and ends a read or write wait that began that long ago (a timeout context
per read and per write would cost more than the rest of a RETR's dispatch). A failed login is
answered only after a pause that doubles with each failure (domain.login_failures, as IMAP's),
and the core closes after `max_auth_failures`. `drain` wakes idle readers, which answer
"-ERR [SYS/TEMP] Server shutting down" and close without UPDATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from mailprime.domain.errors import DomainError
from mailprime.domain.login_failures import MAX_DELAY, FailurePolicy
from mailprime.net.channel import StreamChannel
from mailprime.net.listener import Listener, check_tls_mode, is_loopback
from mailprime.net.pop3_handler import PeerInfo, Pop3Handler, Pop3Session
from mailprime.proto.pop3.multiline import Piece
from mailprime.proto.pop3.server import (
    NEED_DATA,
    Authenticate,
    ConnectionClosed,
    Event,
    ProtocolViolation,
    Quit,
    Retrieve,
    ServerConnection,
    StartTls,
    State,
    Update,
)
from mailprime.proto.pop3.types import CONTENT_FOLLOWS, Pop3Capabilities, Pop3Limits, Reply

log = logging.getLogger(__name__)

_FLUSH_AT = 64 * 1024  # encoded message octets gathered before a write
# RFC 3206 4: SYS/TEMP, a condition that will pass.
_TOO_MANY = b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"


@dataclass(frozen=True, slots=True)
class _Config:
    name: str
    implicit_tls: bool
    ssl_context: ssl.SSLContext | None
    capabilities: Pop3Capabilities
    limits: Pop3Limits
    idle_timeout: float
    max_connections_per_ip: int
    plaintext_auth: bool  # allow_plaintext_auth and a loopback listener
    failures: FailurePolicy  # the pause after a failed login (the core counts them)

    def auth_allowed(self, tls: bool) -> bool:
        # RFC 2595 2.2 / RFC 8314 5.1: no passwords in the clear, except on loopback when configured.
        return tls or self.plaintext_auth


class _Closing(Exception):
    """The peer went away or stopped reading (TLS handshake failed, write timed out): just close."""


class _Sink:
    """Implements proto.pop3.types.ContentSink for one RETR or TOP response."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.started = False
        self.ended = False  # by write_encoded

    async def write(self, chunk: bytes) -> bool:
        connection = self._connection
        core = self._begin()
        if core.content_complete:
            return False
        connection.emit(core.send_content(chunk))
        if connection.pending >= _FLUSH_AT:
            await connection.flush()
        return not core.content_complete

    async def write_encoded(self, body: Sequence[Piece]) -> None:
        connection = self._connection
        for piece in self._begin().send_encoded(body):
            connection.emit(piece)
        self.ended = True

    def _begin(self) -> ServerConnection:
        """The core, once the +OK that opens the response is queued."""
        core = self._connection.core
        if not self.started:
            self._connection.emit(core.send(CONTENT_FOLLOWS))
            self.started = True
        return core


class _Connection:
    """One client: the read-feed-dispatch-write loop (see the module docstring)."""

    def __init__(self, config: _Config, channel: StreamChannel, session: Pop3Session, tls: bool) -> None:
        self._config = config
        self._channel = channel
        self._session = session
        self._stopping = False
        self._out: list[Piece] = []  # responses of the current batch, written together
        self.pending = 0  # octets in `_out`
        self.core = ServerConnection(config.capabilities, config.limits, tls_active=tls,
                                     auth_allowed=config.auth_allowed(tls))
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None  # loop time the current read or write began
        self._waiting_to_write = False
        self._timed_out = False
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, data: Piece) -> None:
        """Queues `data` for the next `flush`."""
        if data:
            self._out.append(data)
            self.pending += len(data)

    def stop(self) -> None:
        """Asks the session to end with "-ERR [SYS/TEMP]" as soon as it is between commands."""
        self._stopping = True
        self._channel.interrupt()

    async def run(self) -> None:
        core, hostname = self.core, self._config.capabilities.hostname
        self._timer = self._loop.call_later(self._config.idle_timeout, self._check_idle)
        try:
            greeting = await self._session.on_connect()
            self.emit(core.send(greeting or Reply.positive(f"{hostname} POP3 server ready")))
            await self.flush()
            while not core.must_close:
                self._session.on_idle()
                self._waiting_since = self._loop.time()
                data = await self._channel.read()
                self._waiting_since = None
                if self._timed_out:  # RFC 1939 3: close without a response and without UPDATE
                    log.debug("pop3 %s: idle timeout", self._config.name)
                    break
                if data is None or self._stopping:
                    self.emit(core.shutdown(Reply.negative("Server shutting down", "SYS/TEMP")))
                    await self.flush()
                    break
                core.receive_data(data)
                await self._process()
                await self.flush()
        except _Closing as exc:
            log.debug("pop3 %s: closing: %s", self._config.name, exc)
        except Exception:
            log.exception("pop3 %s: session failed", self._config.name)
            if not core.must_close and core.state is not State.CONTENT:
                with contextlib.suppress(Exception):
                    self.emit(core.shutdown(Reply.negative("Local error, closing", "SYS/TEMP")))
                    await self.flush()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            try:
                await self._session.on_close()
            finally:
                self._channel.close()

    def _check_idle(self) -> None:
        """The idle timer: ends a read or a write that has waited `idle_timeout`, else re-arms."""
        idle, since, now = self._config.idle_timeout, self._waiting_since, self._loop.time()
        if since is None or now - since < idle:
            self._timer = self._loop.call_at((now if since is None else since) + idle,
                                             self._check_idle)
            return
        self._timer = None
        self._timed_out = True
        if self._waiting_to_write:
            # A client that stops reading must not hold the session (and an open message)
            # forever: abort, which also wakes the write.
            transport = self._channel.transport
            if transport is not None:
                transport.abort()
        else:
            self._channel.interrupt()

    async def flush(self) -> None:
        # The one copy of a batch (a RETR's status line, the stored message or its slices and
        # the terminator); a lone bytes piece is returned as it is, not copied.
        out = b"".join(self._out)
        self._out.clear()
        self.pending = 0
        if self._channel.lost:
            raise _Closing("connection lost")
        if not out:
            return
        self._waiting_since, self._waiting_to_write = self._loop.time(), True
        try:
            await self._channel.write(out)
        finally:
            self._waiting_since, self._waiting_to_write = None, False
        if self._timed_out:
            raise _Closing("the client stopped reading")

    async def _process(self) -> None:
        """Dispatches every event the received bytes produce; the responses collect in `out`."""
        core = self.core
        while True:
            event = core.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            try:
                await self._dispatch(event)
            except DomainError as exc:  # the service could not decide: storage down, say
                if not core.awaiting_answer or core.must_close:
                    raise
                log.warning("pop3 %s: %s", self._config.name, exc.message)
                self.emit(core.send(Reply.negative("Temporary server error, try again later", "SYS/TEMP")))
        self.emit(core.data_to_send())

    async def _dispatch(self, event: Event) -> None:
        core, session = self.core, self._session
        match event:  # the hot path first: a maildrop download is mostly RETRs
            case Retrieve():
                await self._retrieve(event)
            case StartTls():
                self.emit(core.send(Reply.positive("Begin TLS negotiation")))
                if core.state is State.TLS:
                    await self.flush()
                    await self._start_tls()
            case Authenticate():
                answer = await session.on_login(event.mechanism, event.authzid, event.authcid,
                                                event.password)
                failures = core.auth_failures
                self.emit(core.send(answer))
                if core.auth_failures > failures:
                    # Slows password guessing; the answer waits, so does every command after it.
                    await asyncio.sleep(self._config.failures.delay(core.auth_failures))
            case Update():
                self.emit(core.send(await session.on_update(event.deleted)))
            case ProtocolViolation(reply=reply):
                log.debug("pop3 %s: %s", self._config.name, reply.to_bytes().decode().rstrip())
            case Quit():
                pass

    async def _retrieve(self, event: Retrieve) -> None:
        core, sink = self.core, _Sink(self)
        try:
            refusal = await self._session.on_retrieve(event.number, event.lines, sink)
        except _Closing:
            raise
        except Exception as exc:
            if not sink.started or sink.ended:
                raise  # answered -ERR [SYS/TEMP] (DomainError) or logged as a bug by `run`
            # Part of the message is out: only closing, unterminated, tells the client it is
            # incomplete. The responses before it still go out first.
            core.abort_content()
            with contextlib.suppress(_Closing):
                await self.flush()
            if isinstance(exc, DomainError):
                log.warning("pop3 %s: message %d failed mid-stream: %s", self._config.name,
                            event.number, exc.message)
                raise _Closing("message failed mid-stream") from exc
            raise
        if sink.ended:
            if refusal is not None:
                raise RuntimeError("the session refused a message it has sent")
            return
        if sink.started:
            if refusal is not None:
                core.abort_content()
                raise _Closing("the session refused a message it had started to send")
        elif refusal is not None:
            self.emit(core.send(refusal))
            return
        else:
            self.emit(core.send(CONTENT_FOLLOWS))  # an empty message
        self.emit(core.end_content())

    async def _start_tls(self) -> None:
        ctx = self._config.ssl_context
        assert ctx is not None  # STLS is only offered with a context
        try:
            await self._channel.start_tls(ctx, timeout=min(self._config.idle_timeout, 60.0))
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            raise _Closing(f"TLS handshake failed: {exc}") from exc
        self.core.tls_started(auth_allowed=self._config.auth_allowed(True))
        await self._session.on_tls()


Pop3Listener = Listener
"""What `serve_pop3` returns: `port`, `active_sessions`, `close()`, `drain(timeout)`."""


async def serve_pop3(
    handler: Pop3Handler,
    *,
    name: str,
    host: str,
    port: int,
    tls_mode: str,
    ssl_context: ssl.SSLContext | None,
    capabilities: Pop3Capabilities,
    limits: Pop3Limits,
    idle_timeout: float,
    max_connections_per_ip: int,
    allow_plaintext_auth: bool,
    auth_failure_delay: float,
    reuse_port: bool,
) -> Pop3Listener:
    """Binds and starts a POP3 listener. `tls_mode` is "none", "starttls" (STLS, RFC 2595) or
    "implicit" (RFC 8314, port 995). USER, PASS and AUTH are offered after TLS, or in the clear
    only when `allow_plaintext_auth` and `host` is a loopback address."""
    check_tls_mode(name, tls_mode, ssl_context)
    config = _Config(
        name=name,
        implicit_tls=tls_mode == "implicit",
        ssl_context=ssl_context,
        capabilities=dataclasses.replace(capabilities, stls=tls_mode == "starttls"),
        limits=limits,
        idle_timeout=idle_timeout,
        max_connections_per_ip=max_connections_per_ip,
        plaintext_auth=allow_plaintext_auth and is_loopback(host),
        # IMAP's policy: doubling from auth_failure_delay up to 8 s (the core closes the
        # connection after Pop3Limits.max_auth_failures).
        failures=FailurePolicy(first_delay=auth_failure_delay,
                               max_delay=max(MAX_DELAY, auth_failure_delay)),
    )
    tls = config.implicit_tls

    def start(channel: StreamChannel, peer: PeerInfo) -> _Connection:
        return _Connection(config, channel, handler.new_session(peer, tls), tls)

    listener = Listener(
        protocol="pop3", name=name, start=start, max_connections_per_ip=max_connections_per_ip,
        refusal=_TOO_MANY, log=log,
    )
    await listener.bind(host, port, implicit_tls=ssl_context if tls else None,
                        handshake_timeout=min(idle_timeout, 60.0), reuse_port=reuse_port)
    return listener
