"""Retention: events and finished queue messages are deleted once older than their period.

Theory of operation
-------------------
`[marketing] event_retention_days` and `message_retention_days` bound how long we keep what
we know about deliveries (data minimisation, GDPR Art. 5(1)(e)) and how much disk old messages
take. `run_retention` deletes in batches (storage/sql/retention.py says why) until a batch comes
back short; it is what `mailprime retention run` calls. A period of 0 (or less) keeps that kind
of data for ever. Mailboxes are never touched: a stored message belongs to its owner, not to us.

The server runs it itself (`RetentionTask`): the first run `first_delay` after start (a minute:
out of the way of start-up, soon enough that a server restarted daily still runs it), then every
`[marketing] retention_interval_hours` (default 24; 0: no task). The runtime starts it in one
process of a node (the first worker); nodes sharing one database each run it, which is safe:
every delete is "the oldest rows older than the cutoff", so two runs at once delete each row
once and the later one finds less. A run that fails (the database away) is logged and the task
waits for the next interval; each run logs what it deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailprime.domain.clock import Clock
from mailprime.domain.errors import DomainError
from mailprime.logline import emit
from mailprime.storage.ports import AudienceStore

log = logging.getLogger("mailprime.retention")

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


class RetentionTask:
    """Runs `run_retention` every `interval` seconds, the first time after `first_delay` (the
    module doc). `sleep` is injectable for tests."""

    def __init__(self, store: AudienceStore, clock: Clock, *, interval: float,
                 event_days: int, message_days: int, first_delay: float = 60.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if interval <= 0:
            raise ValueError("a retention interval is positive (0 means: start no task)")
        self.store = store
        self.clock = clock
        self.interval = interval
        self.first_delay = min(first_delay, interval)
        self.event_days = event_days
        self.message_days = message_days
        self._sleep = sleep
        self.runs = 0  # completed runs (what a test waits for)

    async def run(self) -> None:
        """Until cancelled."""
        await self._sleep(self.first_delay)
        while True:
            await self.run_once()
            await self._sleep(self.interval)

    async def run_once(self) -> RetentionResult | None:
        """One run, logged; None if it failed (logged too: the next interval tries again)."""
        try:
            result = await run_retention(self.store, now=self.clock.now(),
                                         event_days=self.event_days,
                                         message_days=self.message_days)
        except DomainError as exc:
            emit(log, "retention", logging.ERROR, status="failed", reason=exc.message)
            return None
        except Exception:  # the task must outlive any one run: log it, try again later
            log.exception("retention: run failed")
            return None
        self.runs += 1
        emit(log, "retention", status="done", events=result.events, messages=result.messages,
             event_cutoff=_when(result.event_cutoff), message_cutoff=_when(result.message_cutoff))
        return result


def _when(cutoff: datetime | None) -> str:
    return "never" if cutoff is None else cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
