"""Directory operations: local domains, accounts (with their folders) and aliases.

Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (store.py decides which). Address keys fold the local part to
lower case (Address.key), so "Bob@Example.com" and "bob@example.com" are one account.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, union, update
from sqlalchemy.engine import Connection

from mailprime.domain.address import Address, normalize_domain
from mailprime.domain.errors import AlreadyExists, InvalidAddress, NotFound
from mailprime.domain.ids import AccountId, BlobId
from mailprime.domain.mail import Account, Alias
from mailprime.storage.sql.folders import DEFAULT_FOLDERS, UidValidityClock
from mailprime.storage.sql.rows import to_account
from mailprime.storage.sql.schema import (
    accounts,
    aliases,
    blobs,
    domains,
    insert_ignoring_conflicts,
    mailbox_messages,
    mailboxes,
    queue_messages,
)

# ---- domains -------------------------------------------------------------------------------


def add_domain(conn: Connection, name: str, now: datetime) -> None:
    """Idempotent: adding a domain that is already local changes nothing."""
    stmt = insert_ignoring_conflicts(conn.dialect.name, domains, "name")
    conn.execute(stmt, {"name": normalize_domain(name), "created_at": now})


def remove_domain(conn: Connection, name: str) -> None:
    conn.execute(delete(domains).where(domains.c.name == normalize_domain(name)))


def list_domains(conn: Connection) -> list[str]:
    return list(conn.execute(select(domains.c.name).order_by(domains.c.name)).scalars())


def is_local_domain(conn: Connection, name: str) -> bool:
    try:
        key = normalize_domain(name)
    except InvalidAddress:
        return False
    return conn.execute(select(domains.c.name).where(domains.c.name == key)).first() is not None


# ---- accounts ------------------------------------------------------------------------------


def _key(address: str) -> str | None:
    try:
        return Address.parse(address).key
    except InvalidAddress:
        return None


def add_account(conn: Connection, address: str, password_hash: str, now: datetime,
                uidvalidity: UidValidityClock) -> Account:
    addr = Address.parse(address)  # InvalidAddress reaches the caller as is
    if conn.execute(select(accounts.c.id).where(accounts.c.address_key == addr.key)).first():
        raise AlreadyExists(f"account {addr} already exists")
    account_id = conn.execute(
        insert(accounts).returning(accounts.c.id),
        {"address": str(addr), "address_key": addr.key, "password_hash": password_hash,
         "created_at": now, "disabled": False},
    ).scalar_one()
    conn.execute(insert(mailboxes), [
        {"account_id": account_id, "name": name, "uidvalidity": uidvalidity.next(now), "uidnext": 1,
         "special_use": use}
        for name, use in DEFAULT_FOLDERS
    ])
    return Account(id=AccountId(account_id), address=str(addr), password_hash=password_hash,
                   created_at=now)


def get_account(conn: Connection, address: str) -> Account | None:
    key = _key(address)
    if key is None:
        return None
    row = conn.execute(select(accounts).where(accounts.c.address_key == key)).first()
    return to_account(row) if row else None


def get_account_by_id(conn: Connection, account_id: AccountId) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return to_account(row) if row else None


def list_accounts(conn: Connection) -> list[Account]:
    return [to_account(r) for r in conn.execute(select(accounts).order_by(accounts.c.address_key))]


def set_password(conn: Connection, address: str, password_hash: str) -> None:
    key = _key(address)
    if key is None or conn.execute(update(accounts).where(accounts.c.address_key == key)
                                   .values(password_hash=password_hash)).rowcount == 0:
        raise NotFound(f"no account {address}")


def remove_account(conn: Connection, address: str) -> list[str]:
    """Deletes the account with its mailboxes and messages (foreign keys cascade); returns the
    spool files of content no longer referenced, to be unlinked once this commits."""
    key = _key(address)
    account_id = None if key is None else conn.execute(
        select(accounts.c.id).where(accounts.c.address_key == key)).scalar()
    if account_id is None:
        raise NotFound(f"no account {address}")
    blob_ids = list(conn.execute(
        select(mailbox_messages.c.blob_id).distinct()
        .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
        .where(mailboxes.c.account_id == account_id)).scalars())
    conn.execute(delete(accounts).where(accounts.c.id == account_id))
    return release_blobs(conn, blob_ids)


def release_blobs(conn: Connection, candidates: Sequence[BlobId]) -> list[str]:
    """Deletes the candidate blobs nothing references any more; returns the spool paths no row
    names any more (a batch file shared with blobs that remain stays).

    On PostgreSQL two transactions releasing a shared file's last two blobs at once may each
    see the other's row and keep the file: the spool sweep removes it later, unreferenced."""
    if not candidates:
        return []
    used = set(conn.execute(union(
        select(mailbox_messages.c.blob_id).where(mailbox_messages.c.blob_id.in_(candidates)),
        select(queue_messages.c.blob_id).where(queue_messages.c.blob_id.in_(candidates)),
    )).scalars())
    orphans = [b for b in candidates if b not in used]
    if not orphans:
        return []
    rows = conn.execute(select(blobs.c.path, blobs.c.file_offset)
                        .where(blobs.c.id.in_(orphans), blobs.c.path.is_not(None))).all()
    conn.execute(delete(blobs).where(blobs.c.id.in_(orphans)))
    own = [row.path for row in rows if row.file_offset is None]
    shared = sorted({row.path for row in rows if row.file_offset is not None})
    if shared:
        kept = set(conn.execute(select(blobs.c.path).distinct()
                                .where(blobs.c.path.in_(shared))).scalars())
        own += [path for path in shared if path not in kept]
    return own


# ---- aliases -------------------------------------------------------------------------------


def alias_source(source: str) -> str:
    """"@domain" (catch-all) or an address key."""
    text = source.strip()
    if text.startswith("@"):
        return "@" + normalize_domain(text[1:])
    return Address.parse(text).key


def add_alias(conn: Connection, source: str, destination: str) -> None:
    """Idempotent for an existing (source, destination) pair."""
    stmt = insert_ignoring_conflicts(conn.dialect.name, aliases, "source", "destination")
    conn.execute(stmt, {"source": alias_source(source), "destination": str(Address.parse(destination))})


def remove_alias(conn: Connection, source: str, destination: str | None) -> None:
    stmt = delete(aliases).where(aliases.c.source == alias_source(source))
    if destination is not None:
        stmt = stmt.where(aliases.c.destination == str(Address.parse(destination)))
    conn.execute(stmt)


def list_aliases(conn: Connection) -> list[Alias]:
    rows = conn.execute(select(aliases.c.source, aliases.c.destination)
                        .order_by(aliases.c.source, aliases.c.id))
    return [Alias(source=r.source, destination=r.destination) for r in rows]


def resolve_aliases(conn: Connection, address: str) -> list[str]:
    """Exact address first; only if it has no alias, the "@domain" catch-all."""
    try:
        addr = Address.parse(address)
    except InvalidAddress:
        return []
    for source in (addr.key, "@" + addr.domain):
        found = list(conn.execute(select(aliases.c.destination).where(aliases.c.source == source)
                                  .order_by(aliases.c.id)).scalars())
        if found:
            return found
    return []

