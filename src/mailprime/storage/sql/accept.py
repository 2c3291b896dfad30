"""The bulk writer for acceptances: many accepted messages written with a handful of statements.

Runs on the writer thread inside the group-commit transaction (committer.py). For a batch it
issues one multi-row INSERT per table — blobs, mailbox messages, queue messages, queue
recipients, events — plus one SELECT (FOR UPDATE on PostgreSQL) and one UPDATE for the mailboxes
whose UIDs it allocates, so the per-message cost is building a few rows (tuples: bulk.py runs
them through the driver's executemany on SQLite, without SQLAlchemy's work per row).

A queue id is accepted once. For a message with remote recipients the queue's primary key
says so while it is queued; a message for local mailboxes only is never queued, and one
delivered since is no longer, so before writing the writer looks for a QUEUED or STORED event
of the batch's queue ids (appended by an earlier accept, in its transaction) and refuses the
batch with AlreadyExists if one is there: web.messages_api sends under a queue id chosen in
advance, and a retry that took over a request that seemed dead must not file its message a
second time. On PostgreSQL two processes could look at the same moment and both find nothing:
a transaction-scoped advisory lock on each local-only queue id makes the second wait for the
first's commit, and then see its events. The keys are taken in ascending order in one
statement, so two acceptances alone never wait for each other in a cycle. That is not a
promise of no deadlock: a group-commit transaction also holds what its other items locked
before this (the mailbox rows FOR UPDATE below, the rows and locks of other kinds of writes
batched with it), in whatever order its batch came, and two nodes can meet in a cycle there.
PostgreSQL then aborts one transaction with a deadlock error; the committer rolls it back and
retries each item alone in its own transaction (committer.py), so the cost is a retry, not a
lost or doubled message.
On SQLite the writer holds the database write lock. The look is one indexed query per batch.

An acceptance may ask for its remote recipients to be leased at once (`AcceptRecord.lease`): the
recipient rows are then written with the lease already on them, their ids come back from the
INSERT (RETURNING), and the writer fills `AcceptRecord.jobs` with the delivery jobs, so the local
worker starts them without a claim transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    bindparam,
    column,
    func,
    insert,
    select,
    table,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection

from mailprime.domain.clock import Clock
from mailprime.domain.errors import AlreadyExists, StorageError
from mailprime.domain.ids import AccountId, BlobId, QueueId, RecipientId
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    EventKind,
    QueuedMessage,
    QueueRecipient,
    RecipientStatus,
    SpooledContent,
)
from mailprime.storage.sql.bulk import BulkInsert, Row, placeholders, stamp
from mailprime.storage.sql.folders import SPECIAL_USE, UidValidityClock, mailbox_name
from mailprime.storage.sql.schema import (
    blobs,
    events,
    insert_ignoring_conflicts,
    mailbox_messages,
    mailboxes,
    queue_messages,
    queue_recipients,
)
from mailprime.storage.sql.streams import line_facts


@dataclass(frozen=True, slots=True)
class Lease:
    """Lease the acceptance's remote recipients to `owner` for `seconds`, in the accept itself."""

    owner: str
    seconds: float


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    """One acceptance as queued for the writer: its content is already in the spool when
    `spool_path` is set (and must then not be written inline; a SpooledContent's prefix is).

    `jobs` is the writer's answer for a record with a `lease`: the group committer returns
    nothing per bulk payload, so the writer fills this list (cleared first: a failed batch is
    retried item by item, and only the committed attempt's jobs may remain)."""

    acceptance: Acceptance
    spool_path: str | None = None
    lease: Lease | None = None
    # Where the content starts in `spool_path` when that file holds a batch (Spool.write_batch).
    spool_offset: int | None = None
    jobs: list[DeliveryJob] = field(default_factory=list)
    # (mailbox id, its new highestmodseq) for each mailbox this record filed into, filled by the
    # writer like `jobs`, so the store can wake IMAP sessions waiting on those mailboxes.
    filed: list[tuple[int, int]] = field(default_factory=list)

    def blob_row(self, created_at: object) -> Row:
        """The blob's row, in `_BLOB_COLUMNS` order (`created_at` as bulk.stamp gives it)."""
        content = self.acceptance.content
        if isinstance(content, SpooledContent):
            return (self.acceptance.size, None, self.spool_path, content.prefix or None,
                    created_at, None, None, None)
        if self.spool_path is None:
            return (self.acceptance.size, content, None, None, created_at, *line_facts(content),
                    None)
        # A file of its own is streamed, and checked by its reader as it goes; a batch file's
        # content is here whole, so its line facts are found now like an inline one's.
        facts = line_facts(content) if self.spool_offset is not None else (None, None)
        return (self.acceptance.size, None, self.spool_path, None, created_at, *facts,
                self.spool_offset)


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def notify_text(values: frozenset[str]) -> str:
    return ",".join(sorted(values))


