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
read from its first octets, where every report format puts the parts that matter):
* at a VERP address: a bounce (bounce_parse: DSN or a known text format) is mapped to the one
  recipient the token names: its queue row gives the address and the original sender; if the
  message is gone from the queue, the bounce's own Final-Recipient and the VERP domain stand
  in. A failed recipient becomes a BOUNCED event (source=async; hard or soft in its attrs), a
  delayed one a DEFERRED event; both go to the suppression policy (soft ones counted once, as
  the remote MTA says it gave up). An ARF report sent to a VERP address (some feedback loops
  use the return path) is handled like one at an FBL address. Anything else (an auto-reply) is
  logged and dropped: it was accepted, so it is not bounced.
* at an FBL address: an ARF report (message.arf) is mapped through the reported message's
  envelope sender (Original-Mail-From, else its Return-Path), when that is one of our VERP
  addresses; else to the recipient the report names, with no queue id. A COMPLAINED event and,
  per policy, a suppression follow.
A report about a recipient whose original sender asked for DSNs (NOTIFY, RFC 3461) is also
forwarded to that sender's mailbox when the sender is a local account: the sender asked, so the
sender gets it. When the transaction also had ordinary recipients, or there is a sender to
forward to, the caller goes on to accept the message for them; otherwise the answer is 250
here, and nothing is stored.

Submitted mail that leaves (`outbound_lines`): Feedback-ID and MIME-Version when missing
(message.feedback_id), added before DKIM signing so the signature covers them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailprime.domain.address import Address
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import DsnNotify, EventKind, LocalDelivery
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
from mailprime.proto.smtp.types import Reply
from mailprime.services.suppression import Failure, SuppressionPolicy
from mailprime.storage.ports import DirectoryStore, EventLog, QueueStore

log = logging.getLogger("mailprime.feedback")

# Soft failures in a bounce that count against the address: the remote MTA kept trying and gave
# up (expired), or said the mailbox is full or (for now) unknown.
_COUNTED_ASYNC = frozenset({BounceReason.MAILBOX_FULL, BounceReason.USER_UNKNOWN,
                            BounceReason.EXPIRED})


