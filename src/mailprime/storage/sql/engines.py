"""Engines with the connection settings our durability and concurrency rules depend on.

Two engines per store: the writer's (one connection, used only by the group-commit thread) and
the readers' (a small pool for the read thread pool). On SQLite they differ in how a transaction
begins: the writer takes the database write lock up front (BEGIN IMMEDIATE) so that a
read-then-write — UID allocation, claiming queue rows — can never fail half-way with
SQLITE_BUSY_SNAPSHOT when another process (an SO_REUSEPORT worker) wrote in between; readers
begin a deferred transaction and never block anyone (WAL).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from mailprime.storage.sql.urls import DatabaseUrl

# How long a SQLite writer waits for another process's write lock before failing (the accept
# then answers 451 and the client retries). Commits take milliseconds; 30 s means "stuck".
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _enable_wal(cur: sqlite3.Cursor) -> None:
    """Switches the database to WAL (a no-op once it is). Switching needs an exclusive lock and
    SQLite reports a conflict at once instead of calling the busy handler, so two processes
    creating the database together would fail: retry, with backoff, up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            mode = str(cur.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    if mode.lower() != "wal":  # e.g. a file system without shared memory: refuse, not degrade
        raise sqlite3.OperationalError(f"cannot use WAL on this database (journal_mode={mode})")


# The page size of a database file this creates (an existing file keeps its own: in WAL mode
# SQLite cannot change it). A queued message is one row of ~1-100 KB (blobs.data): with 4 KB
# pages a 14 KB campaign message spans a leaf page and three overflow pages, each written to
# the WAL as two writes (frame header, page) and again to the database at a checkpoint; with
# 16 KB pages it is one page. Measured on the 100,000-message campaign bench: the writer
# thread's CPU 110 -> 79 us a message (its kernel time 67 -> 42). Larger pages write less still
# for big rows (64 KB: 34 us of kernel time) but every small update rewrites a whole page: the
# relay bench (per-message transactions) lost ~10 % at 32 KB, nothing measurable at 16 KB, and
# SMTP accept was within its spread at both (docs/benchmarks.md).
SQLITE_PAGE_SIZE = 16384

# SQLite reads a blob of a few pages (a 13 KB message: four overflow pages) through one pread
# per page unless the database file is memory-mapped: mapped, the read of such a message takes
# half the time (4.5 -> 2.2 us, measured). Address space only; the pages are the page cache's.
# Readers only: the writer's pages go through the WAL anyway.
SQLITE_READER_MMAP_SIZE = 1 << 30


def _sqlite_engine(db: DatabaseUrl, *, pool_size: int, begin: str, mmap_size: int = 0) -> Engine:
    engine = create_engine(
        db.url,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (which would skip it before SELECTs) and let
        # SQLAlchemy emit ours, below: the documented recipe for correct SQLite transactions.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # Before WAL is on: a new (empty) file takes it; an existing one ignores it.
            cur.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            _enable_wal(cur)  # readers never block the writer
            cur.execute("PRAGMA synchronous = FULL")  # a COMMIT fsyncs the WAL: accept means durable
            cur.execute("PRAGMA foreign_keys = ON")
            if mmap_size:
                cur.execute(f"PRAGMA mmap_size = {mmap_size}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _postgresql_engine(db: DatabaseUrl, *, pool_size: int, pre_ping: bool) -> Engine:
    return create_engine(
        db.url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        # Whatever the server default, our commits must be durable before we answer.
        connect_args={"options": "-c synchronous_commit=on -c timezone=UTC"},
    )


def writer_engine(db: DatabaseUrl) -> Engine:
    if db.backend == "sqlite":
        return _sqlite_engine(db, pool_size=1, begin="BEGIN IMMEDIATE")
    # No pre-ping: it would cost a round trip per batch. A dropped connection fails one batch,
    # is invalidated, and the per-item retry runs on a fresh one.
    return _postgresql_engine(db, pool_size=1, pre_ping=False)


def reader_engine(db: DatabaseUrl, pool_size: int) -> Engine:
    if db.backend == "sqlite":
        return _sqlite_engine(db, pool_size=pool_size, begin="BEGIN",
                              mmap_size=SQLITE_READER_MMAP_SIZE)
    return _postgresql_engine(db, pool_size=pool_size, pre_ping=True)
