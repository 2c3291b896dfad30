"""A minimal HTTP/1.1 client over asyncio streams: one POST per connection, for talking to a
trusted local service (rspamd) without adding an HTTP library.

Theory of operation. `HttpClient.post` opens a TCP connection to the URL's host and port, writes
the request line, the headers (Host, Content-Length, Connection: close, then the caller's) and
the body, and reads the answer: the status line (RFC 9112 4), the header fields (at most
MAX_HEADER_BYTES in all), then the body framed by Transfer-Encoding: chunked (RFC 9112 7.1),
by Content-Length (6.3), or by the connection closing. A body larger than `max_reply` is refused
as ValueError without being read further. The whole exchange runs under one `timeout`; the
connection is always closed afterwards (no keep-alive: a scan costs far more than a loopback
connect, and one connection per request keeps this small and safe under cancellation).

https:// (webhook receivers) is spoken with the context given: the system's trust store plus an
operator's CA file, host name checked. Redirects are not followed (a 3xx is the caller's to
report). Errors are OSError (cannot connect, TLS refused, connection lost), TimeoutError, and
ValueError (not an http(s) URL, not HTTP, or too large).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

# RFC 9112 leaves header size to the implementation; a service's answer headers are small.
MAX_HEADER_BYTES = 64 * 1024
MAX_LINE = 8 * 1024


def verifying_context(cafile: str | None = None) -> ssl.SSLContext:
    """The system's trust store (and `cafile` besides), hostnames checked, TLS 1.2 at least."""
    ctx = ssl.create_default_context()
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class HttpClient:
    """Satisfies services.rspamd.HttpPost and services.webhooks.HttpPoster. https:// URLs use
    `ssl_context` (default: `verifying_context()`)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes, *,
                   timeout: float, max_reply: int) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            return await self._post(url, headers, body, max_reply)

    async def _post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes,
                    max_reply: int) -> tuple[int, bytes]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url[:100]!r}")
        secure = parts.scheme == "https"
        if secure and self._ssl is None:
            self._ssl = verifying_context()
        host, port = parts.hostname, parts.port or (443 if secure else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        reader, writer = await asyncio.open_connection(
            host, port, limit=MAX_LINE * 2, ssl=self._ssl if secure else None,
            server_hostname=host if secure else None)
        try:
            head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}",
                    f"Content-Length: {len(body)}", "Connection: close"]
            for name, value in headers:
                if any(c in name + value for c in "\r\n\0"):
                    raise ValueError(f"header {name!r} carries a line break")
                head.append(f"{name}: {value}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body)
            await writer.drain()
            return await _read_response(reader, max_reply)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError("connection closed in the middle of the answer") from exc
    except asyncio.LimitOverrunError as exc:
        raise ValueError("answer line too long") from exc
    if len(line) > MAX_LINE:
        raise ValueError("answer line too long")
    return line.rstrip(b"\r\n")


async def _read_response(reader: asyncio.StreamReader, max_reply: int) -> tuple[int, bytes]:
    status_line = await _read_line(reader)
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    fields: dict[bytes, bytes] = {}
    total = 0
    while line := await _read_line(reader):
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise ValueError("answer header section too large")
        name, colon, value = line.partition(b":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return int(code), await _read_chunked(reader, max_reply)
    length = fields.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise ValueError("bad Content-Length")
        if int(length) > max_reply:
            raise ValueError(f"answer of {int(length)} octets is over {max_reply}")
        try:
            return int(code), await reader.readexactly(int(length))
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("connection closed in the middle of the answer") from exc
    data = await reader.read(max_reply + 1)
    while len(data) <= max_reply and (more := await reader.read(max_reply + 1 - len(data))):
        data += more
    if len(data) > max_reply:
        raise ValueError(f"answer over {max_reply} octets")
    return int(code), data


async def _read_chunked(reader: asyncio.StreamReader, max_reply: int) -> bytes:
    data = bytearray()
    while True:
        size_line = (await _read_line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ValueError("bad chunk size") from None
        if size == 0:
            while await _read_line(reader):  # trailer fields, then the empty line
                pass
            return bytes(data)
        if len(data) + size > max_reply:
            raise ValueError(f"answer over {max_reply} octets")
        try:
            data += await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("connection closed in the middle of the answer") from exc
        await _read_line(reader)  # the CRLF after the chunk


__all__ = ["HttpClient"]
