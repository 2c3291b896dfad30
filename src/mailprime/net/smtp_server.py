"""asyncio driver of the SMTP server core: sockets, TLS, timeouts and the per-IP cap.

    listener = await serve_smtp(handler, name="mx", host="127.0.0.1", port=0, tls_mode="starttls",
                                ssl_context=ctx, capabilities=caps, limits=ServerLimits(),
                                idle_timeout=300, data_timeout=600, max_connections_per_ip=50,
                                allow_plaintext_auth=False, reuse_port=False)
    ... listener.port ...
    await listener.close()        # stop accepting
    await listener.drain(10.0)    # let sessions finish, then 421 4.3.2 the rest

Theory of operation. Each accepted socket gets a `StreamChannel` (net.channel: our own asyncio
Protocol, so that STARTTLS can drop any plaintext received after the STARTTLS line,
CVE-2011-0411) and a task running `_Connection.run` (net.listener accepts, caps connections per
IP and drains): greet, then loop "read what arrived, feed `ServerConnection`, dispatch every
event to the `SmtpSession`, write all replies of the batch in one write". Pipelined commands
therefore cost one read and one write per batch (RFC 2920). A read waits at most `idle_timeout`
for a command (RFC 5321 4.5.3.2.7) or `data_timeout` inside a body, then the session gets 421
4.4.2. `drain` lets sessions finish, then wakes idle readers so that they answer 421 4.3.2; a
session busy in the handler answers it once the handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from dataclasses import dataclass

from mailprime.domain.errors import DomainError
from mailprime.net.channel import StreamChannel
from mailprime.net.listener import Listener, check_tls_mode, is_loopback
from mailprime.net.smtp_handler import PeerInfo, SmtpHandler, SmtpSession
from mailprime.proto.smtp.server import (
    GO_AHEAD,
    NEED_DATA,
    AuthRequest,
    ConnectionClosed,
    DataAbort,
    DataChunk,
    DataEnd,
    DataStart,
    EarlyTalker,
    Event,
    Helo,
    Mail,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    ServerConnection,
    StartTls,
    State,
)
from mailprime.proto.smtp.types import Reply, ServerCapabilities, ServerLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Config:
    name: str
    implicit_tls: bool
    ssl_context: ssl.SSLContext | None
    capabilities: ServerCapabilities
    limits: ServerLimits
    idle_timeout: float
    data_timeout: float
    max_connections_per_ip: int
    plaintext_auth: bool  # allow_plaintext_auth and a loopback listener

    def auth_allowed(self, tls: bool) -> bool:
        # RFC 4954 4: no password mechanisms in the clear, except on loopback when configured.
        return bool(self.capabilities.auth_mechanisms) and (tls or self.plaintext_auth)


class _Closing(Exception):
    """The peer went away (TLS handshake failed, connection reset): just close."""


class _Connection:
    """One client: the read-feed-dispatch-write loop (see the module docstring)."""

    def __init__(self, config: _Config, channel: StreamChannel, session: SmtpSession, tls: bool) -> None:
        self._config = config
        self._channel = channel
        self._session = session
        self._tls = tls
        self._stopping = False
        self._out = bytearray()  # replies of the current batch, written together
        self._core = ServerConnection(
            config.capabilities, config.limits, tls_active=tls, auth_allowed=config.auth_allowed(tls)
        )

    def stop(self) -> None:
        """Asks the session to end with 421 4.3.2 (server shutting down) as soon as it can."""
        self._stopping = True
        self._channel.interrupt()

    async def run(self) -> None:
        core, hostname = self._core, self._config.capabilities.hostname
        try:
            greeting = await self._session.on_connect()
            await self._channel.write(core.send(greeting or Reply(220, f"{hostname} ESMTP ready")))
            while not core.must_close:
                timeout = self._config.data_timeout if core.receiving_body else self._config.idle_timeout
                try:
                    async with asyncio.timeout(timeout):
                        data = await self._channel.read()
                except TimeoutError:  # RFC 5321 4.5.3.2.7
                    await self._shutdown(Reply(421, f"{hostname} Error: timeout exceeded", "4.4.2"))
                    break
                if data is None or self._stopping:
                    await self._shutdown(Reply(421, f"{hostname} Server shutting down", "4.3.2"))
                    break
                core.receive_data(data)
                await self._process()
                await self._flush()
        except _Closing as exc:
            log.debug("smtp %s: closing: %s", self._config.name, exc)
        except Exception:
            log.exception("smtp %s: session failed", self._config.name)
            if not core.must_close:
                with contextlib.suppress(Exception):
                    await self._shutdown(Reply(421, f"{hostname} Local error, closing", "4.3.0"))
        finally:
            try:
                await self._session.on_close()
            finally:
                self._channel.close()

    async def _shutdown(self, reply: Reply) -> None:
        """Sends a 421 (after the replies already due) and lets the session hear about a body it
        must drop."""
        self._out += self._core.send(reply)
        try:
            await self._process()
        finally:
            await self._flush()

    async def _flush(self) -> None:
        out = bytes(self._out)
        self._out.clear()
        await self._channel.write(out)

    async def _process(self) -> None:
        """Dispatches every event the received bytes produce; the replies collect in `_out`."""
        core, out = self._core, self._out
        while True:
            event = core.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, StartTls):
                out += core.send(Reply(220, "Ready to start TLS", "2.0.0"))
                if core.state is State.TLS:
                    await self._flush()
                    await self._start_tls()
                continue
            try:
                out += await self._dispatch(event)
            except DomainError as exc:  # the service's error carries its SMTP reply
                if not core.awaiting_reply or core.must_close:
                    raise
                out += core.send(Reply(exc.smtp_code, exc.message, exc.smtp_enhanced))
        out += core.data_to_send()

    async def _start_tls(self) -> None:
        ctx = self._config.ssl_context
        assert ctx is not None  # STARTTLS is only offered with a context
        try:
            await self._channel.start_tls(ctx, timeout=min(self._config.idle_timeout, 60.0))
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            raise _Closing(f"TLS handshake failed: {exc}") from exc
        self._tls = True
        self._core.tls_started(auth_allowed=self._config.auth_allowed(True))
        await self._session.on_tls()

    async def _dispatch(self, event: Event) -> bytes:
        core, session = self._core, self._session
        match event:
            case Helo(name=name, extended=extended):
                reply = await session.on_helo(name, extended)
                return core.send(reply or Reply(250, self._config.capabilities.hostname))
            case AuthRequest():
                outcome = await session.on_auth(event.mechanism, event.authzid, event.authcid, event.password)
                default = (
                    Reply(235, "Authentication successful", "2.7.0")
                    if outcome.ok
                    else Reply(535, "Authentication credentials invalid", "5.7.8")
                )
                return core.send(outcome.reply or default)
            case Mail(sender=sender, params=params):
                return core.send(await session.on_mail(sender, params))
            case Rcpt(recipient=recipient, params=rcpt_params):
                return core.send(await session.on_rcpt(recipient, rcpt_params))
            case DataStart():
                refusal = await session.on_data_start()
                return core.send(GO_AHEAD if refusal is None else refusal)
            case DataChunk(data=data):
                await session.on_data_chunk(data)
            case DataEnd():
                return core.send(await session.on_data_end())
            case DataAbort(reason=reason):
                await session.on_data_abort(reason.value)
            case Rset():
                await session.on_reset()
            case EarlyTalker():  # not reachable while we greet first; refuse as Postfix's postscreen
                return core.send(Reply(421, "Protocol error: talked before the greeting", "4.7.0"))
            case ProtocolViolation(reply=reply):
                log.debug("smtp %s: %s", self._config.name, reply.one_line())
            case Quit() | StartTls() | ConnectionClosed():
                pass
        return b""


SmtpListener = Listener
"""What `serve_smtp` returns: `port`, `active_sessions`, `close()`, `drain(timeout)`."""


async def serve_smtp(
    handler: SmtpHandler,
    *,
    name: str,
    host: str,
    port: int,
    tls_mode: str,
    ssl_context: ssl.SSLContext | None,
    capabilities: ServerCapabilities,
    limits: ServerLimits,
    idle_timeout: float,
    data_timeout: float,
    max_connections_per_ip: int,
    allow_plaintext_auth: bool,
    reuse_port: bool,
) -> SmtpListener:
    """Binds and starts an SMTP listener. `tls_mode` is "none", "starttls" or "implicit"
    (`config.TlsMode` values); STARTTLS is offered only in "starttls" mode and only when
    `capabilities.starttls` is set. AUTH is offered after TLS, or in the clear only when
    `allow_plaintext_auth` and `host` is a loopback address."""
    check_tls_mode(name, tls_mode, ssl_context)
    caps = dataclasses.replace(capabilities, starttls=capabilities.starttls and tls_mode == "starttls")
    config = _Config(
        name=name,
        implicit_tls=tls_mode == "implicit",
        ssl_context=ssl_context,
        capabilities=caps,
        limits=limits,
        idle_timeout=idle_timeout,
        data_timeout=data_timeout,
        max_connections_per_ip=max_connections_per_ip,
        plaintext_auth=allow_plaintext_auth and is_loopback(host),
    )
    tls = config.implicit_tls

    def start(channel: StreamChannel, peer: PeerInfo) -> _Connection:
        return _Connection(config, channel, handler.new_session(peer, tls), tls)

    listener = Listener(
        protocol="smtp", name=name, start=start, max_connections_per_ip=max_connections_per_ip,
        # RFC 5321 3.8 / 4.2.2: 421 tells the client to come back later.
        refusal=b"421 4.7.0 Too many connections from your address, try again later\r\n", log=log,
    )
    await listener.bind(host, port, implicit_tls=ssl_context if tls else None,
                        handshake_timeout=min(idle_timeout, 60.0), reuse_port=reuse_port)
    return listener