# The bulk rows of an accept (bulk.py: tuples, straight to the driver on SQLite), in the order
# of these columns. Blobs and leased recipients are numbered by `_insert_with_ids`.
_BLOB_COLUMNS = ("size", "data", "path", "prefix", "created_at", "line_form", "dot_lines",
                 "file_offset")
_INSERT_BLOBS = BulkInsert(blobs, ("id", *_BLOB_COLUMNS))
_INSERT_BLOBS_RETURNING = insert(blobs).returning(blobs.c.id, sort_by_parameter_order=True)
_INSERT_MAILBOX_MESSAGES = insert(mailbox_messages)
_INSERT_QUEUE_MESSAGES = BulkInsert(queue_messages, (
    "id", "sender", "blob_id", "size", "priority", "created_at", "expires_at", "dsn_ret",
    "dsn_envid", "smtputf8", "body_8bit", "source", "client", "require_tls", "tls_optional"))
_RECIPIENT_COLUMNS = ("queue_id", "address", "domain", "status", "attempts", "next_attempt_at",
                      "last_reply", "notify", "orcpt", "lease_owner", "lease_until", "priority")
_INSERT_RECIPIENTS = BulkInsert(queue_recipients, _RECIPIENT_COLUMNS)
_INSERT_RECIPIENTS_WITH_IDS = BulkInsert(queue_recipients, ("id", *_RECIPIENT_COLUMNS))
# Only batches with a leased acceptance need the new recipient ids back.
_INSERT_RECIPIENTS_RETURNING = insert(queue_recipients).returning(
    queue_recipients.c.id, sort_by_parameter_order=True)
_INSERT_EVENTS = BulkInsert(events, ("at", "kind", "queue_id", "recipient", "detail", "attrs"))


def _insert_with_ids(conn: Connection, with_ids: BulkInsert, returning: object,
                     rows: list[Row]) -> list[int]:
    """Inserts rows (tuples of `with_ids.columns` but the first, "id") and returns their ids in
    row order.

    SQLite cannot promise the order of a multi-row RETURNING, so SQLAlchemy falls back to one
    INSERT per row there (py-spy: ~13 % of the accept path). The writer holds SQLite's write lock
    for the whole transaction (BEGIN IMMEDIATE, one writer thread, the cross-process lock), so
    nobody else can insert meanwhile: we number the rows ourselves from max(id) and insert them in
    one executemany. PostgreSQL keeps the ordered RETURNING."""
    table = with_ids.table
    if conn.dialect.name != "sqlite":
        columns = with_ids.columns[1:]
        return list(conn.execute(returning, [  # type: ignore[call-overload]
            dict(zip(columns, row, strict=True)) for row in rows]).scalars().all())
    # AUTOINCREMENT (migration 0004): never below the high-water mark of deleted rows either;
    # inserting explicit ids raises sqlite_sequence to the largest of them.
    highest = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
    mark = conn.execute(select(_SQLITE_SEQUENCE.c.seq)
                        .where(_SQLITE_SEQUENCE.c.name == table.name)).scalar()
    first = max(int(highest), int(mark or 0)) + 1
    ids = list(range(first, first + len(rows)))
    with_ids(conn, [(i, *row) for i, row in zip(ids, rows, strict=True)])
    return ids
# SQLite's own table of AUTOINCREMENT high-water marks.
_SQLITE_SEQUENCE = table("sqlite_sequence", column("name"), column("seq"))
_SET_UIDNEXT = (
    update(mailboxes)
    .where(mailboxes.c.id == bindparam("b_id"))
    .values(uidnext=bindparam("b_uidnext"), highestmodseq=bindparam("b_modseq"))
)
_PENDING = RecipientStatus.PENDING.value
_QUEUED = EventKind.QUEUED.value
_STORED = EventKind.STORED.value

MailboxKey = tuple[AccountId, str]


