"""Campaigns (issue 5): what one mailing to lists is, and the one table its status moves by.

Theory of operation
-------------------
A campaign's life is a small state machine, written out as a table (`TRANSITIONS`) instead of
checks scattered over the CLI, the API and the dispatcher, so that "may a paused campaign be
scheduled?" has one answer and every path that changes a status asks the same function,
`transition`, which refuses an illegal move with `IllegalTransition` (409: the request
conflicts with the campaign's state) naming both states and the moves that are allowed:

    draft ──► scheduled ──► sending ◄──► paused
      │           │  ▲          │           │
      │           ▼  │          ▼           │
      │         (draft)        sent         │
      └───────────┴──► cancelled ◄──────────┘

* draft → scheduled (a start time given) or straight to sending; scheduled → draft unschedules.
* sending ⇄ paused: a pause always carries its reason — the operator, a guardrail (the
  hard-bounce or complaint rate), or an error that stops the dispatcher (its template was
  deleted) — and a sentence for people; leaving paused clears it.
* sending → sent only when the audience has been walked and no send is pending (the
  dispatcher decides; the table only says the move exists).
* cancelled and sent are final: nothing is sent after them, and they never move again.

Exactly once is not the state machine's job but the send records' (domain `SendRecord`, one per
campaign and contact, written before the message is queued: see marketing.dispatch).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from mailprime.domain.errors import DomainError
from mailprime.domain.ids import CampaignId, ContactId, ListId, QueueId, SegmentId, TemplateId

MAX_NAME = 200
MAX_LISTS = 50  # lists one campaign may name: more is a mistake, not a campaign
MAX_RATE = 1_000_000  # messages per minute; 0 means no limit of the campaign's own
MAX_DETAIL = 1000  # characters of a pause or send reason kept


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class PauseReason(enum.StrEnum):
    OPERATOR = "operator"
    HARD_BOUNCES = "hard_bounces"  # guardrail: hard bounces / sent above the limit
    COMPLAINTS = "complaints"  # guardrail: complaints / sent above the limit
    ERROR = "error"  # the dispatcher cannot go on (template deleted, links not https, ...)


S = CampaignStatus
TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.SENDING, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.DRAFT, S.SENDING, S.CANCELLED}),
    S.SENDING: frozenset({S.PAUSED, S.SENT, S.CANCELLED}),
    S.PAUSED: frozenset({S.SENDING, S.CANCELLED}),
    S.SENT: frozenset(),
    S.CANCELLED: frozenset(),
}
FINAL = frozenset({S.SENT, S.CANCELLED})
# Settings may change only before anything is sent: afterwards a change would make one
# campaign's recipients get different mail, and its counters mean nothing.
EDITABLE = frozenset({S.DRAFT, S.SCHEDULED})


class CampaignError(DomainError):
    """A campaign cannot be created or changed as asked (the text says why)."""

    http_status = 422


class IllegalTransition(CampaignError):
    http_status = 409


class SendStatus(enum.StrEnum):
    PENDING = "pending"  # row written, queue id chosen; the accept may or may not have committed
    QUEUED = "queued"  # the message is in the queue under `queue_id`
    SKIPPED = "skipped"  # the gate refused the contact (reason says why); nothing was queued
    FAILED = "failed"  # the message could not be built for this contact (reason says why)


@dataclass(frozen=True, slots=True)
class CampaignDraft:
    """What a caller gives to create a campaign."""

    name: str
    template_id: TemplateId
    list_ids: tuple[ListId, ...]
    from_address: str
    from_name: str = ""
    reply_to: str | None = None
    subject: str | None = None  # overrides the template's subject (a template itself)
    segment_id: SegmentId | None = None
    rate_per_minute: int = 0
    track_opens: bool = True
    track_clicks: bool = True
    postal_address: str = ""

    def check(self) -> None:
        """Raises CampaignError for a value no campaign can have."""
        if not self.name.strip() or len(self.name) > MAX_NAME:
            raise CampaignError(f"a campaign name is 1 to {MAX_NAME} characters")
        if not 1 <= len(self.list_ids) <= MAX_LISTS:
            raise CampaignError(f"a campaign is sent to 1 to {MAX_LISTS} lists")
        if len(set(self.list_ids)) != len(self.list_ids):
            raise CampaignError("a list is named twice")
        if not 0 <= self.rate_per_minute <= MAX_RATE:
            raise CampaignError(f"the rate is 0 (no limit) to {MAX_RATE:,} messages a minute")
        if "@" not in self.from_address or any(ch in self.from_address for ch in " <>,;\"\r\n"):
            raise CampaignError(f"the From address {self.from_address!r} is not an address")
        for what, value in (("From name", self.from_name), ("Reply-To", self.reply_to or ""),
                            ("subject", self.subject or ""),
                            ("postal address", self.postal_address)):
            if "\r" in value or "\n" in value:
                raise CampaignError(f"the {what} must be one line")


@dataclass(frozen=True, slots=True)
class Campaign:
    id: CampaignId
    name: str
    template_id: TemplateId
    list_ids: tuple[ListId, ...]
    segment_id: SegmentId | None
    from_address: str
    from_name: str
    reply_to: str | None
    subject: str | None
    status: CampaignStatus
    rate_per_minute: int
    scheduled_at: datetime | None
    track_opens: bool
    track_clicks: bool
    postal_address: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pause_reason: PauseReason | None = None
    pause_detail: str = ""
    cursor: ContactId | None = None  # the last contact whose send row is written (keyset)

    @property
    def sending_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One contact of one campaign: what was done for it (UNIQUE per campaign and contact)."""

    campaign_id: CampaignId
    contact_id: ContactId
    email: str
    status: SendStatus
    queue_id: QueueId | None = None
    reason: str = ""  # skipped/failed: a short code (the gate's refusal, "render", ...)
    detail: str = ""  # a sentence for people
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CampaignCounters:
    """Derived from the send records and the events of their queue ids (nothing is counted
    twice: one bounce report is one event, and a contact is counted once per kind)."""

    pending: int = 0
    queued: int = 0
    skipped: int = 0
    failed: int = 0
    hard_bounces: int = 0
    complaints: int = 0

    @property
    def sent(self) -> int:
        return self.queued


