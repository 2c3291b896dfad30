"""Webhooks: the events of the log POSTed, signed, to the URLs that subscribed to them.

Theory of operation
-------------------
Events are facts in one append-only log (events table); a webhook reads it through its own
cursor, so nothing on the mail path knows webhooks exist, and a slow or dead receiver can delay
only its own deliveries, never a delivery of mail. The dispatcher is one background task per
process, in three steps each round:

1. enqueue: for every active webhook, the events past its cursor of a kind it wants become
   pending delivery rows (one per webhook and event, unique), and the cursor moves on, in one
   transaction. A webhook made now starts at the newest event: no history is replayed.
2. claim: due deliveries are leased (their next attempt moved to the end of the lease) so that
   other processes and nodes sharing the database skip them; a process that dies holding a
   lease leaves them due again when it ends.
3. attempt: each is POSTed (at most `concurrency` at once, each under `timeout`), and the
   outcome written to the delivery log: 2xx is delivered; anything else (another status, a
   refused connection, a timeout, a TLS failure) is retried after `retry_base` doubled per
   attempt, at most `retry_max` (1 min ... 24 h by default), until `max_attempts`, then failed.

Delivery is at least once: a receiver that answered 2xx but whose answer was lost gets the
event again, with the same `id`, by which it can tell. Order is not guaranteed across retries.

The payload is JSON {"id", "type", "at", "queue_id", "recipient", "attrs"}, its "type" the
event's kind as it is (domain.messaging.WEBHOOK_EVENTS lists those a webhook may want: a
"replied" event is EventKind.REPLIED, services.replies says what its attrs hold); the signature is
`X-Mailprime-Signature: t=<unix time>,v1=<hex HMAC-SHA256 with the webhook's secret of
"<t>.<body>">` (the timestamp inside the MAC, so a captured request cannot be replayed later
with a new time; a receiver refuses a t more than a few minutes old: `verify` shows how).

The idempotency records of the messages API are purged here too (hourly, older than 24 h): the
one background task of the messaging tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailprime import __version__
from mailprime.domain.clock import Clock
from mailprime.domain.errors import DomainError
from mailprime.domain.messaging import DeliveryStatus, WebhookJob
from mailprime.logline import emit
from mailprime.storage.ports import MessagingStore

log = logging.getLogger("mailprime.webhooks")

SIGNATURE_HEADER = "X-Mailprime-Signature"
MAX_REPLY = 64 * 1024  # octets of a receiver's answer read; the log keeps the first 1000 chars
IDEMPOTENCY_TTL = timedelta(hours=24)
PURGE_INTERVAL = 3600.0


class HttpPoster(Protocol):
    """POSTs `body` to `url`; (status, answer body). net.http_client implements it."""

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes, *,
                   timeout: float, max_reply: int) -> tuple[int, bytes]: ...


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    poll_interval: float = 1.0
    batch: int = 200
    concurrency: int = 8
    timeout: float = 10.0
    retry_base: float = 60.0
    retry_max: float = 86400.0
    max_attempts: int = 12

    @property
    def lease_seconds(self) -> float:
        # Long enough for a claimed batch to be attempted at `concurrency` POSTs at a time.
        return self.timeout * (4 + 1) + 30.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Mailprime-Signature value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: the header's t is recent and one of its v1 MACs matches."""
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in fields if name.strip() == "t"]
    macs = [value.strip() for name, _, value in fields if name.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def payload(job: WebhookJob) -> bytes:
    return json.dumps({
        "id": int(job.event_id), "type": job.event_kind, "at": job.event_at.isoformat(),
        "queue_id": job.queue_id, "recipient": job.recipient, "attrs": dict(job.attrs),
    }, separators=(",", ":")).encode()


def backoff(attempts: int, config: WebhookConfig) -> float:
    """Seconds before the next attempt after `attempts` failed ones (1, 2, ...)."""
    return float(min(config.retry_max, config.retry_base * 2 ** max(0, attempts - 1)))


def _excerpt(data: bytes) -> str:
    return data[:1000].decode("utf-8", "replace")


class WebhookDispatcher:
    def __init__(self, store: MessagingStore, poster: HttpPoster, clock: Clock,
                 config: WebhookConfig | None = None) -> None:
        self.store = store
        self.poster = poster
        self.clock = clock
        self.config = config or WebhookConfig()
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_purge = 0.0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Rounds until stopped; a round that fails (the database away) is logged and retried
        at the next poll, so the task never dies of it."""
        while not self._stopping:
            try:
                await self.run_once()
                await self._purge()
            except DomainError as exc:
                emit(log, "webhooks", logging.ERROR, status="round failed", reason=exc.message)
            except Exception:  # the task must outlive any one round: log it, try again later
                log.exception("webhooks: round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self) -> int:
        """One round: enqueue new events, then attempt what is due; returns attempts made."""
        cfg = self.config
        await self.store.enqueue_webhook_events(self.clock.now(), cfg.batch)
        made = 0
        limit = asyncio.Semaphore(cfg.concurrency)

        async def attempt(job: WebhookJob) -> None:
            async with limit:
                await self.attempt(job)

        while not self._stopping:
            now = self.clock.now()
            jobs = await self.store.claim_webhook_deliveries(
                now, cfg.concurrency * 4, now + timedelta(seconds=cfg.lease_seconds))
            if not jobs:
                break
            async with asyncio.TaskGroup() as group:
                for job in jobs:
                    group.create_task(attempt(job))
            made += len(jobs)
        return made

    async def attempt(self, job: WebhookJob) -> DeliveryStatus:
        cfg = self.config
        body = payload(job)
        headers = [("Content-Type", "application/json"),
                   ("User-Agent", f"mailprime-webhooks/{__version__}"),
                   ("X-Mailprime-Event", job.event_kind),
                   ("X-Mailprime-Delivery", str(job.delivery_id)),
                   (SIGNATURE_HEADER, sign(job.secret, int(time.time()), body))]
        code: int | None = None
        try:
            code, answer = await self.poster.post(job.url, headers, body, timeout=cfg.timeout,
                                                  max_reply=MAX_REPLY)
            response = _excerpt(answer)
        except TimeoutError:
            response = f"no answer within {cfg.timeout:g} s"
        except (OSError, ValueError) as exc:
            response = f"{type(exc).__name__}: {exc}"
        attempts = job.attempts + 1
        now = self.clock.now()
        next_at: datetime | None = None
        if code is not None and 200 <= code < 300:
            status = DeliveryStatus.DELIVERED
        elif attempts >= cfg.max_attempts:
            status = DeliveryStatus.FAILED
        else:
            status = DeliveryStatus.PENDING
            next_at = now + timedelta(seconds=backoff(attempts, cfg))
        await self.store.record_webhook_attempt(
            job.delivery_id, at=now, status=status, attempts=attempts, next_attempt_at=next_at,
            status_code=code, response=response)
        emit(log, "webhooks", logging.INFO if status is DeliveryStatus.DELIVERED else logging.WARNING,
             webhook=job.webhook_id, event=job.event_id, type=job.event_kind, url=job.url,
             code=code if code is not None else "-", attempts=attempts, status=status.value)
        return status

    async def _purge(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL
        await self.store.purge_idempotency_keys(self.clock.now() - IDEMPOTENCY_TTL)


__all__ = ["IDEMPOTENCY_TTL", "SIGNATURE_HEADER", "HttpPoster", "WebhookConfig",
           "WebhookDispatcher", "backoff", "payload", "sign", "verify"]
