"""Transactional API sends and webhooks (issue 5): idempotency records, webhook subscriptions and
the log of their deliveries.

An idempotency record remembers, per API key and `Idempotency-Key`, the digest of the request
that first used the key and, once it is done, the response it got (status and JSON body), so a
retry is answered with the same response instead of sending again. A webhook is a URL, the
secret its payloads are signed with, and the event kinds it wants; each event it should get
becomes one delivery row, retried with backoff until the receiver answers 2xx or the attempts
run out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType

from mailprime.domain.ids import ApiKeyId, EventId, QueueId

WebhookId = NewType("WebhookId", int)
WebhookDeliveryId = NewType("WebhookDeliveryId", int)

# The event kinds a webhook may subscribe to (issue 5: delivered, bounced, complained, opened,
# clicked, unsubscribed, replied). Values of EventKind: a payload's "type" is the event's kind.
WEBHOOK_EVENTS = ("delivered", "bounced", "complained", "opened", "clicked", "unsubscribed",
                  "replied", "deferred", "expired", "suppressed")


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    api_key_id: ApiKeyId
    key: str
    request_hash: str  # SHA-256 hex of the canonical request (method, path, JSON body)
    created_at: datetime
    status: int | None = None  # None: the first request is still being processed
    # The response's JSON text: once done, and while pending the answer its owner will give
    # if its message is accepted (written before the accept: see web.messages_api).
    body: str | None = None
    queue_id: QueueId | None = None  # chosen at the claim: the only id its message may take

    @property
    def done(self) -> bool:
        return self.status is not None


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """What claiming a key found: `owned`, the caller holds the key now (a new record, or a
    stale pending record of the same request taken over); else another request's record."""

    owned: bool
    record: IdempotencyRecord


@dataclass(frozen=True, slots=True)
class Webhook:
    id: WebhookId
    url: str
    secret: str
    events: frozenset[str]
    active: bool
    created_at: datetime
    description: str = ""
    cursor: int = 0  # the id of the last event looked at for this webhook


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due at next_attempt_at (a first try or a retry)
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # the attempts ran out


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    id: WebhookDeliveryId
    webhook_id: WebhookId
    event_id: EventId
    event_kind: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None  # None: no HTTP answer (connection refused, timeout)
    last_response: str = ""  # the start of the answer's body, or why there was none


@dataclass(frozen=True, slots=True)
class WebhookJob:
    """One delivery claimed for an attempt: where to, with what secret, and the event."""

    delivery_id: WebhookDeliveryId
    webhook_id: WebhookId
    url: str
    secret: str
    attempts: int  # attempts made before this one
    event_id: EventId
    event_kind: str
    event_at: datetime
    queue_id: QueueId | None
    recipient: str | None
    attrs: tuple[tuple[str, str], ...] = field(default=())


__all__ = ["WEBHOOK_EVENTS", "DeliveryStatus", "IdempotencyClaim", "IdempotencyRecord", "Webhook",
           "WebhookDelivery", "WebhookDeliveryId", "WebhookId", "WebhookJob"]
