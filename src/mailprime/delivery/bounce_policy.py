"""Synchronous bounces: what each failed or deferred delivery attempt says about its recipient.

Theory of operation
-------------------
The worker hands every attempt's outcomes here twice. Before they are recorded, `annotate`
classifies each one that did not deliver (message.bounce_reason.classify_reply on the reply the
transport recorded) and adds the classification to the outcome's attrs, so the one
BOUNCED/DEFERRED/EXPIRED event that `record_outcomes` appends carries reason, class (hard or
soft), status and source=sync — one event per fact, enriched, never a second one. After they are
recorded, `after_recorded` passes the failures that concern the address to the suppression
policy (a `FailureRecorder`: services.suppression, wired by the runtime).

Which soft failures count against the address: only those about the address itself (mailbox
full, a temporary "user unknown"), and only once per message. `annotate` marks such an event
`countable=yes`; the policy counts the failure only when its event is the first countable one
of that message and recipient in the event log, so a message deferred ten times for a full
mailbox is one soft bounce, not ten. (The recipient's previous reply, `last_reply`, cannot say
it: our own shaping deferrals overwrite it between two "mailbox full" replies.) Never counted: a
421 reply (RFC 5321 4.2.3: the *service* is closing the channel) or any 4.7.x status
(throttling, greylisting and other policy deferrals — the sender is being slowed, the recipient
is fine), network and DNS trouble, and our own local errors. Hard failures go to the policy
whatever their reason; it decides by reason which of them suppress.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from mailprime.domain.mail import DeliveryJob, RecipientOutcome, RecipientStatus
from mailprime.logline import emit
from mailprime.message.bounce_reason import BounceReason, Classification, basic_code, classify_reply

log = logging.getLogger("mailprime.bounces")

# Soft reasons that say something about the address (see the theory of operation).
COUNTED_SOFT = frozenset({BounceReason.MAILBOX_FULL, BounceReason.USER_UNKNOWN})
# The worker's own failure text (delivery.worker): not a reply of the recipient's server.
_LOCAL_ERROR = "local error"
# The attr the suppression policy looks for (services.suppression.COUNTABLE: the same pair; the
# layers may not import each other).
COUNTABLE = ("countable", "yes")


class FailureRecorder(Protocol):
    """The suppression policy, as this module drives it (services.suppression satisfies it)."""

    async def record_sync_failure(self, job: DeliveryJob, address: str, outcome: RecipientOutcome,
                                  classification: Classification, count_soft: bool) -> None: ...


def is_throttle(reply: str, classification: Classification) -> bool:
    """A reply that slows the sender down rather than refusing the recipient."""
    return basic_code(reply) == 421 or classification.status.startswith("4.7.")


def counts_as_soft_bounce(reply: str, classification: Classification) -> bool:
    """Whether a soft failure with this reply counts against the address."""
    if classification.hard or _LOCAL_ERROR in reply or is_throttle(reply, classification):
        return False
    return classification.reason in COUNTED_SOFT


class SyncBounces:
    def __init__(self, recorder: FailureRecorder | None = None) -> None:
        self.recorder = recorder

    def annotate(self, job: DeliveryJob,
                 outcomes: Sequence[RecipientOutcome]) -> list[RecipientOutcome]:
        """The outcomes with the classification of every failure in their attrs."""
        out = []
        for outcome in outcomes:
            if outcome.status is RecipientStatus.DELIVERED:
                out.append(outcome)
                continue
            c = classify_reply(None, None, outcome.reply)
            attrs: tuple[tuple[str, str], ...] = (
                ("reason", c.reason.value), ("class", "hard" if c.hard else "soft"),
                ("status", c.status), ("source", "sync"))
            if not c.hard and is_throttle(outcome.reply, c):
                attrs += (("throttle", "yes"),)
            elif counts_as_soft_bounce(outcome.reply, c):
                attrs += (COUNTABLE,)
            out.append(replace(outcome, attrs=outcome.attrs + attrs))
        return out

    async def after_recorded(self, job: DeliveryJob, outcomes: Sequence[RecipientOutcome]) -> None:
        """Hands the failures that concern their address to the suppression policy."""
        if self.recorder is None:
            return
        by_id = {r.id: r for r in job.recipients}
        for outcome in outcomes:
            rcpt = by_id.get(outcome.recipient_id)
            if rcpt is None or outcome.status is RecipientStatus.DELIVERED:
                continue
            c = classify_reply(None, None, outcome.reply)
            # Once per message is the policy's to check, on the events (see above).
            count = not c.hard and counts_as_soft_bounce(outcome.reply, c)
            if not c.hard and not count:
                continue
            await self.recorder.record_sync_failure(job, rcpt.address, outcome, c, count)
            emit(log, job.message.id, to=f"<{rcpt.address}>", status="bounce-classified",
                 reason=c.reason.value, bounce_class="hard" if c.hard else "soft",
                 dsn=c.status, source="sync")


__all__ = ["COUNTABLE", "COUNTED_SOFT", "FailureRecorder", "SyncBounces", "counts_as_soft_bounce",
           "is_throttle"]
