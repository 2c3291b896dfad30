"""Delivery Status Notifications owed after a delivery attempt (RFC 3461 sections 5 and 6).

Theory of operation. After every attempt the worker hands the job and its scheduled outcomes to
`Notifier.after_attempt`. The pure `plan_notices` sorts the job's recipients into at most three
groups, and each non-empty group becomes one DSN (RFC 3464) to the envelope sender, queued from
the null reverse-path:

  failed   bounced or expired, unless NOTIFY left FAILURE out (NEVER, or a list without it;
           no NOTIFY means FAILURE, RFC 3461 4.1 and 5.2.6);
  relayed  delivered to a next hop that did not offer DSN, when NOTIFY had SUCCESS (5.2.2); a
           next hop that offered DSN was handed the NOTIFY and reports itself, so we say
           nothing (5.2.1);
  delayed  deferred, at most once per recipient (5.2.5 leaves "when" to the MTA; we follow
           Postfix's delay_warning_time): with `delay_warning` > 0, at the first deferral once
           the message has been queued that long, for NOTIFY=DELAY and for recipients without
           NOTIFY; with `delay_warning` = 0, at the first deferral and only for an explicit
           NOTIFY=DELAY.

Nothing is ever reported about a message sent with the null reverse-path (RFC 3461 6.2, RFC
5321 4.5.5). "Once per recipient" is remembered in the event log: every delayed (and relayed) DSN
appends DSN_SENT with attrs action=... for each recipient it covers. The history is read only
when a candidate for a delay warning had an earlier attempt: before its first deferral no
warning can have gone out. A crash between queueing the DSN and appending the event can repeat
one warning; that is preferred to losing it.

"Delivered" DSNs for local mailboxes are not sent here: they are owed at accept time, by the
inbound service (RFC 3461 5.2.3).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mailprime.domain.ids import QueueId
from mailprime.domain.mail import (
    DeliveryJob,
    DsnNotify,
    DsnRet,
    Event,
    EventKind,
    Priority,
    QueueRecipient,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.logline import emit
from mailprime.message.dsn import (
    DEFAULT_MAX_FULL_SIZE,
    DsnAction,
    DsnRecipient,
    build_dsn,
    wants_dsn,
)
from mailprime.message.headers import MAX_HEADER_SECTION
from mailprime.storage.ports import EventLog, MailStore

log = logging.getLogger("mailprime.delivery")

# Postfix's delay_warning_time is off by default; 4 hours is the value its documentation
# suggests and what most installations set.
DEFAULT_DELAY_WARNING = 4 * 3600.0
# Events of one message read back to find earlier delay warnings. One message has at most a few
# thousand recipients (RFC 5321 4.5.3.1.8 asks only 100 per transaction of us) and each gets one
# event per attempt; a warning is due within the first hours, so it is far inside this window.
MAX_HISTORY = 100_000

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")  # RFC 3463 2


class MailInjector(Protocol):
    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = ..., source: str = ...) -> QueueId | None: ...


class NoticeStore(MailStore, EventLog, Protocol):
    """What the notifier needs of storage: the original's content and the event log."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One recipient to be reported, with the outcome of the attempt that reports it."""

    recipient: QueueRecipient
    outcome: RecipientOutcome


@dataclass(frozen=True, slots=True)
class NoticePlan:
    """The DSNs one attempt calls for: one per non-empty group."""

    failed: tuple[Notice, ...] = ()
    relayed: tuple[Notice, ...] = ()
    delayed: tuple[Notice, ...] = ()

    def groups(self) -> list[tuple[DsnAction, tuple[Notice, ...]]]:
        pairs = [(DsnAction.FAILED, self.failed), (DsnAction.RELAYED, self.relayed),
                 (DsnAction.DELAYED, self.delayed)]
        return [(action, notices) for action, notices in pairs if notices]

    def __bool__(self) -> bool:
        return bool(self.failed or self.relayed or self.delayed)


# Decisions (pure) -------------------------------------------------------------------------------

