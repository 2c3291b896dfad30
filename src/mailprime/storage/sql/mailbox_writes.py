"""Writes of the IMAP/POP3 data model: mailboxes, flags, expunges, copies and appends.

Each function runs inside the writer thread's transaction (committer.py). Every change to a
mailbox takes the next modification sequence of that mailbox (RFC 7162 3.1): the row is read
FOR UPDATE (a no-op on SQLite, whose single writer already serialises), its `highestmodseq`
raised by one, and every message row the change touches is stamped with that value. Expunges
also record their modseq in `expunged_modseq`, which is how a session polling the mailbox row
learns that it must re-read the UID list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from mailprime.domain.errors import AlreadyExists, NotFound
from mailprime.domain.ids import AccountId, BlobId, MailboxId
from mailprime.domain.mail import (
    AccountUsage,
    CopyResult,
    FlagChange,
    FlagMode,
    Mailbox,
    MailboxStatus,
    StoredMessage,
)
from mailprime.storage.sql.directory import release_blobs
from mailprime.storage.sql.folders import UidValidityClock, mailbox_name
from mailprime.storage.sql.rows import to_mailbox, to_stored_message
from mailprime.storage.sql.schema import blobs, mailbox_messages, mailboxes
from mailprime.storage.sql.streams import line_columns

mm = mailbox_messages

# Far below SQLite's bound-parameter limit (32766) and PostgreSQL's (65535).
_CHUNK = 500

_SET_FLAGS = (update(mm).where(mm.c.id == bindparam("b_id"))
              .values(flags=bindparam("b_flags"), modseq=bindparam("b_modseq")))


def _chunks(values: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


def _lock(conn: Connection, mailbox_id: MailboxId) -> Mailbox:
    row = conn.execute(select(mailboxes).where(mailboxes.c.id == mailbox_id).with_for_update()).first()
    if row is None:
        raise NotFound("no such mailbox")
    return to_mailbox(row)


def _by_name(conn: Connection, account_id: AccountId, name: str) -> Mailbox | None:
    row = conn.execute(select(mailboxes).where(mailboxes.c.account_id == account_id,
                                               mailboxes.c.name == mailbox_name(name))).first()
    return to_mailbox(row) if row else None


def _bump(conn: Connection, box: Mailbox, *, expunged: bool = False, uidnext: int | None = None) -> int:
    """Takes the mailbox's next modseq (and optionally records an expunge / new uidnext)."""
    modseq = box.highestmodseq + 1
    values: dict[str, object] = {"highestmodseq": modseq}
    if expunged:
        values["expunged_modseq"] = modseq
    if uidnext is not None:
        values["uidnext"] = uidnext
    conn.execute(update(mailboxes).where(mailboxes.c.id == box.id).values(**values))
    return modseq


# ---- mailboxes -----------------------------------------------------------------------------


def create_mailbox(conn: Connection, account_id: AccountId, name: str, special_use: str | None, *,
                   now: datetime, uidvalidity: UidValidityClock) -> Mailbox:
    name = mailbox_name(name)
    if _by_name(conn, account_id, name) is not None:
        raise AlreadyExists(f"mailbox {name} already exists")
    new_id = conn.execute(insert(mailboxes).returning(mailboxes.c.id), {
        "account_id": account_id, "name": name, "uidvalidity": uidvalidity.next(now), "uidnext": 1,
        "special_use": special_use, "subscribed": True, "highestmodseq": 1, "expunged_modseq": 0,
    }).scalar_one()
    return _lock(conn, MailboxId(new_id))


def delete_mailbox(conn: Connection, account_id: AccountId, name: str) -> list[str]:
    """Deletes the mailbox and its messages; returns spool files no longer referenced."""
    box = _by_name(conn, account_id, name)
    if box is None:
        raise NotFound(f"no mailbox {name}")
    blob_ids = [BlobId(b) for b in conn.execute(
        select(mm.c.blob_id).distinct().where(mm.c.mailbox_id == box.id)).scalars()]
    conn.execute(delete(mm).where(mm.c.mailbox_id == box.id))
    conn.execute(delete(mailboxes).where(mailboxes.c.id == box.id))
    return release_blobs(conn, blob_ids)