@dataclass(frozen=True, slots=True)
class CampaignStats:
    counters: CampaignCounters
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    bounced: int = 0  # contacts with any bounce (hard or soft, final)
    opened: int = 0  # distinct recipients
    clicked: int = 0
    unsubscribed: int = 0
    machine_opens: int = 0  # opens fetched by a machine (privacy proxy, scanner)


def transition(campaign: Campaign, to: CampaignStatus, *, at: datetime,
               reason: PauseReason | None = None, detail: str = "") -> Campaign:
    """The campaign in its new status; IllegalTransition when the table has no such move."""
    allowed = TRANSITIONS[campaign.status]
    if to not in allowed:
        moves = ", ".join(sorted(allowed)) or "none: it is final"
        raise IllegalTransition(f"campaign {campaign.name!r} is {campaign.status}: it cannot "
                                f"become {to} (allowed: {moves})")
    if to is S.PAUSED and reason is None:
        raise CampaignError("a pause needs its reason (operator or a guardrail)")
    if to is not S.PAUSED and reason is not None:
        raise CampaignError("only a pause carries a reason")
    changes: dict[str, object] = {"status": to, "updated_at": at,
                                  "pause_reason": reason if to is S.PAUSED else None,
                                  "pause_detail": detail[:MAX_DETAIL] if to is S.PAUSED else ""}
    if to is S.SENDING and campaign.started_at is None:
        changes["started_at"] = at
    if to in FINAL:
        changes["finished_at"] = at
    if to is S.DRAFT:
        changes["scheduled_at"] = None
    return replace(campaign, **changes)  # type: ignore[arg-type]


__all__ = [
    "EDITABLE",
    "FINAL",
    "MAX_DETAIL",
    "MAX_LISTS",
    "MAX_NAME",
    "MAX_RATE",
    "TRANSITIONS",
    "Campaign",
    "CampaignCounters",
    "CampaignDraft",
    "CampaignError",
    "CampaignStats",
    "CampaignStatus",
    "IllegalTransition",
    "PauseReason",
    "SendRecord",
    "SendStatus",
    "transition",
]
