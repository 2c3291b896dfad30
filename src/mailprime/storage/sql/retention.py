"""Retention: deleting events and finished queue messages older than their retention period.

Deletions run in bounded batches (one transaction each, `limit` rows): a first run on a large,
old database must not hold the single SQLite write lock for minutes, nor make PostgreSQL keep
one huge transaction. The caller loops until a batch deletes fewer than `limit`.

A queue message is "finished" when none of its recipients is pending; a message still being
delivered is never removed, however old (its expiry turns it into a bounce first). Content
shared with a mailbox copy stays (release_blobs frees only unreferenced blobs).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from mailprime.domain.ids import BlobId
from mailprime.domain.mail import RecipientStatus
from mailprime.storage.sql.directory import release_blobs
from mailprime.storage.sql.schema import events, queue_messages, queue_recipients


def delete_events_before(conn: Connection, cutoff: datetime, limit: int) -> int:
    ids = select(events.c.id).where(events.c.at < cutoff).order_by(events.c.id).limit(limit)
    victims = list(conn.execute(ids).scalars())
    if victims:
        conn.execute(delete(events).where(events.c.id.in_(victims)))
    return len(victims)


def delete_finished_messages_before(conn: Connection, cutoff: datetime,
                                    limit: int) -> tuple[int, list[str]]:
    """Returns (messages removed, spool files to unlink once this commits)."""
    m, r = queue_messages.c, queue_recipients.c
    pending = select(r.id).where(r.queue_id == m.id,
                                 r.status == RecipientStatus.PENDING.value).exists()
    rows = conn.execute(select(m.id, m.blob_id).where(m.created_at < cutoff, ~pending)
                        .order_by(m.created_at, m.id).limit(limit)).all()
    if not rows:
        return 0, []
    ids = [row.id for row in rows]
    conn.execute(delete(queue_recipients).where(r.queue_id.in_(ids)))
    conn.execute(delete(queue_messages).where(m.id.in_(ids)))
    return len(ids), release_blobs(conn, sorted({BlobId(row.blob_id) for row in rows}))