def rename_mailbox(conn: Connection, account_id: AccountId, old: str, new: str, *, now: datetime,
                   uidvalidity: UidValidityClock) -> None:
    old, new = mailbox_name(old), mailbox_name(new)
    source = _by_name(conn, account_id, old)
    if source is None:
        raise NotFound(f"no mailbox {old}")
    if _by_name(conn, account_id, new) is not None:
        raise AlreadyExists(f"mailbox {new} already exists")
    if old == "INBOX":
        # RFC 3501 6.3.5: renaming INBOX moves its messages to the new name and leaves INBOX,
        # empty; INBOX's children keep their names.
        target = create_mailbox(conn, account_id, new, None, now=now, uidvalidity=uidvalidity)
        uids = list(conn.execute(select(mm.c.uid).where(mm.c.mailbox_id == source.id)
                                 .order_by(mm.c.uid)).scalars())
        copy_messages(conn, source.id, uids, target.id, move=True)
        return
    prefix = old + "/"
    children = conn.execute(select(mailboxes.c.id, mailboxes.c.name).where(
        mailboxes.c.account_id == account_id,
        func.substr(mailboxes.c.name, 1, len(prefix)) == prefix)).all()
    renames = [(source.id, new)] + [(r.id, new + "/" + r.name[len(prefix):]) for r in children]
    taken = set(conn.execute(select(mailboxes.c.name).where(
        mailboxes.c.account_id == account_id,
        mailboxes.c.name.in_([n for _, n in renames[1:]] or [""]))).scalars())
    if taken:
        raise AlreadyExists(f"mailbox {sorted(taken)[0]} already exists")
    for box_id, name in renames:
        conn.execute(update(mailboxes).where(mailboxes.c.id == box_id).values(name=name))


def set_subscribed(conn: Connection, account_id: AccountId, name: str, subscribed: bool) -> None:
    box = _by_name(conn, account_id, name)
    if box is None:
        raise NotFound(f"no mailbox {name}")
    conn.execute(update(mailboxes).where(mailboxes.c.id == box.id).values(subscribed=subscribed))


# ---- reads that belong with the writes (same shapes) ------------------------------------


def mailbox_status(conn: Connection, mailbox_id: MailboxId) -> MailboxStatus:
    row = conn.execute(select(mailboxes).where(mailboxes.c.id == mailbox_id)).first()
    if row is None:
        raise NotFound("no such mailbox")
    box = to_mailbox(row)
    # One pass over the mailbox's rows. Flags are stored sorted and space-separated: a LIKE finds
    # a flag without parsing.
    total, size, seen, deleted = conn.execute(select(
        func.count(), func.coalesce(func.sum(mm.c.size), 0),
        func.count(case((mm.c.flags.like("%\\Seen%", escape="|"), 1))),
        func.count(case((mm.c.flags.like("%\\Deleted%", escape="|"), 1))),
    ).where(mm.c.mailbox_id == mailbox_id)).one()
    return MailboxStatus(mailbox=box, messages=int(total), unseen=int(total) - int(seen),
                         deleted=int(deleted), size=int(size),
                         expunged_modseq=int(row.expunged_modseq))


def account_usage(conn: Connection, account_id: AccountId) -> AccountUsage:
    count, size = conn.execute(
        select(func.count(), func.coalesce(func.sum(mm.c.size), 0))
        .select_from(mm.join(mailboxes, mailboxes.c.id == mm.c.mailbox_id))
        .where(mailboxes.c.account_id == account_id)).one()
    return AccountUsage(storage=int(size), messages=int(count))


# ---- messages ------------------------------------------------------------------------------


def append(conn: Connection, mailbox_id: MailboxId, blob_row: dict[str, object], size: int, *,
           flags: frozenset[str], internal_date: datetime) -> StoredMessage:
    box = _lock(conn, mailbox_id)
    data = blob_row.get("data")  # inline content; a spool file is checked by its reader
    blob_row = {**blob_row, **line_columns(data if isinstance(data, bytes) else None)}
    blob_id = conn.execute(insert(blobs).returning(blobs.c.id), blob_row).scalar_one()
    uid = box.uidnext
    modseq = _bump(conn, box, uidnext=uid + 1)
    conn.execute(insert(mm), {"mailbox_id": mailbox_id, "uid": uid, "blob_id": blob_id, "size": size,
                              "internal_date": internal_date, "flags": flags_text(flags),
                              "modseq": modseq})
    return StoredMessage(mailbox_id=mailbox_id, uid=uid, blob_id=BlobId(blob_id), size=size,
                         internal_date=internal_date, flags=flags, modseq=modseq)


