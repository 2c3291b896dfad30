"""Guardrails: a campaign whose recipients bounce or complain too much stops itself.

Theory of operation
-------------------
Mailbox providers judge a sender by the share of its mail that bounces hard (addresses that do
not exist: a list that was bought, scraped or left to rot) and that recipients mark as spam
(Gmail and Yahoo ask bulk senders to stay under 0.3 % complaints and treat more as a reason to
filter or refuse). Both rates are visible to us within minutes of sending — synchronous bounces
at once, DSNs and feedback-loop reports soon after — so a campaign that is hurting the
sender's reputation can be stopped before it has mailed the whole list.

The dispatcher asks `evaluate` between batches with the campaign's counters (the store derives
them from the campaign's send records and the BOUNCED/COMPLAINED events of their queue ids). A
rate means nothing on a handful of messages (two bounces out of ten is 20 %), so nothing is
judged before `min_sample` messages are queued. Past it, a rate strictly above its limit
pauses the campaign with a reason (hard_bounces or complaints) and a sentence that gives the
numbers; the operator decides whether to clean the list and resume. Complaints are checked
first: they are the signal providers weigh most.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailprime.domain.campaigns import CampaignCounters, PauseReason


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    min_sample: int = 200
    max_hard_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.003


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: PauseReason
    detail: str


def evaluate(policy: GuardrailPolicy, counters: CampaignCounters) -> Verdict | None:
    """Why the campaign must pause now, or None when it may go on."""
    sent = counters.sent
    if sent < policy.min_sample:
        return None
    complaint_rate = counters.complaints / sent
    if complaint_rate > policy.max_complaint_rate:
        return Verdict(PauseReason.COMPLAINTS, (
            f"complaint rate {complaint_rate:.2%} ({counters.complaints} of {sent} sent) is "
            f"above the limit of {policy.max_complaint_rate:.2%} ([marketing] "
            "max_complaint_rate)"))
    bounce_rate = counters.hard_bounces / sent
    if bounce_rate > policy.max_hard_bounce_rate:
        return Verdict(PauseReason.HARD_BOUNCES, (
            f"hard-bounce rate {bounce_rate:.2%} ({counters.hard_bounces} of {sent} sent) is "
            f"above the limit of {policy.max_hard_bounce_rate:.2%} ([marketing] "
            "max_hard_bounce_rate)"))
    return None


__all__ = ["GuardrailPolicy", "Verdict", "evaluate"]
