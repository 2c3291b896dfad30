"""A small HTTPS GET client for fetching MTA-STS policies (RFC 8461 3.3).

Theory of operation. A policy fetch needs very little of HTTP, and every bit of it is a place
where an attacker-controlled server could hurt us, so this client does exactly one thing: GET one
path over HTTP/1.1 on a fresh TLS connection with a verified certificate, and return the body of
a 200 answer. Everything else fails with `HttpsFetchError`:

* The host name is resolved through our Resolver port (so tests and operators use the same DNS
  as delivery); each address is tried in turn until one connects.
* TLS: the certificate must chain to a trusted root and match the host name (RFC 8461 3.3:
  "MUST... a valid certificate"); a failure there is marked `tls=True` (RFC 8460's
  sts-webpki-invalid).
* Redirects are not followed (RFC 8461 3.3 "MUST NOT follow any redirects"): any status but 200
  fails. The media type must be text/plain when `content_type` is given (3.2).
* Limits: the whole exchange (resolution excepted) is bounded by `timeout` (RFC 8461 3.3
  recommends 60 s), the status line and each header line by MAX_LINE, the headers by MAX_HEADERS,
  the body by `max_size` octets whichever framing (Content-Length, chunked, or until close)
  the server uses.
* Framing numbers are read by their grammar, never by `int()`, which also takes "-1", "+5",
  "0x10", "1_0" and non-ASCII digits: Content-Length is 1*DIGIT (RFC 9110 8.6), a chunk size
  1*HEXDIG (RFC 9112 7.1), each at most MAX_LENGTH_DIGITS long. A negative size would reach
  `readexactly` and escape as a ValueError instead of a fetch error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from dataclasses import dataclass

from mailprime.message.resolver import DnsError, Resolver

MAX_LINE = 8192  # octets in the status line or one header line (as common servers cap them)
MAX_HEADERS = 100  # header fields in a response
DEFAULT_MAX_SIZE = 64 * 1024  # body octets
DEFAULT_TIMEOUT = 60.0  # seconds (RFC 8461 3.3)
# Digits of a Content-Length or chunk size: 16 hex digits reach 2^64, far past any body we take.
MAX_LENGTH_DIGITS = 16
_DECIMAL = re.compile(rf"[0-9]{{1,{MAX_LENGTH_DIGITS}}}")  # RFC 9110 8.6: 1*DIGIT
_HEX = re.compile(rf"[0-9A-Fa-f]{{1,{MAX_LENGTH_DIGITS}}}")  # RFC 9112 7.1: chunk-size = 1*HEXDIG


class HttpsFetchError(Exception):
    """The GET failed. `tls` is True when the certificate did not verify."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls


