"""net.http_server: the HTTP listener serves any ASGI application on a socket it binds itself
(shared with SO_REUSEPORT when asked, refused otherwise), and stops cleanly."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable

import httpx
import pytest

from mailprime.net.http_server import AsgiMessage, Scope, bind_tcp, serve_http


async def hello(scope: Scope, receive: Callable[[], Awaitable[AsgiMessage]],
                send: Callable[[AsgiMessage], Awaitable[None]]) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"hello {scope['path']}".encode()})


def test_a_plain_asgi_app_is_served_and_the_listener_stops() -> None:
    async def scenario() -> None:
        listener = await serve_http(hello, host="127.0.0.1", port=0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as client:
                got = await client.get("/there")
            assert (got.status_code, got.text) == (200, "hello /there")
        finally:
            await listener.stop(grace=1.0)
        await listener.stop(grace=1.0)  # a second stop is a no-op
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{listener.port}/")

    asyncio.run(scenario())


def test_bind_shares_a_port_only_with_reuse_port() -> None:
    first = bind_tcp("127.0.0.1", 0, reuse_port=True)
    try:
        port = first.getsockname()[1]
        second = bind_tcp("127.0.0.1", port, reuse_port=True)  # another worker process's
        second.close()
        with pytest.raises(OSError) as refused:
            bind_tcp("127.0.0.1", port, reuse_port=False)
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        first.close()
