"""Header fields that submitted mail leaving us should carry for the mailbox providers:
Gmail's Feedback-ID, and MIME-Version where a MIME message forgot it.

Theory of operation
-------------------
Gmail's feedback loop aggregates spam complaints by the `Feedback-ID` field,
"CampaignId:CustomerId:MailType:SenderId": SenderId is required and should be stable per
sender; the first three are optional identifiers (empty allowed) of the sender's choice. Gmail
only trusts the field when a DKIM signature covers it, so the lines built here are added to the
header section *before* signing (services.inbound builds them with the Message-ID and Date it
adds; message.dkim signs "feedback-id"). Our choice of identifiers: the campaign from the
client's `X-Campaign-ID` (else the configured default), the customer as the sending domain, the
type from `X-Mailprime-Type` (else the configured default), and the configured sender id. The
client's own fields stay in the message: they are harmless, some providers read X-Campaign-ID,
and removing them would mean rewriting a body that is already on disk. A message that brings
its own Feedback-ID keeps it, unchanged.

Values are cut to FIELD_MAX characters of [A-Za-z0-9._-] (anything else becomes "-"), so a
client cannot smuggle a colon (a fifth field) or a line break (a header injection) into it.

MIME-Version: RFC 2045 4 requires "MIME-Version: 1.0" in a MIME message; a Content-Type field
without it is a message some filters score as malformed, so it is added when missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailprime.message.bounce_parse import header_text
from mailprime.message.headers import fold, header_names, header_section

FIELD_MAX = 64  # per identifier; Gmail sets no limit, a short field stays on one line
CAMPAIGN_HEADER = "X-Campaign-ID"
TYPE_HEADER = "X-Mailprime-Type"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class FeedbackIdConfig:
    sender_id: str = "mailprime"  # empty: no Feedback-ID is added
    mail_type: str = "transactional"
    campaign: str = "default"


def clean_identifier(value: str) -> str:
    return _UNSAFE.sub("-", value.strip())[:FIELD_MAX]


def feedback_id(*, campaign: str, customer: str, mail_type: str, sender_id: str) -> str:
    return ":".join(clean_identifier(v) for v in (campaign, customer, mail_type, sender_id))


def provider_header_lines(message_head: bytes, *, sender: str, config: FeedbackIdConfig) -> bytes:
    """The lines to add to a submitted message that leaves: Feedback-ID and MIME-Version, each
    only when missing. `message_head` is the start of the message as the client sent it."""
    section = header_section(message_head)
    names = header_names(section)
    out = ""
    if config.sender_id and "feedback-id" not in names:
        campaign = header_text(section, CAMPAIGN_HEADER) if CAMPAIGN_HEADER.lower() in names else None
        mail_type = header_text(section, TYPE_HEADER) if TYPE_HEADER.lower() in names else None
        customer = sender.rpartition("@")[2].lower()
        out += fold("Feedback-ID", feedback_id(
            campaign=campaign or config.campaign, customer=customer,
            mail_type=mail_type or config.mail_type, sender_id=config.sender_id))
    if "content-type" in names and "mime-version" not in names:
        out += "MIME-Version: 1.0\r\n"
    return out.encode("ascii")


__all__ = [
    "CAMPAIGN_HEADER",
    "TYPE_HEADER",
    "FeedbackIdConfig",
    "clean_identifier",
    "feedback_id",
    "provider_header_lines",
]