@dataclass(frozen=True, slots=True)
class HttpsFetcher:
    """GETs `https://host[:port]/path` with the limits of the module doc."""

    resolver: Resolver
    ssl_context: ssl.SSLContext  # verifying: check_hostname and CERT_REQUIRED
    port: int = 443
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    user_agent: str = "mailprime"

    async def get(self, host: str, path: str, *, content_type: str | None = "text/plain") -> bytes:
        addresses = await self._addresses(host)
        url = f"https://{host}{'' if self.port == 443 else f':{self.port}'}{path}"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect(host, addresses, url)
                try:
                    return await self._exchange(reader, writer, host=host, path=path, url=url,
                                                content_type=content_type)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
        except TimeoutError:
            raise HttpsFetchError(f"{url}: timed out after {self.timeout:g}s") from None

    async def _addresses(self, host: str) -> list[str]:
        found: list[str] = []
        for lookup in (self.resolver.a, self.resolver.aaaa):
            try:
                found.extend(await lookup(host))
            except DnsError:
                continue
        if not found:
            raise HttpsFetchError(f"{host}: no address record")
        return found

    async def _connect(self, host: str, addresses: list[str],
                       url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last = "no address tried"
        for ip in addresses:
            try:
                return await asyncio.open_connection(ip, self.port, ssl=self.ssl_context,
                                                     server_hostname=host, limit=MAX_LINE + 2)
            except ssl.SSLCertVerificationError as exc:
                raise HttpsFetchError(f"{url}: certificate verify failed: {exc.verify_message}",
                                      tls=True) from exc
            except ssl.SSLError as exc:
                raise HttpsFetchError(f"{url}: TLS handshake failed: {exc.reason or exc}",
                                      tls=True) from exc
            except OSError as exc:
                last = f"connect to {ip}:{self.port}: {os.strerror(exc.errno) if exc.errno else exc}"
        raise HttpsFetchError(f"{url}: {last}")

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                        host: str, path: str, url: str, content_type: str | None) -> bytes:
        authority = host if self.port == 443 else f"{host}:{self.port}"
        request = (f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {self.user_agent}"
                   f"\r\nAccept: {content_type or '*/*'}\r\nConnection: close\r\n\r\n")
        try:
            writer.write(request.encode("ascii"))
            await writer.drain()
            status = await _line(reader, url)
            parts = status.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HttpsFetchError(f"{url}: malformed status line {status[:80]!r}")
            headers = await _headers(reader, url)
            if parts[1] != "200":
                # RFC 8461 3.3: redirects are not followed; nothing but 200 is a policy.
                where = f" (to {headers['location'][:100]})" if "location" in headers else ""
                raise HttpsFetchError(f"{url}: HTTP {parts[1]}{where}")
            if content_type is not None:
                got = headers.get("content-type", "").split(";")[0].strip().lower()
                if got != content_type:
                    raise HttpsFetchError(f"{url}: media type {got or '(none)'!r}, "
                                          f"not {content_type}")
            return await self._body(reader, headers, url)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            raise HttpsFetchError(f"{url}: connection lost: {exc}") from exc

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str], url: str) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._chunked(reader, url)
        if "content-length" in headers:
            length = headers["content-length"]
            if not _DECIMAL.fullmatch(length):
                raise HttpsFetchError(f"{url}: bad Content-Length {length[:20]!r}")
            if int(length) > self.max_size:
                raise HttpsFetchError(f"{url}: body of {length} octets exceeds {self.max_size}")
            return await reader.readexactly(int(length))
        body = await reader.read(self.max_size + 1)  # no framing: up to the close
        while len(body) <= self.max_size:
            more = await reader.read(self.max_size + 1 - len(body))
            if not more:
                return body
            body += more
        raise HttpsFetchError(f"{url}: body exceeds {self.max_size} octets")

    async def _chunked(self, reader: asyncio.StreamReader, url: str) -> bytes:
        body = bytearray()
        while True:
            # chunk-ext (after ";", RFC 9112 7.1.1) is ignored, with the white space before it.
            size_line = (await _line(reader, url)).split(";")[0].strip(" \t")
            if not _HEX.fullmatch(size_line):
                raise HttpsFetchError(f"{url}: bad chunk size {size_line[:20]!r}")
            size = int(size_line, 16)
            if size == 0:
                await _headers(reader, url)  # the trailer section, if any
                return bytes(body)
            if len(body) + size > self.max_size:
                raise HttpsFetchError(f"{url}: body exceeds {self.max_size} octets")
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise HttpsFetchError(f"{url}: chunk not followed by CRLF")


async def _line(reader: asyncio.StreamReader, url: str) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpsFetchError(f"{url}: header line longer than {MAX_LINE} octets") from None
    except asyncio.IncompleteReadError as exc:
        raise HttpsFetchError(f"{url}: connection closed in the response head") from exc
    return raw.rstrip(b"\r\n").decode("latin-1")


async def _headers(reader: asyncio.StreamReader, url: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await _line(reader, url)
        if not line:
            return headers
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpsFetchError(f"{url}: malformed header line {line[:80]!r}")
        key = name.strip().lower()
        # Repeated fields are joined (RFC 9110 5.3); framing fields are checked by the caller.
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise HttpsFetchError(f"{url}: more than {MAX_HEADERS} header fields")


__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_TIMEOUT", "HttpsFetchError", "HttpsFetcher"]
