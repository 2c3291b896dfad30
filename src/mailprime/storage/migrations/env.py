"""Alembic environment: runs on the connection the caller opened (storage.sql.migrate).

The caller already holds a transaction (and on PostgreSQL an advisory lock; on SQLite the write
lock), so concurrent starts of several workers run the migrations exactly once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("mailprime migrations run through storage.sql.migrate, with a connection")

context.configure(
    connection=connection,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
