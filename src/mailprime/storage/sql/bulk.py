"""Many-row statements on the hot write paths (accepts, campaign send rows) without
SQLAlchemy's per-row work on SQLite.

Theory of operation
-------------------
For an executemany, SQLAlchemy builds every row's parameters in Python — a dict per row, each
value through its type's bind processor — before the driver sees them: for a batch of campaign
messages that took more CPU than SQLite's own work (py-spy: `_init_compiled` and
`construct_params` were ~20 % of the dispatcher's process). So the callers here build each row
once, as a tuple of values in the form the database stores them, and:

- on SQLite the tuples go straight to the sqlite3 module's executemany, with SQL text made once
  per statement (`BulkInsert.sqlite`, `BulkUpdate.sqlite`). The values must then be what
  SQLAlchemy's processors would have bound: a timestamp as `UtcDateTime`'s text (`stamp`; the
  same function writes it there), str, int, bool (sqlite3 stores a bool as the integer SQLAlchemy
  would have made of it) and bytes (a BLOB, as SQLAlchemy's memoryview) as they are. Only
  columns with neither a Python-side default nor a NULL to fill may be left out, which the
  callers do not do: they name every column they used to give;
- on any other database (PostgreSQL) the tuples become dicts and run through the SQLAlchemy
  statement, as before: there the driver's round trips cost more than this Python, and
  SQLAlchemy's "insertmanyvalues" batching is what keeps them few.

`stamp(dialect, value)` gives a timestamp as that database's row wants it: the text on SQLite,
the datetime itself elsewhere (SQLAlchemy binds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert, Update

from mailprime.storage.sql.schema import insert_ignoring_conflicts, sqlite_stamp

_QUOTE = sqlite.dialect().identifier_preparer.quote

Row = tuple[Any, ...]


def stamp(dialect_name: str, value: datetime | None) -> object:
    """`value` for a UtcDateTime column of a bulk row (the module doc)."""
    if value is None or dialect_name != "sqlite":
        return value
    return sqlite_stamp(value)


class BulkInsert:
    """INSERT of rows given as tuples of `columns`, many at once (the module doc); with
    `ignore_conflicts_on`, a row whose key (those columns) is taken is skipped."""

    def __init__(self, table: Table, columns: Sequence[str],
                 ignore_conflicts_on: Sequence[str] = ()) -> None:
        self.table = table
        self.columns = tuple(columns)
        missing = [name for name in self.columns if name not in table.c]
        if missing:  # at import, rather than a misnamed column at run time
            raise KeyError(f"{table.name} has no column {missing}")
        # Only quoted identifiers of the schema and "?" go into the text.
        sql = (f"INSERT INTO {_QUOTE(table.name)} ({', '.join(map(_QUOTE, self.columns))}) "  # noqa: S608
               f"VALUES ({placeholders(len(self.columns))})")
        stmt: Insert
        if ignore_conflicts_on:
            sql += f" ON CONFLICT ({', '.join(map(_QUOTE, ignore_conflicts_on))}) DO NOTHING"
            stmt = insert_ignoring_conflicts("postgresql", table, *ignore_conflicts_on)
        else:
            stmt = insert(table)
        self.sqlite = sql
        self.statement = stmt

    def dicts(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        columns = self.columns
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def __call__(self, conn: Connection, rows: Sequence[Row]) -> int:
        """Inserts the rows; how many went in on SQLite (the driver's count of an
        executemany is exact there), -1 elsewhere (use `returning` to know)."""
        if not rows:
            return 0
        if conn.dialect.name == "sqlite":
            return int(conn.exec_driver_sql(self.sqlite, list(rows)).rowcount)
        conn.execute(self.statement, self.dicts(rows))
        return -1


class BulkUpdate:
    """An UPDATE run once per row given as a tuple: `sqlite` is its SQL text with "?" in the
    order of the tuple, `statement` the SQLAlchemy statement whose bind parameters are named by
    `names` in the same order (for the other databases)."""

    def __init__(self, sqlite_sql: str, statement: Update, names: Sequence[str]) -> None:
        self.sqlite = sqlite_sql
        self.statement = statement
        self.names = tuple(names)
        if sqlite_sql.count("?") != len(self.names):
            raise ValueError("the SQLite text and the names disagree on the parameters")

    def __call__(self, conn: Connection, rows: Sequence[Row]) -> None:
        if not rows:
            return
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(self.sqlite, list(rows))
            return
        names = self.names
        conn.execute(self.statement, [dict(zip(names, row, strict=True)) for row in rows])


def placeholders(count: int) -> str:
    """ "?, ?, ..." for an IN list (or a row) of `count` values in SQLite's SQL text."""
    return ", ".join("?" * count)


__all__ = ["BulkInsert", "BulkUpdate", "Row", "placeholders", "sqlite_stamp", "stamp"]
