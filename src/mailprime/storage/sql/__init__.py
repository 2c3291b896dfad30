"""The SQL implementation of the storage ports (SQLAlchemy Core; SQLite WAL or PostgreSQL)."""

from mailprime.storage.sql.committer import CommitStats
from mailprime.storage.sql.store import SqlStore, open_store

__all__ = ["CommitStats", "SqlStore", "open_store"]
