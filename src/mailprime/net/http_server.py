"""The HTTP listener: uvicorn's Server driven on our event loop, with our socket and our signals.

    listener = await serve_http(app, host="127.0.0.1", port=0, reuse_port=False)
    ... listener.port ...
    await listener.stop(grace=10.0)

Any ASGI application is served (web.app builds the FastAPI one; the runtime hands it here), so
the web layer stays the application and this module is the only HTTP code that touches a socket.

Theory of operation. `uvicorn.Server.serve()` installs its own SIGINT/SIGTERM handlers and owns
the process's life; mailprime's runtime already does (one drain for every listener). So this
module calls the parts of uvicorn's Server that do the work: `startup(sockets=[ours])` binds the
protocol to a socket we made (SO_REUSEPORT when several worker processes share the port, like
the SMTP/IMAP/POP3 listeners), a task runs `main_loop()` (it refreshes the Date header each
second and ends when `should_exit` is set), and `stop(grace)` sets it and calls `shutdown()`,
which stops accepting, lets requests in flight finish for up to `grace` seconds, then cancels.
Limits: uvicorn's h11 parser bounds the request line and header fields (16 KiB, RFC 9112 2.3
leaves it to the server), `limit_concurrency` the connections, the app the body (web.guards).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol

import uvicorn

MAX_HEADER_OCTETS = 16 * 1024
MAX_CONNECTIONS = 1000
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open

# The ASGI 3 interface (asgiref's spec): a scope, and message channels in and out. The
# mappings are the specification's own shape, not ours to type further.
Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]


class AsgiApp(Protocol):
    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[AsgiMessage]],
                       send: Callable[[AsgiMessage], Awaitable[None]]) -> None: ...


def bind_tcp(host: str, port: int, *, reuse_port: bool, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpListener:
    """A running HTTP listener; `port` is the bound one (useful with port 0)."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False

    async def _start(self) -> None:
        await self._server.startup(sockets=[self._sock])
        self._loop_task = asyncio.create_task(self._server.main_loop(), name="http-main-loop")

    async def stop(self, grace: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.should_exit = True
        self._server.config.timeout_graceful_shutdown = max(1, round(grace))
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._server.shutdown(sockets=[self._sock])


async def serve_http(app: AsgiApp, *, host: str, port: int, reuse_port: bool = False,
                     trusted_proxies: Sequence[str] = ()) -> HttpListener:
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False,
        http="h11", ws="none", proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None, limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE, h11_max_incomplete_event_size=MAX_HEADER_OCTETS)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = bind_tcp(host, port, reuse_port=reuse_port)
    listener = HttpListener(server, sock)
    try:
        await listener._start()
    except BaseException:
        sock.close()
        raise
    return listener


__all__ = ["AsgiApp", "HttpListener", "bind_tcp", "serve_http"]
