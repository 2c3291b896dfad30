"""One accepted socket as the protocol drivers use it: bytes in (`read`), bytes out (`write`,
which waits while the send buffer is full), TLS upgrade in place (`start_tls`), and `interrupt`
to wake a reader for a graceful shutdown.

Why our own asyncio.Protocol rather than asyncio's StreamReader: STARTTLS/STLS must drop any
plaintext received after the command (CVE-2011-0411), which StreamReader can only do through its
internals; `loop.start_tls` (what `StreamWriter.start_tls` wraps) then upgrades the same channel.
Flow control works both ways: past `_HIGH_WATER` unread octets the socket stops reading, and a
writer waits for `resume_writing`. Used by the SMTP, POP3 and IMAP drivers.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

_HIGH_WATER = 256 * 1024  # input buffered before the socket is paused


class StreamChannel(asyncio.Protocol):
    """`read` returns what arrived (b"" at EOF, None when interrupted by `interrupt`); `write`
    waits while the socket's send buffer is full. `on_made` runs once the socket is connected."""

    def __init__(self, on_made: Callable[[StreamChannel], None]) -> None:
        self._on_made = on_made
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

    @property
    def lost(self) -> bool:
        """The connection is gone: nothing written arrives any more."""
        return self._lost

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Keep a plain socket half-open so the responses to what came before the EOF still go
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

    # used by the drivers
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
        self._buf.clear()  # CVE-2011-0411: plaintext sent after STARTTLS/STLS is never a command
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
