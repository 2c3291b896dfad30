"""DKIM key operations (the DkimKeyStore port): add, list, activate, retire.

Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (store.py decides which). Activation is one transaction, so that
at every moment a domain has at most one active key of each type and signing never stops.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from mailprime.domain.dkim import DkimKey, DkimKeyType
from mailprime.domain.errors import AlreadyExists, NotFound
from mailprime.storage.sql.schema import dkim_keys


def _to_key(row: Any) -> DkimKey:
    return DkimKey(domain=row.domain, selector=row.selector, key_type=DkimKeyType(row.key_type),
                   private_key=row.private_key, created_at=row.created_at,
                   active=bool(row.active), retired_at=row.retired_at)


def _get(conn: Connection, domain: str, selector: str) -> DkimKey | None:
    row = conn.execute(select(dkim_keys).where(dkim_keys.c.domain == domain,
                                               dkim_keys.c.selector == selector)).first()
    return _to_key(row) if row is not None else None


def add_key(conn: Connection, key: DkimKey) -> None:
    """A selector names one key for ever (RFC 6376 3.1: a verifier caches what it found under
    it), so a retired one is not reused either."""
    if _get(conn, key.domain, key.selector) is not None:
        raise AlreadyExists(f"{key.domain} already has a DKIM key with selector {key.selector}")
    conn.execute(insert(dkim_keys), {
        "domain": key.domain, "selector": key.selector, "key_type": key.key_type.value,
        "private_key": key.private_key, "created_at": key.created_at, "active": key.active,
        "retired_at": key.retired_at})


def list_keys(conn: Connection, domain: str | None, active_only: bool) -> list[DkimKey]:
    stmt = select(dkim_keys)
    if domain is not None:
        stmt = stmt.where(dkim_keys.c.domain == domain)
    if active_only:
        stmt = stmt.where(dkim_keys.c.active.is_(True), dkim_keys.c.retired_at.is_(None))
    stmt = stmt.order_by(dkim_keys.c.domain, dkim_keys.c.created_at, dkim_keys.c.selector)
    return [_to_key(row) for row in conn.execute(stmt)]


def _published(conn: Connection, domain: str, selector: str) -> DkimKey:
    key = _get(conn, domain, selector)
    if key is None or key.retired_at is not None:
        raise NotFound(f"no published DKIM key {selector} for {domain}")
    return key


def activate_key(conn: Connection, domain: str, selector: str) -> DkimKey:
    """Makes the key the one active key of its domain and type; the one it replaces stays
    published (inactive). Idempotent."""
    key = _published(conn, domain, selector)
    conn.execute(update(dkim_keys)
                 .where(dkim_keys.c.domain == domain, dkim_keys.c.key_type == key.key_type.value,
                        dkim_keys.c.selector != selector, dkim_keys.c.active.is_(True))
                 .values(active=False))
    conn.execute(update(dkim_keys)
                 .where(dkim_keys.c.domain == domain, dkim_keys.c.selector == selector)
                 .values(active=True))
    return _published(conn, domain, selector)


def retire_key(conn: Connection, domain: str, selector: str, when: datetime) -> DkimKey:
    _published(conn, domain, selector)
    conn.execute(update(dkim_keys)
                 .where(dkim_keys.c.domain == domain, dkim_keys.c.selector == selector)
                 .values(active=False, retired_at=when))
    retired = _get(conn, domain, selector)
    assert retired is not None
    return retired


__all__ = ["activate_key", "add_key", "list_keys", "retire_key"]