def delay_due(rcpt: QueueRecipient, *, arrival: datetime, now: datetime,
              delay_warning: float) -> bool:
    """Whether a recipient deferred `now` is owed a delay warning, if none was sent before."""
    if not wants_dsn(rcpt.notify, DsnAction.DELAYED):
        return False  # NEVER, or a NOTIFY list without DELAY
    if delay_warning > 0:
        return (now - arrival).total_seconds() >= delay_warning
    return DsnNotify.DELAY in rcpt.notify


def plan_notices(job: DeliveryJob, outcomes: Sequence[RecipientOutcome], *, now: datetime,
                 delay_warning: float, warned: Collection[str] = frozenset()) -> NoticePlan:
    """Which recipients of this attempt get which DSN. `outcomes` are after retry scheduling
    (a deferral past the queue lifetime is EXPIRED); `warned` holds the addresses that already
    had a delay warning."""
    if not job.message.sender:
        return NoticePlan()  # never report on a bounce (RFC 3461 6.2, RFC 5321 4.5.5)
    by_id = {r.id: r for r in job.recipients}
    failed: list[Notice] = []
    relayed: list[Notice] = []
    delayed: list[Notice] = []
    for outcome in outcomes:
        rcpt = by_id[outcome.recipient_id]
        status = outcome.status
        if status in (RecipientStatus.BOUNCED, RecipientStatus.EXPIRED):
            if wants_dsn(rcpt.notify, DsnAction.FAILED):
                failed.append(Notice(rcpt, outcome))
        elif status is RecipientStatus.DELIVERED:
            if not outcome.remote_dsn and wants_dsn(rcpt.notify, DsnAction.RELAYED):
                relayed.append(Notice(rcpt, outcome))
        elif (rcpt.address not in warned
              and delay_due(rcpt, arrival=job.message.created_at, now=now,
                            delay_warning=delay_warning)):
            delayed.append(Notice(rcpt, outcome))
    return NoticePlan(tuple(failed), tuple(relayed), tuple(delayed))


def needs_history(plan: NoticePlan) -> bool:
    """Whether the event log must be read to keep delay warnings to one per recipient: only a
    recipient deferred before may have been warned before."""
    return any(n.recipient.attempts > 0 for n in plan.delayed)


def warned_addresses(events: Sequence[Event]) -> frozenset[str]:
    """Recipients that already had a delay warning, from a message's events."""
    return frozenset(
        e.recipient for e in events
        if e.kind is EventKind.DSN_SENT and e.recipient and dict(e.attrs).get("action") == "delayed"
    )


def enhanced_status(reply: str, action: DsnAction) -> str:
    """The RFC 3463 status of a report: the reply's own code with the class the action needs
    (RFC 3464 2.3.4: "failed" is 5.x.x, so an expired 4.4.1 becomes 5.4.1; "delayed" is 4.x.x);
    "relayed" is 2.0.0 whatever the next hop answered, as Postfix reports it."""
    if action in (DsnAction.RELAYED, DsnAction.DELIVERED, DsnAction.EXPANDED):
        return "2.0.0"
    digit = "5" if action is DsnAction.FAILED else "4"
    parts = reply.split()
    if len(parts) >= 2 and _ENHANCED.match(parts[1]) and parts[1][0] in "45":
        return digit + parts[1][1:]
    return f"{digit}.0.0"


def mta_name(remote_host: str) -> str | None:
    """"mx.example.com" from the transport's "mx.example.com[192.0.2.1]:25": RFC 3464 2.3.5 wants
    a host name after "dns;" in Remote-MTA, not our log notation."""
    name = remote_host.split("[", 1)[0].strip()
    return name or None


def dsn_recipient(action: DsnAction, notice: Notice, *, now: datetime,
                  expires_at: datetime) -> DsnRecipient:
    rcpt, outcome = notice.recipient, notice.outcome
    return DsnRecipient(
        final_recipient=rcpt.address,
        original_recipient=rcpt.orcpt,
        action=action,
        status=enhanced_status(outcome.reply, action),
        remote_mta=mta_name(outcome.remote_host),
        diagnostic=outcome.reply,
        # RFC 3464 2.3.6: "smtp" only for a reply a remote server gave; our own reasons (no
        # route, connection refused, expiry) get an "x-" type.
        diagnostic_type="smtp" if outcome.remote_host else "x-mailprime",
        last_attempt=now,
        will_retry_until=expires_at if action is DsnAction.DELAYED else None,  # RFC 3464 2.3.8
    )


