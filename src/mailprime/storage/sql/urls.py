"""Database URLs as operators write them, mapped to the SQLAlchemy driver we run on.

We run synchronous SQLAlchemy on threads (see committer.py), so the drivers are the blocking
ones: Python's sqlite3 and psycopg 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mailprime.domain.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    url: URL
    backend: str  # "sqlite" or "postgresql"

    def render(self) -> str:
        """The URL with the password masked, for logs and error messages."""
        return self.url.render_as_string(hide_password=True)


def parse_database_url(text: str) -> DatabaseUrl:
    """Accepts "sqlite:///path" and "postgresql://..." (also "postgres://", "postgresql+psycopg://")."""
    raw = text.strip()
    if raw.startswith("postgres://"):  # the spelling Heroku and libpq both accept
        raw = "postgresql://" + raw[len("postgres://"):]
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(f"storage.url: not a database URL: {text!r}") from exc
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ConfigError(f"storage.url: unsupported SQLite driver {driver!r} (use sqlite:///path)")
        if not url.database or url.database == ":memory:":
            # Every worker thread and process must see the same database: a file is required.
            raise ConfigError("storage.url: SQLite needs a file path (sqlite:///path/to/mailprime.db)")
        return DatabaseUrl(url.set(drivername="sqlite+pysqlite"), "sqlite")
    if backend == "postgresql":
        if driver not in ("", "psycopg"):
            raise ConfigError(
                f"storage.url: unsupported PostgreSQL driver {driver!r} (use postgresql://...)")
        return DatabaseUrl(url.set(drivername="postgresql+psycopg"), "postgresql")
    raise ConfigError(f"storage.url: unsupported database {backend!r} (use sqlite:/// or postgresql://)")
