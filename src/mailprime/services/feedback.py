"""Bounces and complaints arriving at the MX become events and suppressions; submitted mail is
checked against the suppression list and gets the provider headers it should carry.

Theory of operation
-------------------
The inbound service (services.inbound) calls in at three points; everything else is here.

RCPT (`on_rcpt`). On the MX, an address with our VERP prefix and a token's shape in a local
domain (message.verp) is ours whatever mailboxes exist: a token that verifies is accepted
(250 2.1.5) as a feedback target, with no account behind it; one that does not (forged,
altered, signed with a secret we no longer hold) is refused with 550 5.1.1, before any data.
A configured feedback-loop address (`fbl_addresses`: a full address, or a local part meaning
that local part at every local domain) is accepted the same way. Anything else goes on to the
normal resolution. On the submission listener, a suppressed recipient is refused with
550 5.7.1 (services.suppression's gate).

End of data (`on_data_end`). Feedback targets are never filed into a mailbox. The message is
read once, up to bounce_parse.MAX_REPORT (a message larger than the store's inline limit is
read from its first octets, where every report format puts the parts that matter).

Nothing in a report is believed on its own word: anyone can mail a DSN or an ARF report to our
MX and name any address in it. What makes a report about one of our recipients is a VERP token
(it verifies, so we signed it) that names a queue row of ours (queue id and recipient id both
match, so the message still exists); the address then comes from OUR row, never from the
report, and the report's own recipient only decides whether the failure concerns that address.
* At a VERP address: a bounce (bounce_parse: DSN or a known text format) becomes a BOUNCED
  event (source=async; hard or soft in its attrs), a delayed one a DEFERRED event. It goes to
  the suppression policy only when (1) the queue row still exists — without it the token proves
  we sent something, not to whom, so a report naming a victim would suppress the victim — and
  (2) its Final-Recipient or Original-Recipient is our row's address or ORCPT — else a remote
  alias expanded our recipient and the failure is about the alias's target, not about our
  recipient. Otherwise the event is recorded (mapped=no, or reported_recipient=... with
  recipient_match=no) and nothing is suppressed. An ARF report sent to a VERP address (some
  feedback loops use the return path) is handled like one at an FBL address. Anything else (an
  auto-reply) is logged and dropped: it was accepted, so it is not bounced.
* At an FBL address: an ARF report (message.arf) is mapped through the reported message's
  envelope sender (Original-Mail-From, else its Return-Path) when that is one of our VERP
  addresses naming a queue row of ours: a COMPLAINED event about our row's recipient and, per
  policy, a suppression. An unmapped report is recorded as a COMPLAINED event with mapped=no
  (the address it names in reported_recipient, not as the event's recipient) and suppresses
  nothing. (Trusting reports from known feedback-loop operators by their DKIM signature was
  left out: verification runs after this point, and VERP maps the reports of every major FBL.)

Reports are processed once. A remote MTA whose transaction we answer 4xx later (a failed
commit of the other recipients' copy, the authentication checks) sends the same report again,
so each event carries the report's identity (its Message-ID, else a hash of its octets) and the
recipient id; a report already recorded for that queue id and recipient is acknowledged without
new events or counts (found among the queue id's events, an indexed look-up). Recording after
the commit instead would lose the report when the process stops between the two, and still
record it twice when the remote did not see our 250. A report with no queue id (an unmapped
complaint) changes nothing but the event log, so it is not looked for.

A VERP token carries its issue day: one older than `verp_max_age_days` is refused at RCPT (550
5.1.1) like a forged one, so a token seen once does not work for ever.

A report about a recipient whose original sender asked for DSNs (NOTIFY, RFC 3461) is also
forwarded to that sender's mailbox when the sender is a local account: the sender asked, so the
sender gets it (a report already recorded is forwarded all the same: the copy went with the
transaction the remote retries). When the transaction also had ordinary recipients, or there is
a sender to forward to, the caller goes on to accept the message for them; otherwise the answer
is 250 here, and nothing is stored.

Submitted mail that leaves (`outbound_lines`): Feedback-ID and MIME-Version when missing
(message.feedback_id), added before DKIM signing so the signature covers them.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailprime.domain.address import Address
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import DsnNotify, EventKind, LocalDelivery, QueuedMessage, QueueRecipient
from mailprime.logline import emit
from mailprime.message.arf import DEFAULT_RECIPIENT_HEADER, FeedbackReport, parse_arf
from mailprime.message.bounce_parse import (
    MAX_REPORT,
    BounceReport,
    FailedRecipient,
    header_text,
    parse_bounce_report,
)
from mailprime.message.bounce_reason import BounceReason
from mailprime.message.dsn import DsnAction
from mailprime.message.feedback_id import FeedbackIdConfig, provider_header_lines
from mailprime.message.verp import VerpCodec, VerpTarget
from mailprime.proto.smtp import xtext
from mailprime.proto.smtp.types import Reply
from mailprime.services.suppression import COUNTABLE, MAX_EVENTS_READ, Failure, SuppressionPolicy
from mailprime.storage.ports import DirectoryStore, EventLog, QueueStore

log = logging.getLogger("mailprime.feedback")

# Soft failures in a bounce that count against the address: the remote MTA kept trying and gave
# up (expired), or said the mailbox is full or (for now) unknown.
_COUNTED_ASYNC = frozenset({BounceReason.MAILBOX_FULL, BounceReason.USER_UNKNOWN,
                            BounceReason.EXPIRED})
# A report's identity kept in an event attr: a Message-ID is at most a line (RFC 5322 2.1.1
# allows 998 octets; real ones are under 100), longer ones are hashed instead.
_MAX_IDENTITY = 250
# Clock skew tolerated on a token's issue day (a node whose clock runs a day ahead).
_FUTURE_DAYS = 1


class FeedbackStore(QueueStore, EventLog, DirectoryStore, Protocol):
    """What the feedback service reads and writes (the Store satisfies it)."""


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    fbl_addresses: tuple[str, ...] = ("fbl",)
    recipient_header: str = DEFAULT_RECIPIENT_HEADER  # ARF's last resort (message.arf)
    feedback_id: FeedbackIdConfig = field(default_factory=FeedbackIdConfig)
    verp_max_age_days: int = 30  # [bounces] verp_max_age_days


@dataclass(frozen=True, slots=True)
class FeedbackTarget:
    """A RCPT that takes feedback instead of a mailbox: a VERP address (with what its token
    names) or an FBL address (`verp` None)."""

    address: str
    verp: VerpTarget | None = None


@dataclass(frozen=True, slots=True)
class RcptDecision:
    """`reply` None: not ours, resolve the recipient as usual."""

    reply: Reply | None = None
    target: FeedbackTarget | None = None
    log_reason: str = ""


_CONTINUE = RcptDecision()


@dataclass(frozen=True, slots=True)
class DataEndResult:
    """`reply` None: the caller accepts the message for its other recipients, and for
    `forward` (the original senders who asked for DSNs, RFC 3461) as local deliveries."""

    reply: Reply | None
    forward: tuple[LocalDelivery, ...] = ()


class _Outcome(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # recorded by an earlier delivery of the same report
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class _Row:
    """The queue row a VERP token names, when it still exists."""

    message: QueuedMessage
    recipient: QueueRecipient


class FeedbackService:
    def __init__(self, store: FeedbackStore, policy: SuppressionPolicy, *,
                 codec: VerpCodec | None, directory: DirectoryStore | None = None,
                 config: FeedbackConfig | None = None) -> None:
        self.store = store
        self.policy = policy
        self.codec = codec
        self.directory: DirectoryStore = directory if directory is not None else store
        self.config = config or FeedbackConfig()
        fbl = [a.strip().lower() for a in self.config.fbl_addresses if a.strip()]
        self._fbl_full = frozenset(a for a in fbl if "@" in a)
        self._fbl_local = frozenset(a for a in fbl if "@" not in a)

    # RCPT -----------------------------------------------------------------------------------
    async def on_rcpt(self, *, submission: bool, sender: str, recipient: str) -> RcptDecision:
        if submission:
            refusal = await self.policy.gate(sender, recipient)
            if refusal is None:
                return _CONTINUE
            return RcptDecision(refusal, log_reason=refusal.one_line())
        verp = self.codec is not None and self.codec.is_candidate(recipient)
        if not verp and not self._maybe_fbl(recipient):
            return _CONTINUE  # the common case, decided without parsing: not ours
        try:
            addr = Address.parse(recipient)
        except InvalidAddress:
            return _CONTINUE  # the caller refuses it with its own words
        if verp and self.codec is not None:
            if not await self.directory.is_local_domain(addr.domain):
                return _CONTINUE  # not our domain: the relay check refuses it
            target = self.codec.decode(recipient)
            if target is None:
                return RcptDecision(Reply(550, f"<{recipient}>: Recipient address rejected: "
                                               "invalid bounce address", "5.1.1"),
                                    log_reason="550 5.1.1 invalid VERP token")
            if not self._fresh(target):
                return RcptDecision(Reply(550, f"<{recipient}>: Recipient address rejected: "
                                               "expired bounce address", "5.1.1"),
                                    log_reason=f"550 5.1.1 VERP token issued "
                                               f"{self.codec.age_days(target)} days ago")
            return RcptDecision(Reply(250, "Ok", "2.1.5"), FeedbackTarget(recipient, target))
        if self._is_fbl(addr) and await self.directory.is_local_domain(addr.domain):
            return RcptDecision(Reply(250, "Ok", "2.1.5"), FeedbackTarget(recipient))
        return _CONTINUE

    def _fresh(self, target: VerpTarget) -> bool:
        """Whether the token's issue day is within `verp_max_age_days` (and not in the future
        beyond clock skew)."""
        if self.codec is None:
            return False
        age = self.codec.age_days(target)
        return -_FUTURE_DAYS <= age <= self.config.verp_max_age_days

    def _maybe_fbl(self, recipient: str) -> bool:
        address = recipient.strip().strip("<>").lower()
        return address.rpartition("@")[0] in self._fbl_local or address in self._fbl_full

    def _is_fbl(self, addr: Address) -> bool:
        return addr.key in self._fbl_full or addr.local.lower() in self._fbl_local

    # End of data ------------------------------------------------------------------------------
    async def on_data_end(self, targets: Sequence[FeedbackTarget], message: bytes, *,
                          session: str, others: bool) -> DataEndResult:
        """Records what the message reports. The result's reply is the final one when nothing
        is left to store: no other recipients and nobody to forward the report to."""
        message = message[:MAX_REPORT]
        identity = report_identity(message)
        outcomes: list[_Outcome] = []
        forward: list[LocalDelivery] = []
        seen: set[tuple[str, int] | str] = set()
        for target in targets:
            key: tuple[str, int] | str = ((target.verp.queue_id, target.verp.recipient_id)
                                          if target.verp else "fbl")
            if key in seen:
                continue  # one message, one report: the same target twice counts once
            seen.add(key)
            outcomes.append(await self._one(target, message, identity, session))
            if target.verp is not None:
                to = await self._forward_to(target.verp)
                if to is not None and all(d.account_id != to.account_id for d in forward):
                    forward.append(to)
        if others or forward:
            return DataEndResult(None, tuple(forward))
        recorded = outcomes.count(_Outcome.RECORDED)
        if recorded:
            text = f"Ok: {recorded} report(s) recorded"
        elif _Outcome.DUPLICATE in outcomes:
            text = "Ok: report already recorded"
        else:
            text = "Ok: nothing to record"
        return DataEndResult(Reply(250, text, "2.0.0"))

    async def _row(self, verp: VerpTarget) -> _Row | None:
        """The queue row the token names: the message, and the recipient with that id."""
        message = await self.store.get_message(verp.queue_id)
        if message is None:
            return None
        rcpt = next((r for r in await self.store.get_recipients(verp.queue_id)
                     if r.id == verp.recipient_id), None)
        return _Row(message, rcpt) if rcpt is not None else None

    async def _forward_to(self, verp: VerpTarget) -> LocalDelivery | None:
        """The original sender's mailbox, when the recipient asked for DSNs explicitly (RFC
        3461 NOTIFY other than NEVER): a report the sender asked for must reach the sender,
        VERP or not. Without NOTIFY the bounce is ours to process (and the sender learns of it
        from the event stream)."""
        row = await self._row(verp)
        if row is None or not row.message.sender:
            return None
        if not row.recipient.notify or row.recipient.notify == {DsnNotify.NEVER}:
            return None
        account = await self.directory.get_account(row.message.sender)
        if account is None or account.disabled:
            return None
        return LocalDelivery(account.id, recipient=row.message.sender)

    async def _already(self, verp: VerpTarget, identity: str) -> bool:
        """Whether this report was recorded before for this queue id and recipient id."""
        marks = {("report", identity), ("rcpt_id", str(verp.recipient_id))}
        return any(marks <= set(e.attrs)
                   for e in await self.store.list_events(verp.queue_id, limit=MAX_EVENTS_READ))

    async def _one(self, target: FeedbackTarget, message: bytes, identity: str,
                   session: str) -> _Outcome:
        if target.verp is not None:
            report = parse_bounce_report(message)
            if report is not None:
                return await self._bounce(target.verp, target.address, report, identity, session)
        arf = parse_arf(message, recipient_header=self.config.recipient_header)
        if arf is not None:
            return await self._complaint(arf, target, identity, session)
        emit(log, session, to=f"<{target.address}>", status="feedback-ignored",
             reason="neither a bounce nor a feedback report")
        return _Outcome.IGNORED

    async def _bounce(self, verp: VerpTarget, verp_address: str, report: BounceReport,
                      identity: str, session: str) -> _Outcome:
        if await self._already(verp, identity):
            emit(log, verp.queue_id, to=f"<{verp_address}>", status="feedback-duplicate",
                 report=identity, session=session)
            return _Outcome.DUPLICATE
        row = await self._row(verp)
        failed = _pick(report.recipients, row)
        matches = row is not None and names_recipient(failed, row.recipient)
        delayed = failed.action is DsnAction.DELAYED
        counted = (matches and not delayed and not failed.hard
                   and failed.reason in _COUNTED_ASYNC)
        kind = EventKind.DEFERRED if delayed else EventKind.BOUNCED
        address = row.recipient.address if row is not None else None
        attrs = (("reason", failed.reason.value), ("class", "hard" if failed.hard else "soft"),
                 ("status", failed.status), ("source", "async"), ("action", failed.action.value),
                 ("format", report.format.value), ("mapped_by", "verp" if row else "none"),
                 ("mapped", "yes" if row else "no"),
                 *((("remote_mta", failed.remote_mta),) if failed.remote_mta else ()),
                 *((("reported_recipient", failed.recipient),)
                   if failed.recipient and failed.recipient.lower() != (address or "").lower() else ()),
                 *((("recipient_match", "no"),) if row is not None and not matches else ()),
                 *((COUNTABLE,) if counted else ()),
                 ("report", identity), ("rcpt_id", str(verp.recipient_id)))
        detail = failed.diagnostic or f"{failed.action.value} {failed.status}"
        await self.store.append(kind, verp.queue_id, address, detail, attrs)
        emit(log, verp.queue_id, to=f"<{address or failed.recipient}>",
             status=f"async-{kind.value}", reason=failed.reason.value,
             bounce_class="hard" if failed.hard else "soft", dsn=failed.status, session=session,
             applied="yes" if matches and not delayed else "no",
             why=None if row is not None else "message no longer queued")
        if row is None or not matches or delayed:
            # No queue row: the token proves we sent something, not to whom. A recipient that
            # is not ours: a remote alias expanded it. Either way the address is not at fault.
            return _Outcome.RECORDED
        await self.policy.failure(Failure(
            queue_id=verp.queue_id, address=row.recipient.address, sender=row.message.sender,
            reason=failed.reason, hard=failed.hard, status=failed.status, source="async",
            evidence=detail, count_soft=counted, extra=(("format", report.format.value),)))
        return _Outcome.RECORDED

    async def _complaint(self, arf: FeedbackReport, target: FeedbackTarget, identity: str,
                         session: str) -> _Outcome:
        verp = target.verp or self._verp_of(arf)
        if verp is not None and await self._already(verp, identity):
            emit(log, verp.queue_id, to=f"<{target.address}>", status="feedback-duplicate",
                 report=identity, session=session)
            return _Outcome.DUPLICATE
        row = await self._row(verp) if verp is not None else None
        evidence = (f"{arf.feedback_type or 'abuse'} report by {arf.user_agent or 'unknown agent'}"
                    f" about {arf.original_message_id or 'a message'}")
        address = row.recipient.address if row is not None else None
        extra = (("mapped_by", "verp" if row is not None else "none"),
                 *((("reported_recipient", arf.recipient),)
                   if arf.recipient and arf.recipient.lower() != (address or "").lower() else ()),
                 *((("user_agent", arf.user_agent),) if arf.user_agent else ()),
                 *((("source_ip", arf.source_ip),) if arf.source_ip else ()),
                 ("report", identity),
                 *((("rcpt_id", str(verp.recipient_id)),) if verp is not None else ()))
        queue_id: QueueId | None = verp.queue_id if verp is not None else None
        await self.policy.complaint(
            queue_id=queue_id, address=address, mapped=row is not None,
            sender=row.message.sender if row is not None else "",
            feedback_type=arf.feedback_type, evidence=evidence, extra=extra)
        emit(log, queue_id or session, to=f"<{address or arf.recipient or target.address}>",
             status="complaint", feedback_type=arf.feedback_type or "abuse",
             mapped="yes" if row is not None else "no")
        return _Outcome.RECORDED

    def _verp_of(self, arf: FeedbackReport) -> VerpTarget | None:
        """The VERP target of the reported message: its envelope sender as the report states it,
        else its Return-Path field (added by the receiving MTA at final delivery); a token past
        its age maps nothing."""
        if self.codec is None:
            return None
        candidates = [arf.original_mail_from or ""]
        if arf.original_headers:
            candidates.append(header_text(arf.original_headers, "Return-Path") or "")
        for candidate in candidates:
            target = self.codec.decode(candidate) if candidate else None
            if target is not None and self._fresh(target):
                return target
        return None

    # Submission -------------------------------------------------------------------------------
    def outbound_lines(self, head: bytes, sender: str) -> bytes:
        """Header lines for a submitted message that leaves (before DKIM signing)."""
        return provider_header_lines(head, sender=sender, config=self.config.feedback_id)


def report_identity(message: bytes) -> str:
    """What tells one report from another when the same one arrives twice: its Message-ID
    (RFC 5322 3.6.4: unique per message, and a retry resends the same message), else a hash of
    its octets (a retry resends the same octets)."""
    end = message.find(b"\r\n\r\n")
    head = message[:end] if end >= 0 else message.partition(b"\n\n")[0]
    mid = header_text(head, "Message-ID")
    if mid and len(mid) <= _MAX_IDENTITY:
        return mid
    return "sha256:" + hashlib.sha256(message).hexdigest()[:40]


def _bare(value: str | None) -> str:
    """An address to compare: a DSN field's or an ORCPT's ("rfc822;a+2Bb@c", xtext-encoded,
    RFC 3461 4.2) bare address, lower-cased; "" for none."""
    if not value:
        return ""
    addr_type, sep, rest = value.partition(";")
    if sep and "@" not in addr_type:
        value = rest
        # Not xtext (a DSN field is decoded already): compared as it is.
        with contextlib.suppress(ValueError):
            value = xtext.decode(value.strip())
    return value.strip().strip("<>").strip().lower()


def names_recipient(failed: FailedRecipient, rcpt: QueueRecipient) -> bool:
    """Whether a DSN's Final-Recipient or Original-Recipient is our recipient's address or its
    ORCPT: if neither, a remote alias expanded our recipient and the failure is the alias's."""
    ours = {_bare(rcpt.address), _bare(rcpt.orcpt)} - {""}
    return bool({_bare(failed.recipient), _bare(failed.original_recipient)} & ours)


def _pick(recipients: Sequence[FailedRecipient], row: _Row | None) -> FailedRecipient:
    """The failure a VERP bounce is about: it names one of our recipients, but a remote alias
    may have expanded it; one naming our recipient outranks the others, a failed one a delayed
    one, a hard one a soft one."""
    return sorted(recipients, key=lambda f: (
        row is None or not names_recipient(f, row.recipient), f.action is not DsnAction.FAILED,
        not f.hard))[0]


__all__ = [
    "DataEndResult",
    "FeedbackConfig",
    "FeedbackService",
    "FeedbackStore",
    "FeedbackTarget",
    "RcptDecision",
    "names_recipient",
    "report_identity",
]
