"""net.http_client against a scripted HTTP server on a loopback port: the request as sent byte for
byte, the three ways an answer's body is framed, and refusals (too large, not HTTP, silence)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mailprime.net.http_client import HttpClient


async def exchange(answer: bytes, *, max_reply: int = 1000, timeout: float = 5.0,
                   headers: list[tuple[str, str]] | None = None) -> tuple[tuple[int, bytes], bytes]:
    """Serves one connection with `answer` (then closes); returns the client's result and the
    request the server read."""
    seen = bytearray()
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            seen.extend(head + await reader.readexactly(length))
            if answer:
                writer.write(answer)
                await writer.drain()
            else:
                await reader.read()  # silent until the client gives up and closes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client refused to send, or hung up
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            try:
                result = await HttpClient().post(
                    f"http://127.0.0.1:{port}/checkv2", headers or [("IP", "1.2.3.4")], b"body",
                    timeout=timeout, max_reply=max_reply)
            finally:
                await asyncio.wait_for(done.wait(), 5)
    finally:
        server.close()
    return result, bytes(seen)


def test_request_bytes_and_content_length_answer() -> None:
    result, request = asyncio.run(exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    assert result == (200, b"hello")
    assert request.startswith(b"POST /checkv2 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert request.endswith(b"\r\nContent-Length: 4\r\nConnection: close\r\nIP: 1.2.3.4\r\n\r\nbody")


def test_chunked_and_close_delimited_answers() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert asyncio.run(exchange(chunked))[0] == (200, b"abcde")
    assert asyncio.run(exchange(b"HTTP/1.0 503 Busy\r\n\r\nlater"))[0] == (503, b"later")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048,
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000,
    b"SMTP/1.0 220 hello\r\n\r\n",
])
def test_too_large_or_not_http_is_value_error(answer: bytes) -> None:
    with pytest.raises(ValueError):
        asyncio.run(exchange(answer))


def test_silence_times_out_and_line_breaks_in_headers_are_refused() -> None:
    with pytest.raises(TimeoutError):
        asyncio.run(exchange(b"", timeout=0.3))
    with pytest.raises(ValueError, match="line break"):
        asyncio.run(exchange(b"HTTP/1.1 200 OK\r\n\r\n", headers=[("Rcpt", "a@b\r\nX: y")]))


def test_truncated_answer_is_connection_error() -> None:
    with pytest.raises(ConnectionError):
        asyncio.run(exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"))
