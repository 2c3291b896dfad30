"""MessagingStore.idempotency_record on SQLite and PostgreSQL (see conftest.py): the record as it
stands, for a request whose accept was refused because the retry that took its key over
accepted first (web.messages_api answers it with what that retry prepared)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from mailprime.domain.ids import ApiKeyId, QueueId

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

KEY = ApiKeyId(7)


async def test_the_record_as_it_stands_after_a_take_over(backend: Backend) -> None:
    async with backend.open() as store:
        assert await store.idempotency_record(KEY, "k") is None
        start = backend.clock.now()
        slow = await store.claim_idempotency_key(
            KEY, "k", "h", now=start, queue_id=QueueId("Q1"),
            stale_before=start - timedelta(seconds=60), expired_before=start)
        await store.prepare_idempotency_key(KEY, "k", '{"by": "slow"}',
                                            claimed_at=slow.record.created_at)
        later = start + timedelta(seconds=61)
        taker = await store.claim_idempotency_key(
            KEY, "k", "h", now=later, queue_id=QueueId("Q2"),
            stale_before=later - timedelta(seconds=60), expired_before=start)
        assert taker.owned and taker.record.body == '{"by": "slow"}'  # what the slow one meant
        await store.prepare_idempotency_key(KEY, "k", '{"by": "taker"}',
                                            claimed_at=taker.record.created_at)
        pending = await store.idempotency_record(KEY, "k")
        assert pending is not None and not pending.done
        assert (pending.queue_id, pending.body, pending.created_at) == (
            "Q1", '{"by": "taker"}', taker.record.created_at)
        assert await store.complete_idempotency_key(KEY, "k", 202, '{"by": "taker"}',
                                                    claimed_at=taker.record.created_at)
        done = await store.idempotency_record(KEY, "k")
        assert done is not None and (done.status, done.body) == (202, '{"by": "taker"}')
        assert await store.idempotency_record(ApiKeyId(8), "k") is None  # per API key
