"""Fixtures for the storage contract suite: every test runs on SQLite and on PostgreSQL.

PostgreSQL is looked for at 127.0.0.1:5432 (trust auth, user postgres or root). The suite creates
its own database `mailprime_t_<random>` for the session, empties it before each test, and drops
it at the end; without a server, the PostgreSQL cases are skipped with a message saying so.
Async tests (`async def test_...`) run on a fresh event loop each, via `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from mailprime.storage.sql import SqlStore, open_store
from mailprime.storage.sql.schema import ALL_TABLES
from tests.support.postgres import PG_SKIP, PgDatabases, admin_url


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True


class FixedClock:
    """A clock the test moves by hand (storage takes its `now` from a Clock)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current


@dataclass
class Backend:
    name: str
    url: str
    spool_dir: Path
    new_database: Callable[[], str]  # URL of a brand-new, empty database
    clock: FixedClock = field(default_factory=FixedClock)

    async def open_raw(self, url: str | None = None, **kw: Any) -> SqlStore:
        kw.setdefault("inline_max", 64 * 1024)
        kw.setdefault("clock", self.clock)
        return await open_store(url or self.url, spool_dir=self.spool_dir, **kw)

    @asynccontextmanager
    async def open(self, url: str | None = None, **kw: Any) -> AsyncIterator[SqlStore]:
        store = await self.open_raw(url, **kw)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases | None]:
    admin = admin_url()
    if admin is None:
        yield None
        return
    dbs = PgDatabases(admin)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture(scope="session")
def pg_session_url(pg_databases: PgDatabases | None) -> str | None:
    return pg_databases.create() if pg_databases else None


def _empty_tables(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            if conn.execute(text("SELECT to_regclass('public.events')")).scalar() is not None:
                names = ", ".join(t.name for t in ALL_TABLES)
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, pg_databases: PgDatabases | None,
            pg_session_url: str | None) -> Backend:
    spool = tmp_path / "spool"
    if request.param == "sqlite":
        counter = iter(range(1_000))
        return Backend("sqlite", f"sqlite:///{tmp_path / 'mail.db'}", spool,
                       lambda: f"sqlite:///{tmp_path / f'fresh{next(counter)}.db'}")
    if pg_databases is None or pg_session_url is None:
        pytest.skip(PG_SKIP)
    _empty_tables(pg_session_url)
    return Backend("postgresql", pg_session_url, spool, pg_databases.create)
