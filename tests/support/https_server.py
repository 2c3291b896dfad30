"""A real HTTPS server on loopback for tests (MTA-STS policy hosts): asyncio + ssl, a trustme
certificate for the names it serves, answers that tests set per path.

Theory of operation. Each connection reads one request head (at most 64 KB), looks the path up in
`responses` and writes the stored raw bytes, then closes (HTTP/1.1 with Connection: close). A
test sets an answer with `serve_text` (a well-formed 200 text/plain), or `serve_raw` for anything
else (redirects, chunked bodies, wrong media types, oversized bodies). A path without an answer
gets a 404. `requests` lists the (Host, path) of every request seen, so a test can tell whether
a fetch happened. `stop()` closes the listener; a later connect is refused, as a host that is
down would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trustme

MAX_HEAD = 64 * 1024


def text_response(body: str, *, content_type: str = "text/plain", status: str = "200 OK") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}"
            f"\r\nConnection: close\r\n\r\n").encode() + data


@dataclass
class HttpsTestServer:
    ssl_context: ssl.SSLContext
    responses: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    def serve_text(self, path: str, body: str, **kwargs: str) -> None:
        self.responses[path] = text_response(body, **kwargs)

    def serve_raw(self, path: str, raw: bytes) -> None:
        self.responses[path] = raw

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port,
                                                  ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            host = next((ln.split(":", 1)[1].strip() for ln in lines[1:]
                         if ln.lower().startswith("host:")), "")
            self.requests.append((host, path))
            writer.write(self.responses.get(path, text_response("not found", status="404 Not Found")))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ssl.SSLError, IndexError):
            pass  # a client that went away, or failed the handshake (a wrong-CA test)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@asynccontextmanager
async def https_server(ca: trustme.CA, *names: str) -> AsyncIterator[HttpsTestServer]:
    """An HTTPS server on 127.0.0.1 with a certificate from `ca` for `names`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(ctx)
    server = HttpsTestServer(ctx)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
