"""Throw-away PostgreSQL databases for tests (127.0.0.1:5432, trust auth, user postgres or root).

`admin_url()` finds a server or returns None (the caller skips with `PG_SKIP`); `PgDatabases`
creates fresh databases and drops every one of them at the end (WITH (FORCE): a server process
killed by a failing test may still hold a connection).
"""

from __future__ import annotations

import secrets

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

PG_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
)
PG_SKIP = "PostgreSQL not reachable at 127.0.0.1:5432 (trust auth, user postgres or root)"


def admin_url() -> str | None:
    for candidate in PG_CANDIDATES:
        engine = create_engine(candidate, poolclass=NullPool, connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                return candidate
        except OperationalError:
            continue
        finally:
            engine.dispose()
    return None


class PgDatabases:
    def __init__(self, admin: str, prefix: str = "mailprime_t") -> None:
        self.admin_url = admin
        self.prefix = prefix
        self.engine = create_engine(admin, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, *, driver: str = "postgresql+psycopg") -> str:
        """A new, empty database's URL; driver "postgresql" gives the form an operator writes."""
        name = f"{self.prefix}_{secrets.token_hex(6)}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        url = make_url(self.admin_url).set(drivername=driver, database=name)
        return url.render_as_string(hide_password=False)

    def count(self, url: str, sql: str) -> int:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1),
                               poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()

    def drop_all(self) -> None:
        with self.engine.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()