def build_notice(job: DeliveryJob, action: DsnAction, notices: Sequence[Notice], *,
                 original: bytes, hostname: str, now: datetime) -> bytes:
    """The DSN for one group. ENVID and RET travel with every kind (RFC 3461 4.3, 4.4);
    `build_dsn` returns the full original only in a failure report, headers otherwise."""
    message = job.message
    return build_dsn(
        reporting_mta=hostname,
        original_sender=message.sender,
        original_content=original,
        arrival_date=message.created_at,
        envid=message.dsn_envid,
        ret_full=message.dsn_ret == DsnRet.FULL,
        queue_id=message.id,
        recipients=[dsn_recipient(action, n, now=now, expires_at=message.expires_at)
                    for n in notices],
        now=now,
    )


# Sending ----------------------------------------------------------------------------------------

def _original_limit(job: DeliveryJob, plan: NoticePlan) -> int:
    """How much of the original the reports need, so a large message is never read whole: the
    header section (RFC 5322 2.2, capped as message.headers caps it), or for a failure report
    with RET=FULL one octet more than `build_dsn` returns whole, so that a longer message is
    seen to be too long and only its headers go back (RFC 3461 4.3 lets the MTA decide)."""
    if plan.failed and job.message.dsn_ret == DsnRet.FULL:
        return DEFAULT_MAX_FULL_SIZE + 1
    return MAX_HEADER_SECTION + 2


class Notifier:
    """Sends the DSNs `plan_notices` calls for, through the same path as any local mail."""

    def __init__(self, store: NoticeStore, injector: MailInjector, *, hostname: str,
                 delay_warning: float = DEFAULT_DELAY_WARNING) -> None:
        self.store = store
        self.injector = injector
        self.hostname = hostname
        self.delay_warning = delay_warning

    async def after_attempt(self, job: DeliveryJob, outcomes: Sequence[RecipientOutcome],
                            now: datetime) -> NoticePlan:
        """Sends what this attempt's outcomes call for; returns the plan it carried out."""
        plan = plan_notices(job, outcomes, now=now, delay_warning=self.delay_warning)
        if needs_history(plan):
            events = await self.store.list_events(job.message.id, limit=MAX_HISTORY)
            plan = plan_notices(job, outcomes, now=now, delay_warning=self.delay_warning,
                                warned=warned_addresses(events))
        if not plan:
            return plan
        async with self.store.open_blob(job.message.blob_id) as blob:
            original = await blob.read_head(_original_limit(job, plan))
        sender = job.message.sender
        for action, notices in plan.groups():
            dsn = build_notice(job, action, notices, original=original, hostname=self.hostname,
                               now=now)
            dsn_id = await self.injector.inject("", [sender], dsn,
                                                priority=Priority.TRANSACTIONAL, source="dsn")
            emit(log, job.message.id, status="dsn", action=action.value,
                 dsn_id=dsn_id or "none", to=f"<{sender}>", nrcpt=len(notices))
            if action is DsnAction.FAILED:
                continue  # the BOUNCED/EXPIRED event already says it; the log line names the DSN
            for notice in notices:
                await self.store.append(
                    EventKind.DSN_SENT, job.message.id, notice.recipient.address,
                    f"{action.value} DSN to <{sender}>",
                    (("action", action.value), ("dsn_queue_id", dsn_id or "")))
        return plan


__all__ = [
    "DEFAULT_DELAY_WARNING",
    "MAX_HISTORY",
    "MailInjector",
    "Notice",
    "NoticePlan",
    "NoticeStore",
    "Notifier",
    "build_notice",
    "delay_due",
    "dsn_recipient",
    "enhanced_status",
    "mta_name",
    "needs_history",
    "plan_notices",
    "warned_addresses",
]
