"""Matchers for the content keys of IMAP SEARCH (RFC 3501 6.4.4, RFC 9051 6.4.4).

The session evaluates the search program; these pure functions answer, for one message:

* `header_matches(header, name, needle)`: HEADER name needle, and FROM/TO/CC/BCC/SUBJECT (the
  same test on those fields, see SEARCH_HEADER_KEYS): some field called `name` contains
  `needle`; an empty needle matches any message that has the field (RFC 3501 6.4.4). The value
  is unfolded and decoded first: RFC 2047 encoded-words, then UTF-8 (RFC 6532) or Latin-1.
* `body_contains(message, tree, needle)`: BODY, in the text of the message body: each text/*
  (and textual message/*) part with its transfer encoding undone and its charset decoded, as
  Dovecot decodes. Attachments of other types (images, archives) are not searched.
* `text_contains(message, tree, needle)`: TEXT, in the header (decoded as above), the headers
  of attached messages, or the body.
* `sent_date(header)`: the date of the Date field for SENTBEFORE/SENTON/SENTSINCE, in the
  field's own time zone since RFC 3501 6.4.4 disregards time and timezone; None when absent
  or unreadable.

Matching is substring matching with Unicode case folding (str.casefold), which RFC 9051 6.4.4
allows ("case-insensitive" with the server's comparator). None of these raise on bad input.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import re
from datetime import date

from mailprime.message.header_lexer import first_value, named_fields
from mailprime.message.imap_fetch import decode_base64, decode_transfer_encoding
from mailprime.message.mime_tree import MimePart, PartKind, walk

# The SEARCH keys that are header tests, and the field each one reads (RFC 3501 6.4.4).
SEARCH_HEADER_KEYS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}

# RFC 5322 2.2.3: a line break followed by WSP is a fold.
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
# RFC 2047 2: =?charset?encoding?encoded-text?= (charset may carry an RFC 2231 5 "*lang").
_ENCODED_WORD = re.compile(rb"=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=")
_ASCII_NAMES = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "646", "iso646-us"})
# Message types whose body is text worth searching (RFC 3464, RFC 8098, RFC 5965...).
_TEXTUAL_MESSAGE_SUBTYPES = frozenset({b"delivery-status", b"disposition-notification", b"feedback-report",
                                       b"global-headers", b"global-delivery-status", b"rfc822-headers"})


def header_matches(header: bytes, field_name: str, needle: str) -> bool:
    """True if a field called `field_name` (case-insensitive) in the header section `header`
    contains `needle`, or exists when `needle` is empty."""
    folded = needle.casefold()
    for field in named_fields(header, (field_name.encode("utf-8", "replace"),)):
        if not folded or folded in decode_header_value(field.value(header)).casefold():
            return True
    return False


def body_contains(message: bytes, tree: MimePart, needle: str) -> bool:
    """BODY: `needle` occurs in the decoded text of a textual body part. An empty needle matches."""
    folded = needle.casefold()
    if not folded:
        return True
    # One part at a time: a match in the first part spares decoding the others.
    return any(folded in part_text(message, part).casefold() for part in walk(tree) if _is_textual(part))


def text_contains(message: bytes, tree: MimePart, needle: str) -> bool:
    """TEXT: `needle` occurs in the header, in the header of an attached message, or in the body."""
    folded = needle.casefold()
    if not folded:
        return True
    for part in walk(tree):
        if (part is tree or part.kind is PartKind.MESSAGE) and folded in header_text(
                message, part if part is tree else part.parts[0]).casefold():
            return True
    return body_contains(message, tree, needle)


def sent_date(header: bytes) -> date | None:
    """The calendar date written in the first Date field (RFC 5322 3.3), or None."""
    value = first_value(header, named_fields(header, (b"date",)), b"date")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        return date(parsed[0], parsed[1], parsed[2]) if parsed else None
    except Exception:  # the stdlib date parser has raised on hostile input before
        return None


# Text extraction --------------------------------------------------------------------------------

def header_text(message: bytes, part: MimePart) -> str:
    """The part's header section for people: folds removed, encoded-words decoded, one field per
    line. Decoded as one string rather than field by field, so that a header of millions of
    fields costs regex time, not Python time."""
    return decode_header_value(_FOLD.sub(b"", part.header(message)))


def body_texts(message: bytes, tree: MimePart) -> list[str]:
    """The decoded text of every textual leaf part, in order."""
    return [part_text(message, part) for part in walk(tree) if _is_textual(part)]


def _is_textual(part: MimePart) -> bool:
    if part.kind is not PartKind.LEAF:
        return False
    media_type = part.content.media_type.lower()
    return media_type == b"text" or (
        media_type == b"message" and part.content.media_subtype.lower() in _TEXTUAL_MESSAGE_SUBTYPES)


def part_text(message: bytes, part: MimePart) -> str:
    """The part's body, transfer encoding undone (kept as is when unknown), charset decoded."""
    body = part.body(message)
    decoded = decode_transfer_encoding(body, part.transfer_encoding)
    return decode_charset(body if decoded is None else decoded, part.charset)


def decode_charset(data: bytes, charset: str | None) -> str:
    """`data` in `charset`; undeclared, ASCII (often mislabelled) or unknown charsets are read as
    UTF-8 when valid, else Latin-1. Undecodable octets become U+FFFD."""
    name = (charset or "").strip().lower()[:64]
    if name and name not in _ASCII_NAMES:
        try:
            info = codecs.lookup(name)
        except LookupError:
            info = None
        # Some codecs ("rot13", "base64", "zlib") are not text encodings at all.
        if info is not None and getattr(info, "_is_text_encoding", True):
            try:
                return data.decode(info.name, "replace")
            except Exception:  # noqa: S110 - a codec failing on hostile input: fall back
                pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_header_value(raw: bytes) -> str:
    """An unstructured header value for people: RFC 2047 encoded-words decoded (adjacent ones
    joined, the whitespace between them dropped, RFC 2047 6.2), other octets as UTF-8 or
    Latin-1. Malformed encoded-words stay as written."""
    out: list[str] = []
    pending: bytes = b""
    pending_charset = ""
    pos = 0
    for found in _ENCODED_WORD.finditer(raw):
        between = raw[pos:found.start()]
        if between.strip(b" \t\r\n") or not pending_charset:
            out.append(decode_charset(pending, pending_charset) if pending_charset else "")
            pending, pending_charset = b"", ""
            out.append(decode_charset(between, None))
        charset = found.group(1).split(b"*")[0].decode("ascii", "replace").lower() or "us-ascii"
        text = found.group(3)
        data = decode_base64(text) if found.group(2) in b"bB" else binascii.a2b_qp(text, header=True)
        if pending_charset and charset != pending_charset:
            out.append(decode_charset(pending, pending_charset))
            pending = b""
        pending += data
        pending_charset = charset
        pos = found.end()
    if pending_charset:
        out.append(decode_charset(pending, pending_charset))
    out.append(decode_charset(raw[pos:], None))
    return "".join(out)


__all__ = [
    "SEARCH_HEADER_KEYS",
    "body_contains",
    "body_texts",
    "decode_charset",
    "decode_header_value",
    "header_matches",
    "header_text",
    "part_text",
    "sent_date",
    "text_contains",
]