class FeedbackStore(QueueStore, EventLog, DirectoryStore, Protocol):
    """What the feedback service reads and writes (the Store satisfies it)."""


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    fbl_addresses: tuple[str, ...] = ("fbl",)
    recipient_header: str = DEFAULT_RECIPIENT_HEADER  # ARF's last resort (message.arf)
    feedback_id: FeedbackIdConfig = field(default_factory=FeedbackIdConfig)


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
            return RcptDecision(Reply(250, "Ok", "2.1.5"), FeedbackTarget(recipient, target))
        if self._is_fbl(addr) and await self.directory.is_local_domain(addr.domain):
            return RcptDecision(Reply(250, "Ok", "2.1.5"), FeedbackTarget(recipient))
        return _CONTINUE

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
        recorded = 0
        forward: list[LocalDelivery] = []
        seen: set[tuple[str, int] | str] = set()
        for target in targets:
            key: tuple[str, int] | str = ((target.verp.queue_id, target.verp.recipient_id)
                                          if target.verp else "fbl")
            if key in seen:
                continue  # one message, one report: the same target twice counts once
            seen.add(key)
            recorded += await self._one(target, message, session)
            if target.verp is not None:
                to = await self._forward_to(target.verp)
                if to is not None and all(d.account_id != to.account_id for d in forward):
                    forward.append(to)
        if others or forward:
            return DataEndResult(None, tuple(forward))
        return DataEndResult(Reply(250, f"Ok: {recorded} report(s) recorded" if recorded
                                   else "Ok: nothing to record", "2.0.0"))

    async def _forward_to(self, verp: VerpTarget) -> LocalDelivery | None:
        """The original sender's mailbox, when the recipient asked for DSNs explicitly (RFC
        3461 NOTIFY other than NEVER): a report the sender asked for must reach the sender,
        VERP or not. Without NOTIFY the bounce is ours to process (and the sender learns of it
        from the event stream)."""
        message = await self.store.get_message(verp.queue_id)
        if message is None or not message.sender:
            return None
        rcpt = next((r for r in await self.store.get_recipients(verp.queue_id)
                     if r.id == verp.recipient_id), None)
        if rcpt is None or not rcpt.notify or rcpt.notify == {DsnNotify.NEVER}:
            return None
        account = await self.directory.get_account(message.sender)
        if account is None or account.disabled:
            return None
        return LocalDelivery(account.id, recipient=message.sender)

    async def _one(self, target: FeedbackTarget, message: bytes, session: str) -> int:
        if target.verp is not None:
            report = parse_bounce_report(message)
            if report is not None:
                return await self._bounce(target.verp, target.address, report, session)
        arf = parse_arf(message, recipient_header=self.config.recipient_header)
        if arf is not None:
            return await self._complaint(arf, target, session)
        emit(log, session, to=f"<{target.address}>", status="feedback-ignored",
             reason="neither a bounce nor a feedback report")
        return 0

    async def _bounce(self, verp: VerpTarget, verp_address: str, report: BounceReport,
                      session: str) -> int:
        failed = _pick(report.recipients)
        address, sender, mapped_by = await self._recipient_of(verp, verp_address, failed.recipient)
        if address is None:
            emit(log, session, to=f"<{verp_address}>", status="feedback-ignored",
                 reason=f"bounce for {verp.queue_id} names no recipient we can map")
            return 0
        delayed = failed.action is DsnAction.DELAYED
        kind = EventKind.DEFERRED if delayed else EventKind.BOUNCED
        attrs = (("reason", failed.reason.value), ("class", "hard" if failed.hard else "soft"),
                 ("status", failed.status), ("source", "async"), ("action", failed.action.value),
                 ("format", report.format.value), ("mapped_by", mapped_by),
                 *((("remote_mta", failed.remote_mta),) if failed.remote_mta else ()),
                 *((("reported_recipient", failed.recipient),)
                   if failed.recipient.lower() != address.lower() else ()))
        detail = failed.diagnostic or f"{failed.action.value} {failed.status}"
        await self.store.append(kind, verp.queue_id, address, detail, attrs)
        emit(log, verp.queue_id, to=f"<{address}>", status=f"async-{kind.value}",
             reason=failed.reason.value, bounce_class="hard" if failed.hard else "soft",
             dsn=failed.status, session=session)
        if not delayed:
            await self.policy.failure(Failure(
                queue_id=verp.queue_id, address=address, sender=sender, reason=failed.reason,
                hard=failed.hard, status=failed.status, source="async", evidence=detail,
                count_soft=failed.reason in _COUNTED_ASYNC, extra=(("format", report.format.value),)))
        return 1

    async def _recipient_of(self, verp: VerpTarget, verp_address: str,
                            reported: str) -> tuple[str | None, str, str]:
        """(recipient address, original sender, how it was found) for a VERP target."""
        message = await self.store.get_message(verp.queue_id)
        for rcpt in await self.store.get_recipients(verp.queue_id) if message is not None else ():
            if rcpt.id == verp.recipient_id:
                return rcpt.address, message.sender if message else "", "verp"
        # The queue row is gone (cleaned up): the token still proves the bounce is about mail we
        # sent, the report says to whom; the VERP domain is (by default) the sender's domain.
        return (reported or None), verp_address, "verp+report"

    async def _complaint(self, arf: FeedbackReport, target: FeedbackTarget, session: str) -> int:
        verp = target.verp or self._verp_of(arf)
        address: str | None = None
        sender = ""
        queue_id: QueueId | None = None
        mapped_by = arf.recipient_source.value if arf.recipient_source else "none"
        if verp is not None:
            found, sender, how = await self._recipient_of(verp, target.address, arf.recipient or "")
            if found is not None:
                address, queue_id, mapped_by = found, verp.queue_id, how
        if address is None:
            address = arf.recipient
            sender = arf.original_mail_from or _from_domain(arf.original_headers)
        if address is None:
            emit(log, session, to=f"<{target.address}>", status="feedback-ignored",
                 reason="complaint names no recipient (redacted?)")
            return 0
        evidence = (f"{arf.feedback_type or 'abuse'} report by {arf.user_agent or 'unknown agent'}"
                    f" about {arf.original_message_id or 'a message'}")
        extra = (("mapped_by", mapped_by),
                 *((("user_agent", arf.user_agent),) if arf.user_agent else ()),
                 *((("source_ip", arf.source_ip),) if arf.source_ip else ()))
        await self.policy.complaint(queue_id=queue_id, address=address, sender=sender,
                                    feedback_type=arf.feedback_type, evidence=evidence, extra=extra)
        emit(log, queue_id or session, to=f"<{address}>", status="complaint",
             feedback_type=arf.feedback_type or "abuse", mapped_by=mapped_by)
        return 1

    def _verp_of(self, arf: FeedbackReport) -> VerpTarget | None:
        """The VERP target of the reported message: its envelope sender as the report states it,
        else its Return-Path field (added by the receiving MTA at final delivery)."""
        if self.codec is None:
            return None
        candidates = [arf.original_mail_from or ""]
        if arf.original_headers:
            candidates.append(header_text(arf.original_headers, "Return-Path") or "")
        for candidate in candidates:
            target = self.codec.decode(candidate) if candidate else None
            if target is not None:
                return target
        return None

    # Submission -------------------------------------------------------------------------------
    def outbound_lines(self, head: bytes, sender: str) -> bytes:
        """Header lines for a submitted message that leaves (before DKIM signing)."""
        return provider_header_lines(head, sender=sender, config=self.config.feedback_id)


def _pick(recipients: Sequence[FailedRecipient]) -> FailedRecipient:
    """The failure a VERP bounce is about: it names one of our recipients, but a remote alias
    may have expanded it; a failed one outranks a delayed one, a hard one a soft one."""
    return sorted(recipients, key=lambda f: (f.action is not DsnAction.FAILED, not f.hard))[0]


def _from_domain(headers: bytes) -> str:
    """A stand-in sender for a complaint we cannot map: the reported message's From."""
    value = header_text(headers, "From") if headers else None
    if not value or "@" not in value:
        return ""
    return "postmaster@" + value.rpartition("@")[2].strip(" >").lower()


__all__ = [
    "DataEndResult",
    "FeedbackConfig",
    "FeedbackService",
    "FeedbackStore",
    "FeedbackTarget",
    "RcptDecision",
]