class _JsonText:
    """json.dumps of strings, each encoded once (the strings of a batch repeat)."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        done = self._done.get(value)
        if done is None:
            done = self._done[value] = json.dumps(value)
        return done


class AcceptWriter:
    def __init__(self, *, dialect_name: str, clock: Clock, queue_lifetime: timedelta,
                 uidvalidity: UidValidityClock) -> None:
        self._clock = clock
        self._lifetime = queue_lifetime
        self._uidvalidity = uidvalidity
        self._create_mailboxes = insert_ignoring_conflicts(dialect_name, mailboxes, "account_id", "name")

    def lock_mailboxes(self, conn: Connection, keys: Sequence[MailboxKey]) -> dict[MailboxKey, list[int]]:
        """{(account, name): [mailbox id, uidnext, modseq of this batch]}, rows locked until
        commit on PostgreSQL. Locked in id order so two nodes' batches cannot deadlock on each
        other. Every message the batch files into a mailbox shares the batch's one new modseq."""
        stmt = (
            select(mailboxes.c.id, mailboxes.c.account_id, mailboxes.c.name, mailboxes.c.uidnext,
                   mailboxes.c.highestmodseq)
            .where(tuple_(mailboxes.c.account_id, mailboxes.c.name).in_(keys))
            .order_by(mailboxes.c.id)
            .with_for_update()
        )
        return {(AccountId(r.account_id), r.name): [r.id, r.uidnext, r.highestmodseq + 1]
                for r in conn.execute(stmt)}

    def __call__(self, conn: Connection, records: Sequence[AcceptRecord]) -> None:
        now = self._clock.now()
        expires = now + self._lifetime
        dialect = conn.dialect.name
        at, expires_at = stamp(dialect, now), stamp(dialect, expires)
        _refuse_accepted(conn, records)

        blob_ids = _insert_with_ids(conn, _INSERT_BLOBS, _INSERT_BLOBS_RETURNING,
                                    [r.blob_row(at) for r in records])

        keys = sorted({(ld.account_id, mailbox_name(ld.mailbox))
                       for r in records for ld in r.acceptance.local})
        boxes = self._mailboxes(conn, keys) if keys else {}

        stored: list[dict[str, object]] = []
        qmsgs: list[Row] = []
        rcpts: list[Row] = []
        evts: list[Row] = []
        leased: list[tuple[AcceptRecord, BlobId, int]] = []  # record, blob, its first row in rcpts
        text = _JsonText()
        for rec, blob_id in zip(records, blob_ids, strict=True):
            rec.jobs.clear()
            rec.filed.clear()
            a = rec.acceptance
            size = a.size
            for ld in a.local:
                name = mailbox_name(ld.mailbox)
                box = boxes[(ld.account_id, name)]
                uid = box[1]
                box[1] = uid + 1
                rec.filed.append((box[0], box[2]))
                stored.append({"mailbox_id": box[0], "uid": uid, "blob_id": blob_id, "size": size,
                               "internal_date": now, "flags": "", "modseq": box[2]})
                evts.append((at, _STORED, a.queue_id, ld.recipient, "",
                             json.dumps({"mailbox": name, "uid": str(uid), "source": a.source,
                                         "client": a.client})))
            if a.remote:
                priority = int(a.priority)
                qmsgs.append((a.queue_id, a.sender, blob_id, size, priority, at, expires_at,
                              a.dsn_ret.value if a.dsn_ret else None, a.dsn_envid, a.smtputf8,
                              a.body_8bit, a.source, a.client, a.require_tls, a.tls_optional))
                # json.dumps({"sender": ..., "size": str(size), "source": ..., "client": ...}),
                # each string encoded once per batch (a campaign's are all the same).
                attrs = (f'{{"sender": {text(a.sender)}, "size": "{size}", '
                         f'"source": {text(a.source)}, "client": {text(a.client)}}}')
                owner: str | None = None
                until: object = None
                if rec.lease is not None:
                    owner = rec.lease.owner
                    until = stamp(dialect, now + timedelta(seconds=rec.lease.seconds))
                    leased.append((rec, BlobId(blob_id), len(rcpts)))
                for rcpt in a.remote:
                    rcpts.append((a.queue_id, rcpt.address, recipient_domain(rcpt.address),
                                  _PENDING, 0, at, "", notify_text(rcpt.notify), rcpt.orcpt,
                                  owner, until, priority))
                    evts.append((at, _QUEUED, a.queue_id, rcpt.address, "", attrs))

        if stored:
            conn.execute(_INSERT_MAILBOX_MESSAGES, stored)
            conn.execute(_SET_UIDNEXT, [{"b_id": box[0], "b_uidnext": box[1], "b_modseq": box[2]}
                                        for box in boxes.values()])
        if qmsgs:
            _INSERT_QUEUE_MESSAGES(conn, qmsgs)
            if leased:
                ids = _insert_with_ids(conn, _INSERT_RECIPIENTS_WITH_IDS,
                                       _INSERT_RECIPIENTS_RETURNING, rcpts)
                for rec, blob_id, first in leased:
                    rec.jobs.extend(_jobs(rec.acceptance, blob_id, now, expires,
                                          ids[first:first + len(rec.acceptance.remote)]))
            else:
                _INSERT_RECIPIENTS(conn, rcpts)
        if evts:
            _INSERT_EVENTS(conn, evts)

    def _mailboxes(self, conn: Connection, keys: Sequence[MailboxKey]) -> dict[MailboxKey, list[int]]:
        boxes = self.lock_mailboxes(conn, keys)
        missing = [k for k in keys if k not in boxes]
        if missing:  # a folder named by a filing rule that does not exist yet
            conn.execute(self._create_mailboxes, [
                {"account_id": acct, "name": name, "uidnext": 1, "special_use": SPECIAL_USE.get(name),
                 "uidvalidity": self._uidvalidity.next(self._clock.now())}
                for acct, name in missing
            ])
            boxes.update(self.lock_mailboxes(conn, missing))
            if any(k not in boxes for k in missing):
                raise StorageError("mailbox vanished while delivering")
        return boxes


