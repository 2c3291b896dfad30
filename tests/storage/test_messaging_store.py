"""The MessagingStore port on SQLite and PostgreSQL (see conftest.py): idempotency records
(claim with its queue id, the prepared response, replay, stale take-over keeping the queue id,
expiry, purge), webhooks (CRUD) and their deliveries (fan-out by cursor, claims that two callers
never share, the attempt log)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.errors import Conflict, NotFound
from mailprime.domain.ids import ApiKeyId, QueueId
from mailprime.domain.mail import EventKind
from mailprime.domain.messaging import DeliveryStatus, WebhookId
from mailprime.storage.sql.schema import events

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

KEY = ApiKeyId(7)


async def test_idempotency_claim_complete_replay_and_release(backend: Backend) -> None:
    async with backend.open() as store:
        now = backend.clock.now()
        window = {"stale_before": now - timedelta(seconds=60),
                  "expired_before": now - timedelta(hours=24)}
        first = await store.claim_idempotency_key(KEY, "k1", "h1", now=now,
                                                  queue_id=QueueId("Q1"), **window)
        assert first.owned and first.record.queue_id == "Q1"
        pending = await store.claim_idempotency_key(KEY, "k1", "h1", now=now,
                                                    queue_id=QueueId("Q2"), **window)
        assert not pending.owned and not pending.record.done
        assert (pending.record.request_hash, pending.record.queue_id) == ("h1", "Q1")
        # The owner stores the response it will give before its accept.
        await store.prepare_idempotency_key(KEY, "k1", '{"id": "Q1"}',
                                            claimed_at=first.record.created_at)
        prepared = (await store.claim_idempotency_key(KEY, "k1", "h1", now=now, **window)).record
        assert (prepared.status, prepared.body) == (None, '{"id": "Q1"}')
        # Another API key has its own keys.
        assert (await store.claim_idempotency_key(ApiKeyId(8), "k1", "h2", now=now,
                                                  **window)).owned
        await store.complete_idempotency_key(KEY, "k1", 202, '{"id": "Q1"}')
        done = await store.claim_idempotency_key(KEY, "k1", "other", now=now, **window)
        assert not done.owned and (done.record.status, done.record.body,
                                   done.record.request_hash) == (202, '{"id": "Q1"}', "h1")
        # A released key is free again; a completed one is not released (nor re-prepared).
        assert (await store.claim_idempotency_key(KEY, "k2", "h", now=now, **window)).owned
        await store.release_idempotency_key(KEY, "k2", claimed_at=now)
        assert (await store.claim_idempotency_key(KEY, "k2", "h", now=now, **window)).owned
        await store.release_idempotency_key(KEY, "k1", claimed_at=now)
        with pytest.raises(Conflict):
            await store.prepare_idempotency_key(KEY, "k1", "{}", claimed_at=now)
        assert (await store.claim_idempotency_key(KEY, "k1", "h1", now=now, **window)) == done


async def test_idempotency_a_taken_over_owner_can_neither_prepare_nor_release(
        backend: Backend) -> None:
    """A request that seemed dead (its record went stale) and was taken over by a retry must
    not overwrite the retry's prepared response (it would then go on to accept a second
    message), nor forget the record the retry holds."""
    async with backend.open() as store:
        start = backend.clock.now()
        first = await store.claim_idempotency_key(KEY, "k", "h", now=start, stale_before=start,
                                                  expired_before=start, queue_id=QueueId("Q1"))
        later = start + timedelta(seconds=61)
        taken = await store.claim_idempotency_key(
            KEY, "k", "h", now=later, stale_before=later - timedelta(seconds=60),
            expired_before=start, queue_id=QueueId("Q2"))
        assert first.owned and taken.owned
        await store.prepare_idempotency_key(KEY, "k", '{"by": "retry"}',
                                            claimed_at=taken.record.created_at)
        with pytest.raises(Conflict, match="taken over"):
            await store.prepare_idempotency_key(KEY, "k", '{"by": "first"}',
                                                claimed_at=first.record.created_at)
        await store.release_idempotency_key(KEY, "k", claimed_at=first.record.created_at)
        held = await store.claim_idempotency_key(KEY, "k", "h", now=later, stale_before=start,
                                                 expired_before=start)
        assert not held.owned
        assert (held.record.body, held.record.created_at) == ('{"by": "retry"}', later)
        await store.release_idempotency_key(KEY, "k", claimed_at=taken.record.created_at)
        assert (await store.claim_idempotency_key(KEY, "k", "h", now=later, stale_before=start,
                                                  expired_before=start)).owned


async def test_idempotency_stale_takeover_expiry_and_purge(backend: Backend) -> None:
    async with backend.open() as store:
        start = backend.clock.now()
        assert (await store.claim_idempotency_key(
            KEY, "k", "h", now=start, stale_before=start, expired_before=start,
            queue_id=QueueId("Q1"))).owned
        later = start + timedelta(seconds=61)
        stale = later - timedelta(seconds=60)
        # A stale pending record of another body is not taken over; of the same body it is,
        # keeping its queue id (the dead owner's message, if accepted, is under it).
        other = await store.claim_idempotency_key(KEY, "k", "x", now=later, stale_before=stale,
                                                  expired_before=start)
        assert not other.owned and other.record.request_hash == "h"
        taken = await store.claim_idempotency_key(KEY, "k", "h", now=later, stale_before=stale,
                                                  expired_before=start, queue_id=QueueId("Q2"))
        assert taken.owned and taken.record.queue_id == "Q1" and taken.record.created_at == later
        again = await store.claim_idempotency_key(KEY, "k", "h", now=later, stale_before=stale,
                                                  expired_before=start)
        assert not again.owned and again.record.created_at == later  # the taker owns it now
        await store.complete_idempotency_key(KEY, "k", 202, "{}")
        # A record from before migration 0014 (no queue id) takes the taker's.
        assert (await store.claim_idempotency_key(
            KEY, "old", "h", now=start, stale_before=start, expired_before=start)).owned
        legacy = await store.claim_idempotency_key(KEY, "old", "h", now=later, stale_before=stale,
                                                   expired_before=start, queue_id=QueueId("Q3"))
        assert legacy.owned and legacy.record.queue_id == "Q3"
        # A day on, the record is forgotten: the key is new again, for any body.
        day = later + timedelta(hours=24, seconds=1)
        assert (await store.claim_idempotency_key(
            KEY, "k", "new", now=day, stale_before=day, expired_before=day - timedelta(hours=24)
        )).owned
        assert await store.purge_idempotency_keys(day + timedelta(seconds=1)) == 2


async def test_idempotency_only_the_owner_completes_and_a_completion_is_never_overwritten(
        backend: Backend) -> None:
    """A request taken over by a retry (slow, not dead) cannot complete the record the retry
    owns; the first completion of a pending record wins; a caller that does not own the key
    (a retry answering from the prepared response) completes only a pending record."""
    async with backend.open() as store:
        start = backend.clock.now()
        slow = await store.claim_idempotency_key(
            KEY, "k", "h", now=start, queue_id=QueueId("Q1"),
            stale_before=start - timedelta(seconds=60), expired_before=start)
        later = start + timedelta(seconds=61)
        taker = await store.claim_idempotency_key(
            KEY, "k", "h", now=later, queue_id=QueueId("Q2"),
            stale_before=later - timedelta(seconds=60), expired_before=start)
        assert taker.owned
        assert not await store.complete_idempotency_key(KEY, "k", 202, '{"by": "slow"}',
                                                        claimed_at=slow.record.created_at)
        assert await store.complete_idempotency_key(KEY, "k", 202, '{"by": "taker"}',
                                                    claimed_at=taker.record.created_at)
        assert not await store.complete_idempotency_key(KEY, "k", 202, '{"by": "again"}')
        done = await store.claim_idempotency_key(KEY, "k", "h", now=later,
                                                 stale_before=start, expired_before=start)
        assert (done.record.status, done.record.body) == (202, '{"by": "taker"}')


async def test_webhook_crud(backend: Backend) -> None:
    async with backend.open() as store:
        now = backend.clock.now()
        hook = await store.add_webhook("https://hooks.example/in", "whsec_x",
                                       frozenset({"delivered", "bounced"}), active=True,
                                       description="crm", created_at=now)
        assert await store.get_webhook(hook.id) == hook
        assert list(await store.list_webhooks()) == [hook]
        changed = await store.update_webhook(hook.id, url="http://h/2", events=frozenset({"opened"}),
                                             active=False, description="")
        assert (changed.url, changed.events, changed.active, changed.secret) == (
            "http://h/2", frozenset({"opened"}), False, "whsec_x")
        with pytest.raises(NotFound):
            await store.update_webhook(WebhookId(999), url="x", events=frozenset(), active=True,
                                       description="")
        assert await store.delete_webhook(hook.id) is True
        assert await store.delete_webhook(hook.id) is False
        assert await store.get_webhook(hook.id) is None


async def test_events_fan_out_to_deliveries_claimed_once_and_logged(backend: Backend) -> None:
    async with backend.open() as store:
        await store.append(EventKind.DELIVERED, QueueId("OLD"), "old@b.test")  # before: not sent
        now = backend.clock.now()
        wants = await store.add_webhook("http://h/a", "s", frozenset({"delivered", "bounced"}),
                                        active=True, description="", created_at=now)
        idle = await store.add_webhook("http://h/b", "s", frozenset({"delivered"}), active=False,
                                       description="", created_at=now)
        await store.append(EventKind.DELIVERED, QueueId("Q1"), "r@b.test", "", (("mx", "m.b"),))
        await store.append(EventKind.OPENED, QueueId("Q1"), "r@b.test")
        await store.append(EventKind.BOUNCED, QueueId("Q2"), "s@b.test")
        assert await store.enqueue_webhook_events(now, 100) == 2
        assert await store.enqueue_webhook_events(now, 100) == 0  # the cursor moved on
        lease = now + timedelta(minutes=5)
        first, second = await asyncio.gather(store.claim_webhook_deliveries(now, 10, lease),
                                             store.claim_webhook_deliveries(now, 10, lease))
        jobs = [*first, *second]
        assert sorted(j.event_kind for j in jobs) == ["bounced", "delivered"]  # each once
        job = next(j for j in jobs if j.event_kind == "delivered")
        assert (job.webhook_id, job.url, job.queue_id, job.recipient, job.attrs, job.attempts) == (
            wants.id, "http://h/a", "Q1", "r@b.test", (("mx", "m.b"),), 0)
        assert await store.claim_webhook_deliveries(now, 10, lease) == []  # leased
        retry_at = now + timedelta(seconds=60)
        await store.record_webhook_attempt(job.delivery_id, at=now, status=DeliveryStatus.PENDING,
                                           attempts=1, next_attempt_at=retry_at, status_code=500,
                                           response="x" * 5000)
        (again,) = await store.claim_webhook_deliveries(retry_at, 10, retry_at + timedelta(hours=1))
        assert again.delivery_id == job.delivery_id and again.attempts == 1
        await store.record_webhook_attempt(job.delivery_id, at=retry_at,
                                           status=DeliveryStatus.DELIVERED, attempts=2,
                                           next_attempt_at=None, status_code=204, response="")
        log = await store.list_webhook_deliveries(wants.id)
        assert [(d.event_kind, d.status, d.attempts) for d in log] == [
            ("bounced", DeliveryStatus.PENDING, 0), ("delivered", DeliveryStatus.DELIVERED, 2)]
        failed_first = await store.list_webhook_deliveries(wants.id,
                                                           status=DeliveryStatus.DELIVERED)
        assert failed_first[0].last_status_code == 204 and failed_first[0].last_attempt_at == retry_at
        assert await store.list_webhook_deliveries(idle.id) == []
        # An inactive webhook's cursor stays; once active it catches up from there.
        await store.update_webhook(idle.id, url=idle.url, events=idle.events, active=True,
                                   description="")
        assert await store.enqueue_webhook_events(now, 100) == 1
        # Deleting a webhook deletes its log.
        assert await store.delete_webhook(wants.id)
        assert await store.list_webhook_deliveries(wants.id) == []


async def test_a_delivery_whose_event_is_gone_fails(backend: Backend) -> None:
    async with backend.open() as store:
        now = backend.clock.now()
        hook = await store.add_webhook("http://h/a", "s", frozenset({"delivered"}), active=True,
                                       description="", created_at=now)
        await store.append(EventKind.DELIVERED, QueueId("Q1"), "r@b.test")
        assert await store.enqueue_webhook_events(now, 100) == 1
        await store._writer.run(lambda c: c.execute(events.delete()))  # what retention does
        assert await store.claim_webhook_deliveries(now, 10, now + timedelta(minutes=1)) == []
        (row,) = await store.list_webhook_deliveries(hook.id)
        assert row.status is DeliveryStatus.FAILED and "no longer stored" in row.last_response
