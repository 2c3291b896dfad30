"""The connection pool's idle timer, against a real scripted SMTP server on loopback and the real
SMTP dialer: an idle connection is closed with QUIT once it has been idle `idle_seconds`, even
when no further release comes; close() stops the timer and closes what is idle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mailprime.adapters.smtp_dialer import SmtpDialer
from mailprime.delivery.connection_pool import ConnectionPool, Pooled
from mailprime.delivery.router import Route
from tests.support.scripted_smtp import ScriptedSmtpServer

ROUTE = Route("mx.b.test", "127.0.0.1", 10)


class EndingServer(ScriptedSmtpServer):
    """The scripted server, counting the sessions that ended (the client said QUIT or hung up)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = 0
        self._ended = asyncio.Condition()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super()._serve(reader, writer)
        finally:
            async with self._ended:
                self.ended += 1
                self._ended.notify_all()

    async def wait_ended(self, count: int) -> None:
        async def enough() -> None:
            async with self._ended:
                await self._ended.wait_for(lambda: self.ended >= count)
        await asyncio.wait_for(enough(), 5.0)


@asynccontextmanager
async def ending_server() -> AsyncIterator[EndingServer]:
    server = EndingServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def pooled(pool: ConnectionPool, server: EndingServer, group: str = "b.test") -> Pooled:
    """A new connection through the pool's slot, as the SMTP transport opens one."""
    assert await pool.acquire(group, None, lambda _item: True, 10) is None  # a slot
    dialer = SmtpDialer(helo_name="mail.a.test", ssl_context=None, require_tls=False,
                        connect_timeout=5.0, command_timeout=5.0)
    conn = await dialer.connect("127.0.0.1", server.port, server_name=ROUTE.mx_host)
    return pool.connected(group, None, ROUTE, conn)


def test_an_idle_connection_is_closed_when_traffic_stops() -> None:
    async def scenario() -> None:
        async with ending_server() as server:
            pool = ConnectionPool(idle_seconds=0.2)
            first, second = await pooled(pool, server), await pooled(pool, server)
            await pool.release(first, max_transactions=100)
            await pool.release(second, max_transactions=100)
            assert (pool.open_count("b.test"), server.ended) == (2, 0)
            # No release, no acquire from here on: only the timer can close them.
            await server.wait_ended(2)
            assert server.commands.count("QUIT") == 2
            assert pool.open_count("b.test") == 0 and pool.swept == 2
            assert pool.idle_sources("b.test", lambda _item: True) == set()
            # Traffic again: a new connection goes idle, and the timer starts anew.
            await pool.release(await pooled(pool, server), max_transactions=100)
            await server.wait_ended(3)
            assert pool.open_count("b.test") == 0 and pool.swept == 3
            await pool.close()

    asyncio.run(scenario())


def test_close_stops_the_timer_and_closes_idle_connections() -> None:
    async def scenario() -> None:
        async with ending_server() as server:
            pool = ConnectionPool(idle_seconds=3600.0)
            await pool.release(await pooled(pool, server), max_transactions=100)
            await pool.close()
            await server.wait_ended(1)
            assert server.commands.count("QUIT") == 1
            assert pool.open_count("b.test") == 0 and pool.swept == 0
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                      and t.get_coro().__qualname__.startswith("ConnectionPool.")]  # type: ignore[union-attr]
            assert others == []  # the timer is gone

    asyncio.run(scenario())
