"""A live web app for the tests: a real SQLite store, `create_app` served by uvicorn (our
net.http_server) on an ephemeral loopback port, and an httpx client speaking to it over the
socket.

Tests are plain functions that run `asyncio.run(scenario())` and open `live_web(...)` inside, so
the server, the store and the client share the test's own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from mailprime.config import (
    BounceSettings,
    HttpSettings,
    MarketingSettings,
    ServerSettings,
    Settings,
)
from mailprime.domain.api_keys import new_api_key
from mailprime.marketing.tokens import TokenSigner
from mailprime.net.http_server import HttpListener, serve_http
from mailprime.storage.sql import SqlStore, open_store
from mailprime.web.app import create_app
from mailprime.web.deps import WebDeps

LINK_KEY = bytes(range(32))


class MovableClock:
    def __init__(self) -> None:
        self.current = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class LiveWeb:
    store: SqlStore
    listener: HttpListener
    client: httpx.AsyncClient
    signer: TokenSigner
    clock: MovableClock
    settings: Settings
    app: FastAPI | None = None  # its state holds what runtime would hand it (the injector)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listener.port}"

    async def key(self, *scopes: str, name: str = "test") -> str:
        """A new API key with `scopes`; returns its text (as `apikey create` shows it)."""
        made = new_api_key()
        await self.store.add_api_key(name, made.prefix, made.secret_hash, frozenset(scopes),
                                     self.clock.now())
        return made.text


@asynccontextmanager
async def live_web(tmp: Path, *, max_request_size: int = 64 * 1024,
                   suppression_scope: str = "global",
                   machine_networks: list[str] | None = None, public_url: str = "",
                   postal_address: str = "") -> AsyncIterator[LiveWeb]:
    settings = Settings(
        server=ServerSettings(data_dir=str(tmp)),
        http=HttpSettings(enabled=True, port=0, max_request_size=max_request_size,
                          machine_networks=machine_networks or [], public_url=public_url),
        bounces=BounceSettings(scope=suppression_scope),
        marketing=MarketingSettings(postal_address=postal_address),
        config_path=str(tmp / "mailprime.toml"))
    clock = MovableClock()
    store = await open_store(f"sqlite:///{tmp / 'web.db'}", spool_dir=tmp / "spool",
                             inline_max=1 << 20, clock=clock)
    signer = TokenSigner([LINK_KEY])
    app = create_app(WebDeps.build(store, settings, clock, signer))
    listener = await serve_http(app, host="127.0.0.1", port=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}",
                                     timeout=10.0) as client:
            yield LiveWeb(store, listener, client, signer, clock, settings, app)
    finally:
        await listener.stop(grace=2.0)
        await store.close()
