"""Idempotency records, webhooks and webhook deliveries (the MessagingStore port's SQL).

Each function takes a connection inside a transaction: writes run on the group-commit writer,
reads on the read pool (messaging_store.py decides which).

Idempotency: the (api key, Idempotency-Key) primary key is the lock. The first request inserts
a pending row and owns the key; a second one finds the row and gets it back (the caller answers
from it: the stored response, 409 while it is pending, 422 for another body). A pending row older
than `stale_before` belongs to a request that died (its process crashed) and may be taken over
by a retry of the same request; a row older than `expired_before` (24 h) is forgotten, as if it
had never been written. The row holds the queue id its request sends under, chosen by the first
claimer; a take-over keeps it, so whatever the dead request may have had accepted is found
under that id (and a second accept of it fails: storage/sql/accept.py accepts a queue id
once). Before the accept, the owner stores the response it will give (`prepare_idempotency`),
so a retry that finds the message accepted can give it.

Ownership: the record's created_at is the owner's token (a take-over moves it to the taker's
`now`). Preparing and releasing name the created_at their claim got and do nothing to a record
claimed since: a request that seemed dead and was taken over must neither overwrite its
taker's response (prepare raises Conflict, and it must then not accept) nor forget the record
its taker holds (release).

Webhook fan-out: each webhook keeps a cursor (the last event id it looked at); enqueueing reads
the events past it, inserts one delivery row per event of a subscribed kind (a unique
(webhook, event) pair, so two processes doing the same batch insert each row once) and moves
the cursor forward, all in one transaction. A claim moves a due delivery's next attempt to the
end of a lease with a compare-and-set on the time it read, so two processes never both try it;
a claimer that dies leaves the delivery due again when the lease ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from mailprime.domain.errors import Conflict, NotFound
from mailprime.domain.ids import ApiKeyId, EventId, QueueId
from mailprime.domain.messaging import (
    DeliveryStatus,
    IdempotencyClaim,
    IdempotencyRecord,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryId,
    WebhookId,
    WebhookJob,
)
from mailprime.storage.sql.schema import (
    events,
    idempotency_keys,
    insert_ignoring_conflicts,
    webhook_deliveries,
    webhooks,
)

MAX_RESPONSE_EXCERPT = 1000  # characters of a receiver's answer kept in the log


# ---- idempotency ------------------------------------------------------------------------------

def _to_record(row: Any) -> IdempotencyRecord:
    return IdempotencyRecord(api_key_id=ApiKeyId(row.api_key_id), key=row.key,
                             request_hash=row.request_hash, created_at=row.created_at,
                             status=row.status, body=row.body,
                             queue_id=QueueId(row.queue_id) if row.queue_id else None)


def _key_clause(api_key_id: ApiKeyId, key: str) -> Any:
    return (idempotency_keys.c.api_key_id == api_key_id) & (idempotency_keys.c.key == key)


def claim_idempotency(conn: Connection, api_key_id: ApiKeyId, key: str, request_hash: str, *,
                      queue_id: QueueId | None, now: datetime, stale_before: datetime,
                      expired_before: datetime) -> IdempotencyClaim:
    """Owned: the caller holds the key now (go ahead, under the record's queue id); else the
    record of the request that holds it."""
    where = _key_clause(api_key_id, key)
    conn.execute(delete(idempotency_keys).where(where, idempotency_keys.c.created_at < expired_before))
    row = {"api_key_id": api_key_id, "key": key, "request_hash": request_hash, "created_at": now,
           "queue_id": queue_id}
    # RETURNING says whether the row went in (psycopg reports rowcount -1 for ON CONFLICT).
    stmt = insert_ignoring_conflicts(conn.dialect.name, idempotency_keys, "api_key_id", "key")
    if conn.execute(stmt.returning(idempotency_keys.c.key), row).first() is not None:
        return IdempotencyClaim(True, IdempotencyRecord(api_key_id, key, request_hash, now,
                                                        queue_id=queue_id))
    found = conn.execute(select(idempotency_keys).where(where)).first()
    if found is None:  # deleted between the insert and the read: cannot happen in a transaction
        raise NotFound("idempotency record vanished")
    record = _to_record(found)
    if (not record.done and record.request_hash == request_hash
            and record.created_at < stale_before):
        # The record keeps its queue id (see the module doc); one from before migration 0014
        # has none and takes the taker's.
        mine = record.queue_id or queue_id
        taken = conn.execute(update(idempotency_keys).where(
            where, idempotency_keys.c.status.is_(None),
            idempotency_keys.c.created_at == record.created_at).values(created_at=now,
                                                                       queue_id=mine))
        if taken.rowcount:
            return IdempotencyClaim(True, replace(record, created_at=now, queue_id=mine))
    return IdempotencyClaim(False, record)


def prepare_idempotency(conn: Connection, api_key_id: ApiKeyId, key: str, body: str, *,
                        claimed_at: datetime) -> None:
    """Stores the response a pending record's owner will give once its message is accepted;
    Conflict if the caller (its claim made at `claimed_at`) no longer owns the record."""
    done = conn.execute(update(idempotency_keys).where(
        _key_clause(api_key_id, key), idempotency_keys.c.status.is_(None),
        idempotency_keys.c.created_at == claimed_at).values(body=body))
    if not done.rowcount:
        raise Conflict("this Idempotency-Key's request was taken over by a retry (or has "
                       "finished): it no longer owns the key")


def complete_idempotency(conn: Connection, api_key_id: ApiKeyId, key: str, status: int,
                         body: str, *, claimed_at: datetime | None = None) -> bool:
    """See the port: the first completion of a pending record wins; with `claimed_at`, only
    the claim that still owns it may complete it."""
    where = [_key_clause(api_key_id, key), idempotency_keys.c.status.is_(None)]
    if claimed_at is not None:
        where.append(idempotency_keys.c.created_at == claimed_at)
    done = conn.execute(update(idempotency_keys).where(*where).values(status=status, body=body))
    return bool(done.rowcount)


def get_idempotency(conn: Connection, api_key_id: ApiKeyId,
                    key: str) -> IdempotencyRecord | None:
    found = conn.execute(select(idempotency_keys).where(_key_clause(api_key_id, key))).first()
    return _to_record(found) if found is not None else None


def release_idempotency(conn: Connection, api_key_id: ApiKeyId, key: str, *,
                        claimed_at: datetime) -> None:
    """Forgets a pending record (its request failed before anything was sent), if it is still
    the one claimed at `claimed_at`."""
    conn.execute(delete(idempotency_keys).where(_key_clause(api_key_id, key),
                                                idempotency_keys.c.status.is_(None),
                                                idempotency_keys.c.created_at == claimed_at))


def purge_idempotency(conn: Connection, before: datetime) -> int:
    return int(conn.execute(delete(idempotency_keys).where(
        idempotency_keys.c.created_at < before)).rowcount or 0)


# ---- webhooks ---------------------------------------------------------------------------------

def _to_webhook(row: Any) -> Webhook:
    return Webhook(id=WebhookId(row.id), url=row.url, secret=row.secret,
                   events=frozenset(row.events.split()), active=bool(row.active),
                   created_at=row.created_at, description=row.description,
                   cursor=int(row.cursor))


def add_webhook(conn: Connection, url: str, secret: str, kinds: frozenset[str], *, active: bool,
                description: str, created_at: datetime) -> Webhook:
    """A new webhook starts after the newest event: it gets what happens from now on."""
    cursor = int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())
    values = {"url": url, "secret": secret, "events": " ".join(sorted(kinds)), "active": active,
              "description": description, "created_at": created_at, "cursor": cursor}
    new_id = conn.execute(insert(webhooks).returning(webhooks.c.id), values).scalar_one()
    return Webhook(id=WebhookId(int(new_id)), url=url, secret=secret, events=kinds,
                   active=active, created_at=created_at, description=description, cursor=cursor)


def get_webhook(conn: Connection, webhook_id: WebhookId) -> Webhook | None:
    row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
    return _to_webhook(row) if row is not None else None


def list_webhooks(conn: Connection) -> list[Webhook]:
    return [_to_webhook(r) for r in conn.execute(select(webhooks).order_by(webhooks.c.id))]


def update_webhook(conn: Connection, webhook_id: WebhookId, *, url: str, kinds: frozenset[str],
                   active: bool, description: str) -> Webhook:
    done = conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(
        url=url, events=" ".join(sorted(kinds)), active=active, description=description))
    if not done.rowcount:
        raise NotFound(f"no webhook #{webhook_id}")
    found = get_webhook(conn, webhook_id)
    assert found is not None
    return found


def delete_webhook(conn: Connection, webhook_id: WebhookId) -> bool:
    # The deliveries go first: SQLite enforces ON DELETE CASCADE only with foreign keys on.
    conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
    return bool(conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id)).rowcount)


def enqueue_events(conn: Connection, now: datetime, batch: int) -> int:
    """For every active webhook, a delivery row for each new event of a kind it wants (at most
    `batch` events looked at per webhook); returns how many rows were made."""
    made = 0
    for hook in conn.execute(select(webhooks).where(webhooks.c.active.is_(True))).all():
        kinds = hook.events.split()
        rows = conn.execute(select(events.c.id, events.c.kind).where(events.c.id > hook.cursor)
                            .order_by(events.c.id).limit(batch)).all()
        if not rows:
            continue
        wanted = [{"webhook_id": hook.id, "event_id": r.id, "event_kind": r.kind,
                   "status": DeliveryStatus.PENDING.value, "attempts": 0, "next_attempt_at": now,
                   "created_at": now, "last_response": ""} for r in rows if r.kind in kinds]
        if wanted:
            stmt = insert_ignoring_conflicts(conn.dialect.name, webhook_deliveries,
                                             "webhook_id", "event_id"
                                             ).returning(webhook_deliveries.c.id)
            made += sum(conn.execute(stmt, row).first() is not None for row in wanted)
        last = int(rows[-1].id)
        conn.execute(update(webhooks).where(webhooks.c.id == hook.id, webhooks.c.cursor < last)
                     .values(cursor=last))
    return made


def claim_deliveries(conn: Connection, now: datetime, limit: int,
                     lease_until: datetime) -> list[WebhookJob]:
    """Up to `limit` due deliveries of active webhooks, oldest due first, leased until
    `lease_until`. A delivery whose event is gone (retention) is marked failed."""
    rows = conn.execute(
        select(webhook_deliveries.c.id, webhook_deliveries.c.webhook_id,
               webhook_deliveries.c.attempts, webhook_deliveries.c.next_attempt_at,
               webhook_deliveries.c.event_id, webhook_deliveries.c.event_kind,
               webhooks.c.url, webhooks.c.secret, events.c.at, events.c.queue_id,
               events.c.recipient, events.c.attrs, events.c.id.label("found"))
        .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
        .outerjoin(events, events.c.id == webhook_deliveries.c.event_id)
        .where(webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
               webhook_deliveries.c.next_attempt_at <= now, webhooks.c.active.is_(True))
        .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
        .limit(limit)).all()
    jobs = []
    for r in rows:
        mine = webhook_deliveries.c.id == r.id
        if r.found is None:
            conn.execute(update(webhook_deliveries).where(mine).values(
                status=DeliveryStatus.FAILED.value, next_attempt_at=None,
                last_response="the event is no longer stored (retention)"))
            continue
        taken = conn.execute(update(webhook_deliveries).where(
            mine, webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
            webhook_deliveries.c.next_attempt_at == r.next_attempt_at,
        ).values(next_attempt_at=lease_until))
        if not taken.rowcount:
            continue  # another process claimed it between our read and this write
        attrs = tuple((str(k), str(v)) for k, v in json.loads(r.attrs or "{}").items())
        jobs.append(WebhookJob(
            delivery_id=WebhookDeliveryId(r.id), webhook_id=WebhookId(r.webhook_id), url=r.url,
            secret=r.secret, attempts=int(r.attempts), event_id=EventId(r.event_id),
            event_kind=r.event_kind, event_at=r.at,
            queue_id=QueueId(r.queue_id) if r.queue_id is not None else None,
            recipient=r.recipient, attrs=attrs))
    return jobs


def record_attempt(conn: Connection, delivery_id: WebhookDeliveryId, *, at: datetime,
                   status: DeliveryStatus, attempts: int, next_attempt_at: datetime | None,
                   status_code: int | None, response: str) -> None:
    conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(
        status=status.value, attempts=attempts, next_attempt_at=next_attempt_at,
        last_attempt_at=at, last_status_code=status_code,
        last_response=response[:MAX_RESPONSE_EXCERPT]))


def _to_delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        id=WebhookDeliveryId(row.id), webhook_id=WebhookId(row.webhook_id),
        event_id=EventId(row.event_id), event_kind=row.event_kind,
        status=DeliveryStatus(row.status), attempts=int(row.attempts),
        next_attempt_at=row.next_attempt_at, created_at=row.created_at,
        last_attempt_at=row.last_attempt_at, last_status_code=row.last_status_code,
        last_response=row.last_response)


def list_deliveries(conn: Connection, webhook_id: WebhookId, *, limit: int,
                    status: DeliveryStatus | None) -> Sequence[WebhookDelivery]:
    """Newest first."""
    stmt = (select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
            .order_by(webhook_deliveries.c.id.desc()).limit(limit))
    if status is not None:
        stmt = stmt.where(webhook_deliveries.c.status == status.value)
    return [_to_delivery(r) for r in conn.execute(stmt)]


__all__ = ["add_webhook", "claim_deliveries", "claim_idempotency", "complete_idempotency",
           "delete_webhook", "enqueue_events", "get_idempotency", "get_webhook",
           "list_deliveries", "list_webhooks", "prepare_idempotency", "purge_idempotency",
           "record_attempt", "release_idempotency", "update_webhook"]
