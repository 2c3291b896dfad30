"""Retention: events and finished queue messages are deleted once older than their period.

Theory of operation
-------------------
`[marketing] event_retention_days` and `message_retention_days` bound how long we keep what
we know about deliveries (data minimisation, GDPR Art. 5(1)(e)) and how much disk old messages
take. `run_retention` deletes in batches (storage/sql/retention.py says why) until a batch comes
back short; it is what `mailprime retention run` calls, and what the server can call once a day.
A period of 0 (or less) keeps that kind of data for ever. Mailboxes are never touched: a stored
message belongs to its owner, not to us.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailprime.storage.ports import AudienceStore

EVENT_BATCH = 10_000
MESSAGE_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class RetentionResult:
    events: int
    messages: int
    event_cutoff: datetime | None  # None: kept for ever
    message_cutoff: datetime | None


async def run_retention(store: AudienceStore, *, now: datetime, event_days: int,
                        message_days: int) -> RetentionResult:
    event_cutoff = now - timedelta(days=event_days) if event_days > 0 else None
    message_cutoff = now - timedelta(days=message_days) if message_days > 0 else None
    events = messages = 0
    if message_cutoff is not None:
        while (n := await store.delete_finished_messages_before(
                message_cutoff, limit=MESSAGE_BATCH)) > 0:
            messages += n
            if n < MESSAGE_BATCH:
                break
    if event_cutoff is not None:
        while (n := await store.delete_events_before(event_cutoff, limit=EVENT_BATCH)) > 0:
            events += n
            if n < EVENT_BATCH:
                break
    return RetentionResult(events, messages, event_cutoff, message_cutoff)
