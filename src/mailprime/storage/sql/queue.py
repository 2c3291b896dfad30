"""Outbound queue operations: claiming jobs under a lease, recording outcomes, operator actions.

Claiming works the same on both backends: pick the due (message, domain) groups, lock their
recipient rows, and stamp them with a lease (owner, until). On PostgreSQL the lock is
FOR UPDATE SKIP LOCKED, so workers on other nodes skip rows a concurrent claim holds instead of
waiting; on SQLite the writer transaction holds the database write lock (BEGIN IMMEDIATE), which
serialises claimers across threads and processes. A lease that runs out (a worker died) makes its
recipients due again without anyone having to clean up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from mailprime.domain.ids import BlobId, QueueId
from mailprime.domain.mail import (
    DeliveryJob,
    EventKind,
    Priority,
    QueuedMessage,
    QueueRecipient,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.storage.sql.directory import release_blobs
from mailprime.storage.sql.rows import attrs_json, to_queued_message, to_recipient
from mailprime.storage.sql.schema import events, queue_messages, queue_recipients

r = queue_recipients
m = queue_messages
_PENDING = RecipientStatus.PENDING.value

_OUTCOME_EVENT = {
    RecipientStatus.DELIVERED: EventKind.DELIVERED,
    RecipientStatus.PENDING: EventKind.DEFERRED,
    RecipientStatus.BOUNCED: EventKind.BOUNCED,
    RecipientStatus.EXPIRED: EventKind.EXPIRED,
}

_APPLY_OUTCOME = (
    update(r)
    .where(r.c.id == bindparam("b_id"), r.c.status == _PENDING)  # a final status is never undone
    .values(status=bindparam("b_status"), attempts=r.c.attempts + 1, last_reply=bindparam("b_reply"),
            next_attempt_at=bindparam("b_next"), lease_owner=None, lease_until=None)
)


_PRIORITIES = sorted(int(p) for p in Priority)  # service order: lower first


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(r.c.status == _PENDING, r.c.next_attempt_at <= now,
                or_(r.c.lease_until.is_(None), r.c.lease_until <= now))


def claim_due(conn: Connection, now: datetime, limit: int, owner: str,
              lease_seconds: float) -> list[DeliveryJob]:
    if limit <= 0:
        return []
    due = _due(now)
    # Lock due recipient rows in service order, skipping rows a concurrent claimer holds (on
    # PostgreSQL; SQLite ignores FOR UPDATE, its write lock already excludes other claimers). A
    # claimer therefore never comes back empty-handed just because another one is busy with the
    # head of the queue. The window holds a few recipients per job we may return. One range of
    # the (status, priority, next_attempt_at) index per priority, most urgent first: each read
    # stops at `now` and at the window, so a claim costs the same whatever the queue holds.
    window = limit * 4
    rows: list[Row[Any]] = []
    for priority in _PRIORITIES:
        if len(rows) >= window:
            break
        rows += conn.execute(
            select(r).where(due, r.c.priority == priority)
            .order_by(r.c.next_attempt_at, r.c.id)
            .limit(window - len(rows)).with_for_update(skip_locked=True)).all()
    groups: dict[tuple[str, str], list[QueueRecipient]] = {}  # in service order
    for row in rows:
        key = (row.queue_id, row.domain)
        if key in groups:
            groups[key].append(to_recipient(row))
        elif len(groups) < limit:
            groups[key] = [to_recipient(row)]
    if not groups:
        return []
    if len(rows) == window:  # the window may have cut a chosen job short: take its other rows
        have = {row.id for row in rows}
        # By the (queue_id, domain) index alone, with the pairs and due-ness checked here: given
        # the status condition (or a tuple IN), SQLite plans a walk of every pending row.
        chosen = conn.execute(select(r).where(
            r.c.queue_id.in_({qid for qid, _ in groups}),
            r.c.domain.in_({domain for _, domain in groups}))
            .with_for_update(skip_locked=True))
        for row in chosen:
            key = (row.queue_id, row.domain)
            if (row.id not in have and key in groups and row.status == _PENDING
                    and row.next_attempt_at <= now
                    and (row.lease_until is None or row.lease_until <= now)):
                groups[key].append(to_recipient(row))
    # Rows locked above for jobs we do not return are unlocked, unleased, at commit.
    ids = [rc.id for rcpts in groups.values() for rc in rcpts]
    conn.execute(update(r).where(r.c.id.in_(ids))
                 .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds)))
    messages = {msg.id: msg for msg in (to_queued_message(row) for row in conn.execute(
        select(m).where(m.c.id.in_({qid for qid, _ in groups}))))}
    return [DeliveryJob(message=messages[QueueId(qid)], domain=domain,
                        recipients=tuple(sorted(rcpts, key=lambda rc: rc.id)))
            for (qid, domain), rcpts in groups.items()]


def record_outcomes(conn: Connection, job: DeliveryJob, outcomes: Sequence[RecipientOutcome],
                    now: datetime) -> None:
    addresses = {rc.id: rc.address for rc in job.recipients}
    unknown = [o.recipient_id for o in outcomes if o.recipient_id not in addresses]
    if unknown:  # an outcome for a recipient outside the job: still recorded, by its own row
        addresses.update((rid, address) for rid, address in conn.execute(
            select(r.c.id, r.c.address).where(r.c.id.in_(unknown))))
    if outcomes:
        conn.execute(_APPLY_OUTCOME, [
            {"b_id": o.recipient_id, "b_status": o.status.value, "b_reply": o.reply,
             "b_next": (o.next_attempt_at or now) if o.status is RecipientStatus.PENDING else now}
            for o in outcomes
        ])
        conn.execute(insert(events), [
            {"at": now, "kind": _OUTCOME_EVENT[o.status].value, "queue_id": job.message.id,
             "recipient": addresses.get(o.recipient_id), "detail": o.reply,
             "attrs": attrs_json([("reply", o.reply), ("remote_host", o.remote_host),
                                  ("domain", job.domain), *o.attrs])}
            for o in outcomes
        ])
    # Recipients of the job that got no outcome are handed back as they were.
    done = {o.recipient_id for o in outcomes}
    rest = [rc.id for rc in job.recipients if rc.id not in done]
    if rest:
        conn.execute(update(r).where(r.c.id.in_(rest)).values(lease_owner=None, lease_until=None))


def next_due_at(conn: Connection) -> datetime | None:
    # A leased recipient is not due before its lease runs out.
    effective = case((and_(r.c.lease_until.is_not(None), r.c.lease_until > r.c.next_attempt_at),
                      r.c.lease_until), else_=r.c.next_attempt_at)
    value = conn.execute(select(func.min(effective)).where(r.c.status == _PENDING)).scalar()
    assert value is None or isinstance(value, datetime)
    return value


def release_leases(conn: Connection, owner: str) -> int:
    return conn.execute(update(r).where(r.c.lease_owner == owner)
                        .values(lease_owner=None, lease_until=None)).rowcount


def lease_owners(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        select(r.c.lease_owner).where(r.c.lease_owner.is_not(None)).distinct())]


def get_message(conn: Connection, queue_id: QueueId) -> QueuedMessage | None:
    row = conn.execute(select(m).where(m.c.id == queue_id)).first()
    return to_queued_message(row) if row else None


def get_recipients(conn: Connection, queue_id: QueueId) -> list[QueueRecipient]:
    return [to_recipient(row) for row in conn.execute(select(r).where(r.c.queue_id == queue_id)
                                                      .order_by(r.c.id))]


def list_queue(conn: Connection, limit: int) -> list[tuple[QueuedMessage, Sequence[QueueRecipient]]]:
    msgs = [to_queued_message(row) for row in conn.execute(
        select(m).order_by(m.c.created_at, m.c.id).limit(limit))]
    if not msgs:
        return []
    by_msg: dict[str, list[QueueRecipient]] = {msg.id: [] for msg in msgs}
    for row in conn.execute(select(r).where(r.c.queue_id.in_(list(by_msg))).order_by(r.c.id)):
        by_msg[row.queue_id].append(to_recipient(row))
    return [(msg, by_msg[msg.id]) for msg in msgs]


def retry_now(conn: Connection, queue_id: QueueId | None, now: datetime) -> int:
    stmt = update(r).where(r.c.status == _PENDING).values(next_attempt_at=now)
    if queue_id is not None:
        stmt = stmt.where(r.c.queue_id == queue_id)
    return conn.execute(stmt).rowcount


def delete_message(conn: Connection, queue_id: QueueId, now: datetime) -> tuple[bool, list[str]]:
    """Removes the message and its recipients; returns (found, spool files to unlink after commit)."""
    blob_id = conn.execute(select(m.c.blob_id).where(m.c.id == queue_id)).scalar()
    if blob_id is None:
        return False, []
    conn.execute(delete(r).where(r.c.queue_id == queue_id))
    conn.execute(delete(m).where(m.c.id == queue_id))
    conn.execute(insert(events), {"at": now, "kind": EventKind.DELETED.value, "queue_id": queue_id,
                                  "recipient": None, "detail": "deleted from the queue",
                                  "attrs": "{}"})
    return True, release_blobs(conn, [BlobId(blob_id)])


def finished_message_ids(conn: Connection, limit: int) -> list[QueueId]:
    pending = select(r.c.id).where(r.c.queue_id == m.c.id, r.c.status == _PENDING).exists()
    return [QueueId(v) for v in conn.execute(select(m.c.id).where(~pending)
                                             .order_by(m.c.created_at, m.c.id).limit(limit)).scalars()]
