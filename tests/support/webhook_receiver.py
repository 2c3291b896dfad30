"""A small webhook receiver for tests: a real HTTP/1.1 server on a loopback port (asyncio
streams; http or, with an SSL context, https) that records each POST and answers with the
next status of its script (then 200), so a test can make it fail and then succeed."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Receiver:
    port: int
    scheme: str
    script: list[int]
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}/hook"

    async def wait(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Waits (woken by each arrival, no polling) until `count` requests were answered."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.answered) >= count)
        return self.received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.script.pop(0) if self.script else 200
            self.received.append(Received(path, headers, body))
            answer = b"ok" if status < 300 else b"try later"
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + answer)
            await writer.drain()
            async with self.arrived:
                self.answered.append(status)
                self.arrived.notify_all()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


@asynccontextmanager
async def webhook_receiver(script: Sequence[int] = (),
                           ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    holder: list[Receiver] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await holder[0]._serve(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    holder.append(Receiver(port, "https" if ssl_context else "http", list(script)))
    try:
        yield holder[0]
    finally:
        server.close()
        await server.wait_closed()
