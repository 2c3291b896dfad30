"""The suppression policy: which failures and complaints put an address on the suppression list,
and the gate that keeps submitted mail away from suppressed addresses.

Theory of operation
-------------------
Every failed delivery and every complaint ends here, already classified (message.bounce_reason)
and with its evidence, from two directions: the delivery worker's synchronous replies
(delivery.bounce_policy) and bounces or ARF reports that arrive at the MX (services.feedback).
This module decides what they mean for the address:

* A hard failure whose reason is about the address (configurable; by default user unknown and
  domain not found) suppresses it at once. Policy and authentication blocks are hard too, but
  they say the *sender* must change; suppressing the recipient would hide the problem.
* A soft failure that is about the address (mailbox full, a temporary "user unknown", a remote
  MTA that gave up) is counted once per message and recipient, and the `soft_bounce_limit`-th
  within `soft_bounce_days` suppresses it. Throttling and network trouble are the sender's or
  the path's problem and are never counted (the caller filters). "Once per message" is read
  from the event log, not from the recipient row (whose last reply our own shaping deferrals
  overwrite): the caller has already appended the failure's event marked `countable=yes`, and
  the failure counts only when that event is the first such of its queue id and recipient — a
  message deferred ten times for a full mailbox, with throttling in between, is one soft bounce.
  The counts table is purged of rows older than the window at most once an hour
  (`purge_soft_bounces`), so addresses that never bounce again do not stay in it.
* A complaint (ARF) is recorded as a COMPLAINED event and, unless configured to only record,
  suppresses the address; a "not-spam" report (RFC 6650 7.3) is recorded but suppresses nothing,
  nor does a complaint the caller could not map to a message of ours (`mapped=False`: anyone
  can send a report naming anyone, services.feedback).

The scope of a suppression is global, or (`scope = "domain"`) the sending domain: the domain of
the envelope sender whose mail failed. Mail from the null sender (DSNs) suppresses nothing: no
sending domain owns it; nor, under `scope = "domain"`, does a sender without a domain (the empty
scope would be the global one). A suppression is keyed by the scope in effect when it was made:
changing `scope` later neither moves nor reinterprets existing entries. Each new suppression is
one SUPPRESSED event carrying its evidence (the reply, the DSN status, the report), so the event
log says why an address stopped getting mail; an address already suppressed in that scope keeps
its first entry and gets no second event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from mailprime.domain.clock import Clock
from mailprime.domain.deliverability import (
    GLOBAL_SCOPE,
    Suppression,
    SuppressionReason,
    normalize_address,
)
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import DeliveryJob, EventKind, RecipientOutcome
from mailprime.message.bounce_reason import BounceReason, Classification
from mailprime.proto.smtp.types import Reply
from mailprime.storage.ports import EventLog, SuppressionStore

# What `mailprime suppression` and the RCPT refusal call each reason.
REASON_WORDS: dict[SuppressionReason, str] = {
    SuppressionReason.HARD_BOUNCE: "hard bounce",
    SuppressionReason.COMPLAINT: "complaint",
    SuppressionReason.SOFT_BOUNCES: "repeated soft bounces",
    SuppressionReason.MANUAL: "added by an operator",
    SuppressionReason.UNSUBSCRIBE: "unsubscribed",
}
# An evidence text is one reply or one report line; more is noise in an event.
MAX_EVIDENCE = 2000
# The events of one message read to find an earlier countable soft bounce (or an earlier copy of
# a report, services.feedback): oldest first, so an earlier one is among them unless the message
# had this many before it — [limits] max_recipients (1000 by default) recipients, each queued
# and deferred a dozen times, stay under it.
MAX_EVENTS_READ = 20_000
# How often the soft-bounce counts are purged of rows outside every window (per process).
PURGE_INTERVAL = timedelta(hours=1)
# The attr marking an event whose soft failure counts against the address (once per message).
COUNTABLE = ("countable", "yes")


class SuppressionFacts(SuppressionStore, EventLog, Protocol):
    """The storage this policy needs: the suppression list and the event log."""


@dataclass(frozen=True, slots=True)
class SuppressionConfig:
    scope: str = "global"  # or "domain"
    hard_reasons: frozenset[str] = frozenset({BounceReason.USER_UNKNOWN, BounceReason.DOMAIN_NOT_FOUND})
    soft_bounce_limit: int = 3  # 0: soft bounces never suppress
    soft_bounce_days: int = 7
    complaints: str = "suppress"  # or "record"
    submission_gate: bool = True


@dataclass(frozen=True, slots=True)
class Failure:
    """One classified failure of one recipient, as either path saw it."""

    queue_id: QueueId | None
    address: str
    sender: str  # the original envelope sender ("" for the null sender)
    reason: BounceReason
    hard: bool
    status: str  # RFC 3463 enhanced status code
    source: str  # "sync" (the SMTP reply) or "async" (a bounce at the VERP address)
    evidence: str  # the reply or the diagnostic, one line
    # A soft failure to count (the caller filtered throttling etc.). The caller has appended
    # its event with COUNTABLE in the attrs; the first such of the message counts.
    count_soft: bool = True
    extra: tuple[tuple[str, str], ...] = field(default=())


def sending_domain(sender: str) -> str:
    return sender.rpartition("@")[2].strip().strip(">").lower() if "@" in sender else ""


class SuppressionPolicy:
    def __init__(self, store: SuppressionFacts, clock: Clock,
                 config: SuppressionConfig | None = None) -> None:
        self.store = store
        self.clock = clock
        self.config = config or SuppressionConfig()
        self._purged_at: datetime | None = None

    def scope_for(self, sender: str) -> str:
        return sending_domain(sender) if self.config.scope == "domain" else GLOBAL_SCOPE

    async def failure(self, failure: Failure) -> Suppression | None:
        """Applies one failure; returns the suppression it made, if it made a new one."""
        if not failure.sender:
            return None  # a DSN's own failure: no sending domain to protect
        scope = self.scope_for(failure.sender)
        now = self.clock.now()
        if failure.hard:
            if failure.reason not in self.config.hard_reasons:
                return None
            reason = SuppressionReason.HARD_BOUNCE
        else:
            if not failure.count_soft or self.config.soft_bounce_limit <= 0:
                return None
            if await self._counted_before(failure.queue_id, failure.address):
                return None
            window = timedelta(days=self.config.soft_bounce_days)
            count = await self.store.record_soft_bounce(failure.address, scope, now, now - window)
            if self._purged_at is None or now - self._purged_at >= PURGE_INTERVAL:
                self._purged_at = now
                await self.store.purge_soft_bounces(now - window)
            if count < self.config.soft_bounce_limit:
                return None
            reason = SuppressionReason.SOFT_BOUNCES
        attrs = (("bounce_reason", failure.reason.value),
                 ("class", "hard" if failure.hard else "soft"), ("status", failure.status),
                 ("source", failure.source), *failure.extra)
        return await self._suppress(failure.address, scope, reason, failure.evidence,
                                    queue_id=failure.queue_id, attrs=attrs)

    async def _counted_before(self, queue_id: QueueId | None, address: str) -> bool:
        """Whether the message already had a countable soft failure of this recipient before
        the one just recorded (its own event is one of those read)."""
        if queue_id is None:
            return False  # nothing to tell messages apart by: each failure counts
        key = normalize_address(address)
        countable = sum(1 for e in await self.store.list_events(queue_id, limit=MAX_EVENTS_READ)
                        if COUNTABLE in e.attrs and e.recipient is not None
                        and normalize_address(e.recipient) == key)
        return countable > 1

    async def record_sync_failure(self, job: DeliveryJob, address: str, outcome: RecipientOutcome,
                                  classification: Classification, count_soft: bool) -> None:
        """delivery.bounce_policy's FailureRecorder: one failed attempt of the worker's."""
        extra = (("remote_host", outcome.remote_host),) if outcome.remote_host else ()
        await self.failure(Failure(
            queue_id=job.message.id, address=address, sender=job.message.sender,
            reason=classification.reason, hard=classification.hard, status=classification.status,
            source="sync", evidence=outcome.reply, count_soft=count_soft, extra=extra))

    async def complaint(self, *, queue_id: QueueId | None, address: str | None, sender: str,
                        feedback_type: str, evidence: str, mapped: bool = True,
                        extra: tuple[tuple[str, str], ...] = ()) -> Suppression | None:
        """Records a COMPLAINED event; suppresses the address unless configured not to, the
        report says "not-spam", or it is not `mapped` to a message of ours (then `address` is
        None: the report's own words are in `extra`, not in the event's recipient)."""
        attrs = (("feedback_type", feedback_type or "abuse"), ("source", "arf"),
                 ("mapped", "yes" if mapped else "no"), *extra)
        await self.store.append(EventKind.COMPLAINED, queue_id,
                                normalize_address(address) if address else None,
                                evidence[:MAX_EVIDENCE], attrs)
        if (not mapped or address is None or self.config.complaints != "suppress"
                or feedback_type == "not-spam"):
            return None
        return await self._suppress(address, self.scope_for(sender), SuppressionReason.COMPLAINT,
                                    evidence, queue_id=queue_id, attrs=attrs)

    async def gate(self, sender: str, recipient: str) -> Reply | None:
        """The refusal for a submitted RCPT to a suppressed address, or None to go on."""
        if not self.config.submission_gate:
            return None
        found = await self.store.find_suppression(recipient, sending_domain(sender))
        if found is None:
            return None
        return Reply(550, refusal_text(recipient, found), "5.7.1")

    async def _suppress(self, address: str, scope: str, reason: SuppressionReason, evidence: str,
                        *, queue_id: QueueId | None,
                        attrs: tuple[tuple[str, str], ...]) -> Suppression | None:
        if self.config.scope == "domain" and not scope:
            return None  # no sending domain: "" would be the global scope, not this one's
        entry = Suppression(address=normalize_address(address), scope=scope, reason=reason,
                            created_at=self.clock.now(), detail=evidence[:MAX_EVIDENCE],
                            queue_id=queue_id)
        if not await self.store.suppress(entry):
            return None
        await self.store.append(EventKind.SUPPRESSED, queue_id, entry.address, entry.detail,
                                (("reason", reason.value), ("scope", scope or "global"), *attrs))
        return entry


def refusal_text(recipient: str, entry: Suppression) -> str:
    """"<bob@example.com>: recipient suppressed (hard bounce on 2030-01-02)"."""
    return (f"<{recipient}>: recipient suppressed ({REASON_WORDS.get(entry.reason, entry.reason.value)}"
            f" on {entry.created_at:%Y-%m-%d})")


__all__ = [
    "COUNTABLE",
    "REASON_WORDS",
    "Failure",
    "SuppressionConfig",
    "SuppressionFacts",
    "SuppressionPolicy",
    "refusal_text",
    "sending_domain",
]
