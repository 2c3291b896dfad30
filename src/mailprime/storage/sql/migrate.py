"""Brings a database to the newest schema with Alembic, run programmatically (no alembic.ini).

Alembic is imported only when a migration has to run: every CLI command opens the store, and
checking one version row in SQL is much cheaper than loading Alembic to do it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest revision in migrations/versions (a test checks that Alembic agrees).
HEAD_REVISION = "0016"
VERSION_TABLE = "alembic_version"  # Alembic's default

# pg_advisory_xact_lock key: "mailprim" as an integer, so nodes starting together migrate once.
_PG_MIGRATION_LOCK = int.from_bytes(b"mailprim", "big") & 0x7FFFFFFFFFFFFFFF
# Alembic's migration context is process-global (alembic.context): two upgrades running at once
# in one process, even on different databases, corrupt each other. Serialise them here.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config() -> Config:
    from alembic.config import Config  # noqa: PLC0415 - lazy, see the module doc

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(value) if value is not None else None


def upgrade_to_head(engine: Engine) -> None:
    """Idempotent, and safe when several processes or nodes start at once: the migrations run
    inside one transaction that holds the SQLite write lock (the engine begins with BEGIN
    IMMEDIATE) or a PostgreSQL advisory lock; whoever comes second finds the schema at head.

    On SQLite, foreign key enforcement is off while migrating: rebuilding a table by copying
    (Alembic batch mode) drops the original, which enforcement would refuse or cascade. The
    pragma only takes effect outside a transaction, so it is set on the raw connection before
    ours begins, and the keys are checked (PRAGMA foreign_key_check) before the commit."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                _upgrade_in_transaction(conn)
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys = ON")


def _upgrade_in_transaction(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    if current_revision(conn) == HEAD_REVISION:
        return
    from alembic import command  # noqa: PLC0415 - lazy, see the module doc

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    with _ALEMBIC_LOCK:
        command.upgrade(cfg, "head")
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left foreign keys broken: {broken[:5]}")
