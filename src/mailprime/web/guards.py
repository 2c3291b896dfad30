"""What every request and response passes: a body size limit, security headers, and the string
type that refuses header injection.

Theory of operation. The limits sit in one pure-ASGI middleware in front of the app, so no route
can forget them and no body is read whole before it is checked: a Content-Length over the limit
is answered 413 without the body being read into anything (RFC 9110 15.5.14), and a chunked
body is counted as it streams and cut off, also with a 413 problem, when it passes the limit.
Before a 413 the rest of the body, up to DRAIN_MAX octets, is read and thrown away: the
connection closes after the answer, and a socket closed with unread data in it is reset by the
kernel, which can destroy the answer before a client still sending its body reads it (RFC 9112
9.6 asks a server to close in stages for this reason; uvicorn does not). Headers
(the request line and fields) are bounded by uvicorn's h11 parser (16 KiB), the connection
count by uvicorn's limit_concurrency.

Header injection: any string the API takes that may end up in a message header field (a
subject, a name, a header value, a tag) is typed `HeaderText`, which refuses CR, LF and NUL:
RFC 5322 2.2 forbids them in a field body except as folding (which we do ourselves), and a CR/LF
smuggled into a header is how one field becomes two (a Bcc: added to someone else's message).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import HTTPException
from pydantic import AfterValidator, Field

from mailprime.web.problems import PROBLEM_JSON

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_HEADER_TEXT = 998  # RFC 5322 2.1.1: a line is at most 998 characters


def _no_line_breaks(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError("must not contain CR, LF or NUL (RFC 5322 2.2: they would start "
                         "another header field)")
    return value


# A string that may become (part of) a header field of a message.
HeaderText = Annotated[str, Field(max_length=MAX_HEADER_TEXT), AfterValidator(_no_line_breaks)]


class _TooLarge(HTTPException):  # raised from receive(): FastAPI re-raises it as it is
    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


# The most of a refused body read and discarded before the 413 (see the module doc); a client
# declaring more is answered at once and may see its connection reset instead.
DRAIN_MAX = 16 * 1024 * 1024


async def _drain(receive: Receive, budget: int = DRAIN_MAX) -> None:
    """Reads and discards the request body's remaining messages, `budget` octets at most."""
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return  # http.disconnect: the client is gone
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _problem_body(status: int, title: str, detail: str, path: str) -> bytes:
    return json.dumps({"type": "about:blank", "title": title, "status": status,
                       "detail": detail, "instance": path}).encode()


async def _send_problem(send: Send, status: int, title: str, detail: str, *, path: str,
                        extra: list[tuple[bytes, bytes]]) -> None:
    body = _problem_body(status, title, detail, path)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Body size limit and security headers for every HTTP response."""

    def __init__(self, app: Asgi, *, max_body: int, https: bool) -> None:
        self.app = app
        self.max_body = max_body
        self.https = https

    def _security_headers(self, path: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                   (b"referrer-policy", b"no-referrer"),
                   (b"cross-origin-resource-policy", b"cross-origin" if path.startswith("/t/o/")
                    else b"same-origin")]
        if path.endswith("/docs"):  # the Swagger UI page loads its script and styles from a CDN
            csp = (b"default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
                   b"style-src 'unsafe-inline' https://cdn.jsdelivr.net; img-src data: https:; "
                   b"connect-src 'self'; frame-ancestors 'none'")
        else:  # the unsubscribe page: inline style and a form posting back here, nothing else
            csp = (b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                   b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        headers.append((b"content-security-policy", csp))
        if self.https:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        security = self._security_headers(path)
        limit = self.max_body
        detail = f"the request body is larger than {limit} octets"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _send_problem(send, 400, "Bad Request", "invalid Content-Length",
                                        path=path, extra=security)
                    return
                if declared > limit:
                    if declared <= DRAIN_MAX:
                        await _drain(receive)
                    await _send_problem(send, 413, "Content Too Large", detail, path=path,
                                        extra=security)
                    return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(detail)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in security if n not in names]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _drain(receive, DRAIN_MAX - received)
                await _send_problem(send, 413, "Content Too Large", detail, path=path,
                                    extra=security)


__all__ = ["MAX_HEADER_TEXT", "GuardMiddleware", "HeaderText"]