# Ids per IN (...) of the accepted-already look (SQLite's default limit of bound variables is
# 999; two more are the event kinds).
_LOOK_CHUNK = 900
# One statement for the batch; volatile functions in the select list run after the ORDER BY
# (PostgreSQL 9.6+), so the locks are taken in key order.
_LOCK_KEYS = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k "
                  "ORDER BY k")


def _accept_lock_key(queue_id: str) -> int:
    """A signed 64-bit pg_advisory_xact_lock key naming one queue id (as deliverability's soft
    bounce keys, in a namespace of its own): a collision only makes two accepts wait."""
    digest = hashlib.sha256(b"mailprime-accept\0" + queue_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _refuse_accepted(conn: Connection, records: Sequence[AcceptRecord]) -> None:
    """AlreadyExists if a queue id of the batch was accepted before (see the module doc), or
    is twice in the batch."""
    ids = [r.acceptance.queue_id for r in records]
    if len(set(ids)) != len(ids):
        twice = next(q for q in ids if ids.count(q) > 1)
        raise AlreadyExists(f"message {twice} is in the batch twice")
    if conn.dialect.name == "postgresql":
        keys = sorted(_accept_lock_key(r.acceptance.queue_id) for r in records
                      if not r.acceptance.remote)
        if keys:
            conn.execute(_LOCK_KEYS, {"keys": keys})
    sqlite = conn.dialect.name == "sqlite"
    for start in range(0, len(ids), _LOOK_CHUNK):
        chunk = ids[start:start + _LOOK_CHUNK]
        if sqlite:  # the statement's text as SQLAlchemy makes it, without its work per id
            found = conn.exec_driver_sql(
                f"SELECT queue_id FROM events WHERE queue_id IN ({placeholders(len(chunk))}) "  # noqa: S608
                "AND kind IN (?, ?) LIMIT 1", (*chunk, _QUEUED, _STORED)).scalar()
        else:
            found = conn.execute(select(events.c.queue_id).where(
                events.c.queue_id.in_(chunk),
                events.c.kind.in_((_QUEUED, _STORED))).limit(1)).scalar()
        if found is not None:
            raise AlreadyExists(f"message {QueueId(found)} was accepted already")


def _jobs(a: Acceptance, blob_id: BlobId, now: datetime, expires: datetime,
          ids: Sequence[int]) -> list[DeliveryJob]:
    """The delivery jobs of a just-written acceptance, grouped by domain in first-seen order,
    built from what was written (the same values `claim_due` would read back)."""
    message = QueuedMessage(id=a.queue_id, sender=a.sender, blob_id=blob_id, size=a.size,
                            priority=a.priority, created_at=now, expires_at=expires,
                            dsn_ret=a.dsn_ret, dsn_envid=a.dsn_envid, smtputf8=a.smtputf8,
                            body_8bit=a.body_8bit, require_tls=a.require_tls,
                            tls_optional=a.tls_optional)
    groups: dict[str, list[QueueRecipient]] = {}
    for rcpt, rid in zip(a.remote, ids, strict=True):
        domain = recipient_domain(rcpt.address)
        groups.setdefault(domain, []).append(QueueRecipient(
            id=RecipientId(rid), queue_id=a.queue_id, address=rcpt.address, domain=domain,
            status=RecipientStatus.PENDING, attempts=0, next_attempt_at=now,
            notify=frozenset(rcpt.notify), orcpt=rcpt.orcpt))
    return [DeliveryJob(message=message, domain=domain, recipients=tuple(rs))
            for domain, rs in groups.items()]
