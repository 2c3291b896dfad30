"""API key rows (the ApiKeyStore port): add, find by prefix, list, revoke, note a use.

Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (store.py decides which). A key's name is unique among the keys
that are not revoked (checked inside the inserting transaction, which holds the write lock on
SQLite; on PostgreSQL two nodes could race, and the worst outcome is two keys of one name, each
still revocable by its prefix). The last-use time is written at most once per interval: the
UPDATE's own condition says so, so processes that share the database need not agree first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Connection

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.errors import AlreadyExists, NotFound
from mailprime.domain.ids import ApiKeyId
from mailprime.storage.sql.schema import api_keys


def _to_key(row: Any) -> ApiKey:
    return ApiKey(id=ApiKeyId(row.id), name=row.name, prefix=row.prefix,
                  secret_hash=row.secret_hash, scopes=frozenset(row.scopes.split()),
                  created_at=row.created_at, last_used_at=row.last_used_at,
                  revoked_at=row.revoked_at)


def add_key(conn: Connection, name: str, prefix: str, secret_hash: str, scopes: frozenset[str], *,
            created_at: datetime) -> ApiKey:
    taken = conn.execute(select(api_keys.c.id).where(
        api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
    if taken is not None:
        raise AlreadyExists(f"an API key named {name!r} exists; revoke it first or pick another name")
    if conn.execute(select(api_keys.c.id).where(api_keys.c.prefix == prefix)).first() is not None:
        raise AlreadyExists(f"an API key with prefix {prefix} exists")
    new_id = conn.execute(insert(api_keys).returning(api_keys.c.id), {
        "name": name, "prefix": prefix, "secret_hash": secret_hash,
        "scopes": " ".join(sorted(scopes)), "created_at": created_at}).scalar_one()
    return ApiKey(id=ApiKeyId(int(new_id)), name=name, prefix=prefix, secret_hash=secret_hash,
                  scopes=scopes, created_at=created_at)


def find_key(conn: Connection, prefix: str) -> ApiKey | None:
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
    return _to_key(row) if row is not None else None


def list_keys(conn: Connection, include_revoked: bool) -> Sequence[ApiKey]:
    stmt = select(api_keys).order_by(api_keys.c.id)
    if not include_revoked:
        stmt = stmt.where(api_keys.c.revoked_at.is_(None))
    return [_to_key(row) for row in conn.execute(stmt)]


def revoke_key(conn: Connection, name_or_prefix: str, at: datetime) -> ApiKey:
    row = conn.execute(select(api_keys).where(
        api_keys.c.revoked_at.is_(None),
        or_(api_keys.c.name == name_or_prefix, api_keys.c.prefix == name_or_prefix))).first()
    if row is None:
        raise NotFound(f"no unrevoked API key named or prefixed {name_or_prefix!r}")
    conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=at))
    return replace(_to_key(row), revoked_at=at)


def touch_key(conn: Connection, key_id: ApiKeyId, at: datetime, min_interval: timedelta) -> bool:
    """Sets last_used_at to `at` unless it was set less than `min_interval` before; True if set."""
    result = conn.execute(update(api_keys).where(
        api_keys.c.id == key_id,
        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= at - min_interval),
    ).values(last_used_at=at))
    return bool(result.rowcount)