def store_flags(conn: Connection, mailbox_id: MailboxId, uids: Sequence[int], mode: FlagMode,
                flags: frozenset[str], *, unchanged_since: int | None) -> FlagChange:
    box = _lock(conn, mailbox_id)
    current = _row_ids(conn, mailbox_id, sorted(set(uids)))  # ascending UIDs, each with its row id
    modified = tuple(m.uid for m, _ in current
                     if unchanged_since is not None and m.modseq > unchanged_since)
    refused = set(modified)
    updates: list[tuple[StoredMessage, int]] = []
    for m, row_id in current:
        if m.uid in refused:
            continue
        if mode is FlagMode.ADD:
            new = m.flags | flags
        elif mode is FlagMode.REMOVE:
            new = m.flags - flags
        else:
            new = flags
        if new != m.flags:
            updates.append((replace(m, flags=new), row_id))
    if not updates:
        return FlagChange(changed=(), modified=modified)
    modseq = _bump(conn, box)
    conn.execute(_SET_FLAGS, [{"b_id": row_id, "b_flags": flags_text(u.flags), "b_modseq": modseq}
                              for u, row_id in updates])
    return FlagChange(changed=tuple(replace(u, modseq=modseq) for u, _ in updates), modified=modified)


def _row_ids(conn: Connection, mailbox_id: MailboxId, uids: Sequence[int]) -> list[tuple[StoredMessage, int]]:
    """The messages with these UIDs that exist, ascending by UID, each with its row id."""
    out: list[tuple[StoredMessage, int]] = []
    for part in _chunks(sorted(uids)):
        out.extend((to_stored_message(r), int(r.id)) for r in conn.execute(
            select(mm).where(mm.c.mailbox_id == mailbox_id, mm.c.uid.in_(part)).order_by(mm.c.uid)))
    return out


def expunge(conn: Connection, mailbox_id: MailboxId, uids: Sequence[int] | None,
            only_deleted: bool) -> tuple[list[int], list[str], int]:
    """Returns (expunged UIDs ascending, spool files to unlink after commit, the mailbox's new
    modseq — 0 when nothing was expunged)."""
    box = _lock(conn, mailbox_id)
    stmt = select(mm.c.id, mm.c.uid, mm.c.blob_id, mm.c.flags).where(mm.c.mailbox_id == mailbox_id)
    if uids is not None:
        rows: list[Any] = []
        for part in _chunks(sorted(set(uids))):
            rows.extend(conn.execute(stmt.where(mm.c.uid.in_(part))).all())
    else:
        rows = list(conn.execute(stmt).all())
    victims = [r for r in rows if not only_deleted or "\\Deleted" in (r.flags or "").split()]
    if not victims:
        return [], [], 0
    for part in _chunks([int(r.id) for r in victims]):
        conn.execute(delete(mm).where(mm.c.id.in_(part)))
    modseq = _bump(conn, box, expunged=True)
    paths = release_blobs(conn, sorted({BlobId(r.blob_id) for r in victims}))
    return sorted(int(r.uid) for r in victims), paths, modseq


def copy_messages(conn: Connection, source: MailboxId, uids: Sequence[int], target: MailboxId, *,
                  move: bool) -> tuple[CopyResult, list[tuple[MailboxId, int]]]:
    """Returns the result and (mailbox, new modseq) of each mailbox it changed."""
    if source == target and move:
        box = _lock(conn, target)
        return CopyResult(uidvalidity=box.uidvalidity, uid_pairs=()), []
    # Lock in id order so two sessions copying opposite ways cannot deadlock (PostgreSQL).
    first, second = sorted((source, target))
    boxes = {first: _lock(conn, first)}
    boxes[second] = boxes[first] if second == first else _lock(conn, second)
    src_box, dst_box = boxes[source], boxes[target]
    found = _row_ids(conn, source, uids)
    if not found:
        return CopyResult(uidvalidity=dst_box.uidvalidity, uid_pairs=()), []
    next_uid = dst_box.uidnext
    pairs = tuple((m.uid, next_uid + i) for i, (m, _) in enumerate(found))
    modseq = _bump(conn, dst_box, uidnext=next_uid + len(found))
    conn.execute(insert(mm), [
        {"mailbox_id": target, "uid": new_uid, "blob_id": m.blob_id, "size": m.size,
         "internal_date": m.internal_date, "flags": flags_text(m.flags), "modseq": modseq}
        for (m, _), (_, new_uid) in zip(found, pairs, strict=True)])
    changed = [(target, modseq)]
    if move:
        for part in _chunks([row_id for _, row_id in found]):
            conn.execute(delete(mm).where(and_(mm.c.mailbox_id == source, mm.c.id.in_(part))))
        changed.append((source, _bump(conn, src_box, expunged=True)))
    return CopyResult(uidvalidity=dst_box.uidvalidity, uid_pairs=pairs), changed
