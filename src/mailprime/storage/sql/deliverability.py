"""Deliverability tables (the SuppressionStore, SendingIpStore and MtaStsStore ports).

Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (store.py decides which). Counters (ip_usage, tls_results) are
added with one upsert per key, so processes that flush their in-memory counts concurrently
never lose each other's increments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailprime.domain.audience import email_hash
from mailprime.domain.deliverability import (
    GLOBAL_SCOPE,
    MtaStsPolicyRecord,
    Suppression,
    SuppressionReason,
    TlsResultKey,
    normalize_address,
)
from mailprime.domain.ids import QueueId
from mailprime.storage.sql.schema import (
    ip_usage,
    mta_sts_policies,
    soft_bounces,
    suppressions,
    tls_results,
)


def _dialect_insert(conn: Connection, table: Any) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# ---- suppressions ------------------------------------------------------------------------------

MAX_DETAIL = 2000  # octets of evidence kept: a DSN diagnostic is at most this long (bounce_parse)

def _to_suppression(row: Any) -> Suppression:
    return Suppression(address=row.address, scope=row.scope, reason=SuppressionReason(row.reason),
                       created_at=row.created_at, detail=row.detail,
                       queue_id=QueueId(row.queue_id) if row.queue_id else None)


def suppress(conn: Connection, entry: Suppression) -> bool:
    # RETURNING says whether the row went in: psycopg reports rowcount -1 for an
    # INSERT ... ON CONFLICT DO NOTHING, which read as "new" every time.
    stmt = _dialect_insert(conn, suppressions).on_conflict_do_nothing(
        index_elements=["address", "scope"]).returning(suppressions.c.address)
    result = conn.execute(stmt, {
        "address": normalize_address(entry.address), "scope": entry.scope.lower(),
        "reason": entry.reason.value, "detail": entry.detail[:MAX_DETAIL],
        "queue_id": entry.queue_id, "created_at": entry.created_at})
    return result.first() is not None


def unsuppress(conn: Connection, address: str, scope: str | None) -> int:
    stmt = delete(suppressions).where(suppressions.c.address == normalize_address(address))
    if scope is not None:
        stmt = stmt.where(suppressions.c.scope == scope.lower())
    return int(conn.execute(stmt).rowcount)


def find_suppression(conn: Connection, address: str, sending_domain: str) -> Suppression | None:
    scopes = {GLOBAL_SCOPE, sending_domain.lower()}
    # An erased address is kept only as its hash (domain.audience.email_hash): match both.
    key = normalize_address(address)
    rows = sorted(conn.execute(select(suppressions).where(
        suppressions.c.address.in_((key, email_hash(key))),
        suppressions.c.scope.in_(scopes))), key=lambda r: r.scope != GLOBAL_SCOPE)
    return _to_suppression(rows[0]) if rows else None  # the global entry first


def list_suppressions(conn: Connection, scope: str | None, limit: int) -> Sequence[Suppression]:
    stmt = select(suppressions).order_by(suppressions.c.created_at.desc(),
                                         suppressions.c.address, suppressions.c.scope).limit(limit)
    if scope is not None:
        stmt = stmt.where(suppressions.c.scope == scope.lower())
    return [_to_suppression(r) for r in conn.execute(stmt)]


def _address_lock_key(address: str, scope: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock naming one (address, scope): a collision
    only makes two addresses wait for each other, never count together."""
    digest = hashlib.sha256(b"mailprime-soft-bounce\0" + f"{scope}\0{address}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def record_soft_bounce(conn: Connection, address: str, scope: str, at: datetime,
                       window_start: datetime) -> int:
    address, scope = normalize_address(address), scope.lower()
    if conn.dialect.name == "postgresql":
        # READ COMMITTED: two transactions that each insert and then count would each see the
        # committed rows plus their own, and both miss the limit. One at a time per address
        # (the lock is held to COMMIT); SQLite has one writer already.
        conn.execute(select(func.pg_advisory_xact_lock(_address_lock_key(address, scope))))
    where = (soft_bounces.c.address == address, soft_bounces.c.scope == scope)
    conn.execute(delete(soft_bounces).where(*where, soft_bounces.c.at < window_start))
    conn.execute(insert(soft_bounces), {"address": address, "scope": scope, "at": at})
    return int(conn.execute(select(func.count()).select_from(soft_bounces).where(*where)).scalar_one())


def purge_soft_bounces(conn: Connection, before: datetime) -> int:
    """Forgets every soft bounce older than `before` (any address): record_soft_bounce prunes
    only the address it counts, so addresses that never bounce again would stay for ever."""
    return int(conn.execute(delete(soft_bounces).where(soft_bounces.c.at < before)).rowcount)


# ---- counters ------------------------------------------------------------------------------------

def add_ip_usage(conn: Connection, day: date, counts: Mapping[str, int]) -> None:
    for ip, sent in counts.items():
        stmt = _dialect_insert(conn, ip_usage)
        stmt = stmt.on_conflict_do_update(index_elements=["ip", "day"],
                                          set_={"sent": ip_usage.c.sent + stmt.excluded.sent})
        conn.execute(stmt, {"ip": ip, "day": day.isoformat(), "sent": sent})


def get_ip_usage(conn: Connection, day: date) -> Mapping[str, int]:
    rows = conn.execute(select(ip_usage.c.ip, ip_usage.c.sent)
                        .where(ip_usage.c.day == day.isoformat()))
    return {r.ip: int(r.sent) for r in rows}


def add_tls_results(conn: Connection, day: date, counts: Mapping[TlsResultKey, int]) -> None:
    keys = ["day", "policy_domain", "policy_type", "result_type", "receiving_mx"]
    for key, count in counts.items():
        stmt = _dialect_insert(conn, tls_results)
        stmt = stmt.on_conflict_do_update(index_elements=keys,
                                          set_={"count": tls_results.c.count + stmt.excluded.count})
        conn.execute(stmt, {"day": day.isoformat(), "policy_domain": key.policy_domain,
                            "policy_type": key.policy_type, "result_type": key.result_type,
                            "receiving_mx": key.receiving_mx, "count": count})


def get_tls_results(conn: Connection, day: date) -> Sequence[tuple[TlsResultKey, int]]:
    rows = conn.execute(select(tls_results).where(tls_results.c.day == day.isoformat())
                        .order_by(tls_results.c.policy_domain, tls_results.c.result_type))
    return [(TlsResultKey(r.policy_domain, r.policy_type, r.result_type, r.receiving_mx),
             int(r._mapping["count"])) for r in rows]


# ---- MTA-STS policy cache --------------------------------------------------------------------------

def save_mta_sts_policy(conn: Connection, policy: MtaStsPolicyRecord) -> None:
    values = {"domain": policy.domain.lower(), "policy_id": policy.policy_id,
              "policy_text": policy.policy_text, "fetched_at": policy.fetched_at,
              "expires_at": policy.expires_at}
    stmt = _dialect_insert(conn, mta_sts_policies)
    stmt = stmt.on_conflict_do_update(index_elements=["domain"],
                                      set_={k: v for k, v in values.items() if k != "domain"})
    conn.execute(stmt, values)


def get_mta_sts_policy(conn: Connection, domain: str) -> MtaStsPolicyRecord | None:
    row = conn.execute(select(mta_sts_policies)
                       .where(mta_sts_policies.c.domain == domain.lower())).first()
    if row is None:
        return None
    return MtaStsPolicyRecord(domain=row.domain, policy_id=row.policy_id,
                              policy_text=row.policy_text, fetched_at=row.fetched_at,
                              expires_at=row.expires_at)
