"""The TLS-Required header field (RFC 8689 3): a sender's request that delivery ignore the
recipient's TLS policies (MTA-STS, DANE) rather than fail for want of verified TLS.

The field has one value, "No" (case-insensitive, RFC 8689 3 ABNF `tls-required = "TLS-Required:"
[FWS] "No" CRLF`), so anything else is not a request and is ignored: a sender's policy may only
be relaxed by what the RFC spells out. The header section is read with the limit of
message.headers (RFC 5322 2.2 sets none; ours is MAX_HEADER_SECTION).
"""

from __future__ import annotations

from mailprime.message.header_lexer import parse_fields
from mailprime.message.headers import header_section

FIELD = b"TLS-Required"


def asks_no_tls_policy(message_head: bytes) -> bool:
    """Whether the header section at the start of `message_head` has "TLS-Required: No"."""
    section = header_section(message_head)
    return any(f.is_named(FIELD) and f.value(section).strip(b" \t").lower() == b"no"
               for f in parse_fields(section))


__all__ = ["FIELD", "asks_no_tls_policy"]
