"""Facts that deliverability keeps: suppressed addresses, MTA-STS policies seen, TLS results.

A suppression is the sender's promise not to mail an address again: made by a hard bounce, a
complaint (ARF), too many soft bounces in a window, or an operator. Its `scope` is the sending
domain it applies to, or "" for every sending domain (configurable: `[suppression] scope`).
Addresses are kept lower-cased: mailbox providers treat local parts case-insensitively, and a
suppression that misses "Bob@" after "bob@" bounced would be worse than one too many.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from mailprime.domain.ids import QueueId

GLOBAL_SCOPE = ""


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    SOFT_BOUNCES = "soft_bounces"  # N soft bounces within M days
    MANUAL = "manual"  # added by an operator
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str  # lower-cased
    scope: str  # sending domain (lower-case A-label) or GLOBAL_SCOPE
    reason: SuppressionReason
    created_at: datetime
    detail: str = ""  # the evidence: the reply, the DSN status, the report's source
    queue_id: QueueId | None = None  # the message whose bounce or complaint caused it


def normalize_address(address: str) -> str:
    return address.strip().strip("<>").lower()


@dataclass(frozen=True, slots=True)
class MtaStsPolicyRecord:
    """An MTA-STS policy as fetched (RFC 8461 3.2) and cached until `expires_at` (its max_age).
    `policy_id` is the id= of the _mta-sts TXT record it was fetched under (3.1): a new id
    means a new policy to fetch."""

    domain: str
    policy_id: str
    policy_text: str
    fetched_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TlsResultKey:
    """One line of an SMTP TLS report (RFC 8460 4.4): per policy domain and day, the count of
    successful sessions (result_type "") and of each failure type, per receiving MX host."""

    policy_domain: str
    policy_type: str  # "sts", "no-policy-found"
    result_type: str  # "" for success, else an RFC 8460 4.3 result type
    receiving_mx: str = ""
