"""MessagingStore delegation (issue 5): API idempotency records and webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailprime.domain.ids import ApiKeyId, QueueId
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
from mailprime.storage.sql import messaging
from mailprime.storage.sql.access import SqlAccess


class MessagingSql(SqlAccess):
    """The MessagingStore port's methods, on the writer and the read pool."""

    async def claim_idempotency_key(self, api_key_id: ApiKeyId, key: str, request_hash: str, *,
                                    now: datetime, stale_before: datetime,
                                    expired_before: datetime,
                                    queue_id: QueueId | None = None) -> IdempotencyClaim:
        return await self._writer.run(lambda c: messaging.claim_idempotency(
            c, api_key_id, key, request_hash, queue_id=queue_id, now=now,
            stale_before=stale_before, expired_before=expired_before))

    async def prepare_idempotency_key(self, api_key_id: ApiKeyId, key: str, body: str, *,
                                      claimed_at: datetime) -> None:
        await self._writer.run(lambda c: messaging.prepare_idempotency(
            c, api_key_id, key, body, claimed_at=claimed_at))

    async def complete_idempotency_key(self, api_key_id: ApiKeyId, key: str, status: int,
                                       body: str, *, claimed_at: datetime | None = None) -> bool:
        return await self._writer.run(lambda c: messaging.complete_idempotency(
            c, api_key_id, key, status, body, claimed_at=claimed_at))

    async def idempotency_record(self, api_key_id: ApiKeyId, key: str
                                 ) -> IdempotencyRecord | None:
        return await self._read(lambda c: messaging.get_idempotency(c, api_key_id, key))

    async def release_idempotency_key(self, api_key_id: ApiKeyId, key: str, *,
                                      claimed_at: datetime) -> None:
        await self._writer.run(lambda c: messaging.release_idempotency(
            c, api_key_id, key, claimed_at=claimed_at))

    async def purge_idempotency_keys(self, before: datetime) -> int:
        return await self._writer.run(lambda c: messaging.purge_idempotency(c, before))

    async def add_webhook(self, url: str, secret: str, events: frozenset[str], *, active: bool,
                          description: str, created_at: datetime) -> Webhook:
        return await self._writer.run(lambda c: messaging.add_webhook(
            c, url, secret, events, active=active, description=description,
            created_at=created_at))

    async def get_webhook(self, webhook_id: WebhookId) -> Webhook | None:
        return await self._read(lambda c: messaging.get_webhook(c, webhook_id))

    async def list_webhooks(self) -> Sequence[Webhook]:
        return await self._read(messaging.list_webhooks)

    async def update_webhook(self, webhook_id: WebhookId, *, url: str, events: frozenset[str],
                             active: bool, description: str) -> Webhook:
        return await self._writer.run(lambda c: messaging.update_webhook(
            c, webhook_id, url=url, kinds=events, active=active, description=description))

    async def delete_webhook(self, webhook_id: WebhookId) -> bool:
        return await self._writer.run(lambda c: messaging.delete_webhook(c, webhook_id))

    async def enqueue_webhook_events(self, now: datetime, batch: int) -> int:
        return await self._writer.run(lambda c: messaging.enqueue_events(c, now, batch))

    async def claim_webhook_deliveries(self, now: datetime, limit: int,
                                       lease_until: datetime) -> Sequence[WebhookJob]:
        return await self._writer.run(lambda c: messaging.claim_deliveries(
            c, now, limit, lease_until))

    async def record_webhook_attempt(self, delivery_id: WebhookDeliveryId, *, at: datetime,
                                     status: DeliveryStatus, attempts: int,
                                     next_attempt_at: datetime | None, status_code: int | None,
                                     response: str) -> None:
        await self._writer.run(lambda c: messaging.record_attempt(
            c, delivery_id, at=at, status=status, attempts=attempts,
            next_attempt_at=next_attempt_at, status_code=status_code, response=response))

    async def list_webhook_deliveries(self, webhook_id: WebhookId, *, limit: int = 100,
                                      status: DeliveryStatus | None = None
                                      ) -> Sequence[WebhookDelivery]:
        return await self._read(lambda c: messaging.list_deliveries(
            c, webhook_id, limit=limit, status=status))
