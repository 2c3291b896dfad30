"""Two writers on one database, in an order the test decides: what another process could do
between a storage function's read and its write.

`interleave` runs `first` (a storage function on a connection) in a transaction of a writer
engine made as the store makes its own (storage.sql.engines: BEGIN IMMEDIATE on SQLite), and
just before `first` executes its first statement starting with `at` ("UPDATE campaigns"), runs
`other` in a second connection and commits it, as another process would. No thread and no
sleep: the interleaving is a SQLAlchemy event on the first connection.

`other` does not wait for a lock `first` holds (PostgreSQL: lock_timeout; SQLite: busy timeout
0): it gives up, and `Outcome.other_committed` says so. That is what a lock taken by `first`
before the interleaving point does to the other process: makes it wait for `first`'s commit.
Either way the test asserts what must hold: never both "other committed" and "first applied
what it decided before other's change".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from mailprime.domain.errors import DomainError
from mailprime.storage.sql.engines import writer_engine
from mailprime.storage.sql.urls import parse_database_url


@dataclass
class Outcome:
    result: Any  # what `first` returned, or the DomainError it raised (then rolled back)
    other_committed: bool  # False: `other` needed a lock `first` held
    fired: bool  # `first` reached a statement starting with `at`


def _gave_up(exc: OperationalError) -> bool:
    text = str(exc.orig)
    return "lock timeout" in text or "database is locked" in text


@contextmanager
def _other_engine(url: str) -> Iterator[Engine]:
    db = parse_database_url(url)
    if db.backend == "sqlite":
        engine = create_engine(db.url, poolclass=NullPool, connect_args={"timeout": 0})
    else:
        engine = create_engine(db.url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def interleave(url: str, first: Callable[[Connection], Any],
               other: Callable[[Connection], object], *, at: str,
               after: bool = False) -> Outcome:
    """`after=True`: `other` runs just after that statement instead (its write done but not
    committed: another process acting while `first` is in flight)."""
    db = parse_database_url(url)
    engine = writer_engine(db)
    outcome = Outcome(result=None, other_committed=False, fired=False)
    try:
        with _other_engine(url) as other_engine, engine.connect() as conn:

            def before(_conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
                if outcome.fired or not statement.lstrip().upper().startswith(at.upper()):
                    return
                outcome.fired = True
                try:
                    with other_engine.begin() as second:
                        if db.backend == "postgresql":
                            second.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
                        other(second)
                    outcome.other_committed = True
                except OperationalError as exc:
                    if not _gave_up(exc):
                        raise

            event.listen(conn, "after_cursor_execute" if after else "before_cursor_execute",
                         before)
            try:
                with conn.begin():
                    outcome.result = first(conn)
            except DomainError as exc:
                outcome.result = exc
    finally:
        engine.dispose()
    return outcome
