"""asyncio driver of the SMTP server core: sockets, TLS, timeouts and the per-IP cap.

    listener = await serve_smtp(handler, name="mx", host="127.0.0.1", port=0, tls_mode="starttls",
                                ssl_context=ctx, capabilities=caps, limits=ServerLimits(),
                                idle_timeout=300, data_timeout=600, max_connections_per_ip=50,
                                allow_plaintext_auth=False, reuse_port=False)
    ... listener.port ...
    await listener.close()        # stop accepting
    await listener.drain(10.0)    # let sessions finish, then 421 4.3.2 the rest

Theory of operation. Each accepted socket gets a `_Channel` (an asyncio Protocol with its own input
buffer and flow control both ways) and a task running `_Connection.run`: greet, then loop "read
what arrived, feed `ServerConnection`, dispatch every event to the `SmtpSession`, write all replies
of the batch in one write". Pipelined commands therefore cost one read and one write per batch
(RFC 2920). The channel is our own rather than asyncio's StreamReader because STARTTLS must drop
any plaintext received after the STARTTLS line (CVE-2011-0411), which StreamReader can only do
through its internals; `loop.start_tls` (what `StreamWriter.start_tls` wraps) then upgrades the
same channel. A read waits at most `idle_timeout` for a command (RFC 5321 4.5.3.2.7) or
`data_timeout` inside a body, then the session gets 421 4.4.2. `drain` wakes idle readers so that
they answer 421 4.3.2; a session busy in the handler answers it once the handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import cast

from mailprime.domain.errors import DomainError
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

TLS_MODES = ("none", "starttls", "implicit")
_HIGH_WATER = 256 * 1024  # input buffered before the socket is paused (flow control)
_STOP_GRACE = 5.0  # seconds a stopped session may still need to finish its handler call


class _Channel(asyncio.Protocol):
    """Bytes in and out of one socket. `read` returns what arrived (b"" at EOF, None when
    interrupted by `interrupt`); `write` waits while the socket's send buffer is full."""

    def __init__(self, listener: SmtpListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._eof = False
        self._lost = False
        self._interrupted = False
        self._read_paused = False
        self._write_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._listener._accept(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Keep a plain socket half-open so the replies to what came before the EOF still go
        # out; asyncio's TLS transport cannot do that and would only log a warning.
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    # used by _Connection
    async def read(self) -> bytes | None:
        while not self._buf and not self._eof and not self._interrupted:
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if self._interrupted:
            return None
        data = bytes(self._buf)
        self._buf.clear()
        if self._read_paused and self.transport is not None and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        if not data or self._lost or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        while self._write_paused and not self._lost:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    async def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> None:
        assert self.transport is not None
        self._buf.clear()  # CVE-2011-0411: plaintext sent after STARTTLS is never a command
        new = await self._loop.start_tls(
            self.transport, self, ctx, server_side=True, ssl_handshake_timeout=timeout
        )
        if new is None:
            raise ConnectionError("connection closed during the TLS handshake")
        self.transport = new

    def interrupt(self) -> None:
        self._interrupted = True
        self._wake_reader()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)


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

    def __init__(self, config: _Config, channel: _Channel, session: SmtpSession, tls: bool) -> None:
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


class SmtpListener:
    """A bound SMTP listener. `port` is the port actually bound (so port 0 works)."""

    def __init__(self, config: _Config, handler: SmtpHandler) -> None:
        self._config = config
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], _Connection] = {}
        self._per_ip: Counter[str] = Counter()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        return len(self._tasks)

    async def _bind(self, host: str, port: int, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Channel(self),
            host,
            port,
            ssl=self._config.ssl_context if self._config.implicit_tls else None,
            ssl_handshake_timeout=min(self._config.idle_timeout, 60.0) if self._config.implicit_tls else None,
            reuse_port=reuse_port or None,
        )

    def _accept(self, channel: _Channel) -> None:
        transport = channel.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        ip = str(peer[0])
        if self._per_ip[ip] >= self._config.max_connections_per_ip:
            # RFC 5321 3.8 / 4.2.2: 421 tells the client to come back later.
            transport.write(b"421 4.7.0 Too many connections from your address, try again later\r\n")
            transport.close()
            return
        self._per_ip[ip] += 1
        tls = self._config.implicit_tls
        info = PeerInfo(ip=ip, port=int(peer[1]), listener=self._config.name,
                        local_ip=str(local[0]), local_port=int(local[1]))
        connection = _Connection(self._config, channel, self._handler.new_session(info, tls), tls)
        task = asyncio.get_running_loop().create_task(connection.run())
        self._tasks[task] = connection
        task.add_done_callback(lambda t: self._finished(t, ip))

    def _finished(self, task: asyncio.Task[None], ip: str) -> None:
        self._tasks.pop(task, None)
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if not task.cancelled() and task.exception() is not None:
            log.error("smtp %s: session task failed", self._config.name, exc_info=task.exception())

    async def close(self) -> None:
        """Stops accepting new connections; open sessions go on (see `drain`)."""
        if self._server is not None:
            self._server.close()

    async def drain(self, timeout: float) -> None:
        """Waits up to `timeout` seconds for open sessions to end, then ends the rest with 421 4.3.2."""
        await self.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for connection in list(self._tasks.values()):
            connection.stop()
        if self._tasks:
            _, stuck = await asyncio.wait(set(self._tasks), timeout=_STOP_GRACE)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    if tls_mode not in TLS_MODES:
        raise ValueError(f"tls_mode must be one of {', '.join(TLS_MODES)}, not {tls_mode!r}")
    if tls_mode != "none" and ssl_context is None:
        raise ValueError(f"listener {name}: tls_mode {tls_mode!r} needs an ssl_context")
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
        plaintext_auth=allow_plaintext_auth and _is_loopback(host),
    )
    listener = SmtpListener(config, handler)
    await listener._bind(host, port, reuse_port)
    return listener
