"""Accepting connections for a protocol driver: binding (plain, or implicit TLS), the cap on
connections per client address, one task per connection, `close` and `drain`.

The SMTP, POP3 and IMAP drivers differ only in how a connection runs (their `_Connection`),
what a client over the cap is told, and how a drain treats idle sessions; everything else is
here once. A driver passes `start`, which makes the connection object for an accepted
`StreamChannel`, and `refusal`, the octets written to a client over the cap before closing.

Draining: by default open sessions get `timeout` seconds to finish on their own, then each is
asked to `stop` (which wakes it if it waits for its client) and gets a short grace before its
task is cancelled. With `stop_at_once` (IMAP, whose clients stay connected for hours, so
waiting for them is pointless) every session is asked to stop at once and gets the whole
`timeout` to finish the command it may be in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from mailprime.net.channel import StreamChannel
from mailprime.proto.smtp.types import PeerInfo

TLS_MODES = ("none", "starttls", "implicit")
_STOP_GRACE = 5.0  # seconds a stopped session may still need to finish its handler call


class Connection(Protocol):
    """What a driver runs for one accepted socket."""

    async def run(self) -> None: ...

    def stop(self) -> None:
        """Asks the session to end as soon as it can (the driver's shutdown answer)."""


def check_tls_mode(name: str, tls_mode: str, ssl_context: ssl.SSLContext | None) -> None:
    """Refuses a `tls_mode` that is not one of TLS_MODES, or one that needs a context it lacks."""
    if tls_mode not in TLS_MODES:
        raise ValueError(f"tls_mode must be one of {', '.join(TLS_MODES)}, not {tls_mode!r}")
    if tls_mode != "none" and ssl_context is None:
        raise ValueError(f"listener {name}: tls_mode {tls_mode!r} needs an ssl_context")


def is_loopback(host: str) -> bool:
    """Whether a listener bound to `host` can only be reached from this machine (where the
    drivers may allow passwords in the clear when configured to)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Listener:
    """A bound listener. `port` is the port actually bound (so port 0 works)."""

    def __init__(self, *, protocol: str, name: str, start: Callable[[StreamChannel, PeerInfo], Connection],
                 max_connections_per_ip: int, refusal: bytes, log: logging.Logger,
                 stop_at_once: bool = False) -> None:
        self.protocol = protocol  # "smtp", "pop3", "imap": for the log
        self.name = name
        self._start = start
        self._max_per_ip = max_connections_per_ip
        self._refusal = refusal
        self._log = log
        self._stop_at_once = stop_at_once
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], Connection] = {}
        self._per_ip: Counter[str] = Counter()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        return len(self._tasks)

    async def bind(self, host: str, port: int, *, implicit_tls: ssl.SSLContext | None,
                   handshake_timeout: float, reuse_port: bool) -> None:
        """Starts listening; `implicit_tls` is the context of a TLS-from-the-start port (RFC
        8314), None for a plain one (which may still offer STARTTLS)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: StreamChannel(self._accept),
            host,
            port,
            ssl=implicit_tls,
            ssl_handshake_timeout=handshake_timeout if implicit_tls is not None else None,
            reuse_port=reuse_port or None,
        )

    def _accept(self, channel: StreamChannel) -> None:
        transport = channel.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        ip = str(peer[0])
        if self._per_ip[ip] >= self._max_per_ip:
            transport.write(self._refusal)
            transport.close()
            return
        self._per_ip[ip] += 1
        info = PeerInfo(ip=ip, port=int(peer[1]), listener=self.name,
                        local_ip=str(local[0]), local_port=int(local[1]))
        connection = self._start(channel, info)
        task = asyncio.get_running_loop().create_task(connection.run())
        self._tasks[task] = connection
        task.add_done_callback(lambda t: self._finished(t, ip))

    def _finished(self, task: asyncio.Task[None], ip: str) -> None:
        self._tasks.pop(task, None)
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s %s: session task failed", self.protocol, self.name, exc_info=task.exception())

    async def close(self) -> None:
        """Stops accepting new connections; open sessions go on (see `drain`)."""
        if self._server is not None:
            self._server.close()

    async def drain(self, timeout: float) -> None:
        """Stops accepting and ends every session (see the module docstring)."""
        await self.close()
        grace = _STOP_GRACE
        if self._stop_at_once:
            grace = max(timeout, _STOP_GRACE)
        elif self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for connection in list(self._tasks.values()):
            connection.stop()
        if self._tasks:
            _, stuck = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
