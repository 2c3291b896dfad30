"""Complaints from feedback loops: ARF reports (RFC 5965, RFC 6650) mapped to our recipient.

`parse_arf(message)` returns a `FeedbackReport`, or None for anything that is not one. It never
raises.

Theory of operation
-------------------
An ARF report is a multipart/report; report-type=feedback-report (RFC 5965 2) whose parts are
a human-readable text, a message/feedback-report part of fields, and the reported message
(message/rfc822) or its header section (text/rfc822-headers). The report is recognised by its
message/feedback-report part (outside the returned message); its fields are read like a DSN's
(RFC 5965 3.1: the same syntax as RFC 3464's), keeping every value of the fields that may repeat
(Original-Rcpt-To, Reported-Domain, Reported-URI, Authentication-Results).

Which of our recipients complained is found, in this order:

1. Original-Rcpt-To (RFC 5965 3.2), the envelope recipient, when the provider kept it;
2. the To of the returned message, when it names exactly one address;
3. a header our own messages carry for this purpose (X-Mailprime-Recipient by default,
   configurable), in the returned message's header section.

Providers redact addresses to protect the complainant (RFC 6650 3, and e.g. AOL's
"redacted@..."): an address that is redacted, or not an address at all, is skipped and the next
source is tried. `recipient_source` says which source answered, None if none did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailprime.message.bounce_parse import (
    MAX_REPORT,
    clean_address,
    header_text,
    report_fields,
    returned_headers,
    top_level_parts,
)
from mailprime.message.imap_envelope import MISSING_DOMAIN, MISSING_MAILBOX, parse_address_list
from mailprime.message.imap_fetch import decode_transfer_encoding
from mailprime.message.imap_search import decode_charset
from mailprime.message.mime_tree import MimePart, PartKind, parse_message

DEFAULT_RECIPIENT_HEADER = "X-Mailprime-Recipient"
# RFC 5965 3.1 lets Original-Rcpt-To and Reported-Domain repeat; a report naming more than this
# many is not one complaint about one message.
MAX_REPEATED = 100
# A field value longer than a folded header can usefully be (RFC 5322 2.1.1: 998 per line).
MAX_VALUE = 998

_REPEATABLE = ("original-rcpt-to", "reported-domain", "reported-uri", "authentication-results")


class RecipientSource(enum.StrEnum):
    ORIGINAL_RCPT_TO = "original-rcpt-to"
    TO = "to"
    HEADER = "header"


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    feedback_type: str  # RFC 5965 7.3 registry: abuse, fraud, virus, other, not-spam, auth-failure
    user_agent: str | None
    version: str | None
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    arrival_date: str | None
    source_ip: str | None
    reported_domains: tuple[str, ...]
    recipients: tuple[str, ...]  # the complaining recipients, by `recipient_source`
    recipient_source: RecipientSource | None
    original_message_id: str | None
    original_headers: bytes  # header section of the reported message, b"" if absent

    @property
    def recipient(self) -> str | None:
        return self.recipients[0] if self.recipients else None


def parse_arf(message: bytes, *, recipient_header: str = DEFAULT_RECIPIENT_HEADER) -> FeedbackReport | None:
    """The feedback report in `message`, or None if it holds none. `recipient_header` names
    the header of our own messages that carries their recipient (the last resort)."""
    message = message[:MAX_REPORT]
    parts = list(top_level_parts(parse_message(message)))
    report_part = next((p for p in parts if _is_feedback_report(p)), None)
    if report_part is None:
        return None
    single, repeated = _fields(message, report_part)
    original = returned_headers(message, parts)
    original_rcpt_to = tuple(a for a in map(_address, repeated.get("original-rcpt-to", ())) if a)
    recipients, source = _recipients(original_rcpt_to, original, recipient_header)
    return FeedbackReport(
        feedback_type=single.get("feedback-type", "").lower(),
        user_agent=single.get("user-agent"),
        version=single.get("version"),
        original_mail_from=_address(single.get("original-mail-from", "")) or None,
        original_rcpt_to=original_rcpt_to,
        arrival_date=single.get("arrival-date") or single.get("received-date"),
        source_ip=single.get("source-ip"),
        reported_domains=tuple(repeated.get("reported-domain", ())),
        recipients=recipients,
        recipient_source=source,
        original_message_id=header_text(original, "Message-ID") if original else None,
        original_headers=original,
    )


def _is_feedback_report(part: MimePart) -> bool:
    return part.kind is PartKind.LEAF and part.content.media_type.lower() == b"message" \
        and part.content.media_subtype.lower() == b"feedback-report"


def _fields(message: bytes, part: MimePart) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The first value of every field, and every value of the repeatable ones."""
    body = part.body(message)
    decoded = decode_transfer_encoding(body, part.transfer_encoding)
    text = decode_charset(body if decoded is None else decoded, "utf-8")
    single: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    for field in report_fields(text):
        if field is None:
            continue
        name, value = field[0], field[1][:MAX_VALUE]
        single.setdefault(name, value)
        if name in _REPEATABLE and len(repeated.setdefault(name, [])) < MAX_REPEATED:
            repeated[name].append(value)
    return single, repeated


def _address(value: str) -> str:
    """An address of a report field or header; "" when absent, malformed or redacted."""
    address = clean_address(value.strip())
    if not address or "redacted" in address.lower():
        return ""
    return address


def _recipients(original_rcpt_to: tuple[str, ...], original: bytes,
                recipient_header: str) -> tuple[tuple[str, ...], RecipientSource | None]:
    if original_rcpt_to:
        return original_rcpt_to, RecipientSource.ORIGINAL_RCPT_TO
    to = header_text(original, "To") if original else None
    if to:
        found = [
            _address(decode_charset(mailbox + b"@" + host, "utf-8"))
            for _, _, mailbox, host in parse_address_list(to.encode("utf-8"))
            if mailbox is not None and host is not None and mailbox != MISSING_MAILBOX
            and host != MISSING_DOMAIN
        ]
        if len(found) == 1 and found[0]:
            return (found[0],), RecipientSource.TO
    ours = header_text(original, recipient_header) if original and recipient_header else None
    if ours and (address := _address(ours)):
        return (address,), RecipientSource.HEADER
    return (), None


__all__ = [
    "DEFAULT_RECIPIENT_HEADER",
    "FeedbackReport",
    "RecipientSource",
    "parse_arf",
]
