"""Header helpers: the Received trace field, missing Message-ID/Date, folding and dates.

Pure functions over bytes and str; no parsing of message bodies. Untrusted text that ends up in a
header (the client's HELO argument, a reverse-DNS name) is sanitised here so that it can never
inject a line break or unbalance a comment.
"""

from __future__ import annotations

import enum
import ipaddress
import secrets
from datetime import datetime
from email.utils import format_datetime

# RFC 5322 2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998 (without CRLF).
FOLD_WIDTH = 78
MAX_LINE = 998
# We read at most this much of a message to find its header section. RFC 5322 sets no limit;
# this is Postfix's header_size_limit, beyond which it also stops looking at headers.
MAX_HEADER_SECTION = 102_400
# RFC 5321 4.5.3.1.2: a domain is at most 255 octets; a HELO argument is one.
MAX_HELO = 255


class WithProtocol(enum.StrEnum):
    """The "with" keyword of a Received field: RFC 5321 4.4 (SMTP, ESMTP), RFC 3848 (A: AUTH,
    S: TLS, SA: both) and RFC 6531 3.7.3 (UTF8SMTP family, for SMTPUTF8 transactions)."""

    SMTP = "SMTP"
    ESMTP = "ESMTP"
    ESMTPA = "ESMTPA"
    ESMTPS = "ESMTPS"
    ESMTPSA = "ESMTPSA"
    UTF8SMTP = "UTF8SMTP"
    UTF8SMTPA = "UTF8SMTPA"
    UTF8SMTPS = "UTF8SMTPS"
    UTF8SMTPSA = "UTF8SMTPSA"
    LMTP = "LMTP"
    LMTPA = "LMTPA"
    LMTPS = "LMTPS"
    LMTPSA = "LMTPSA"
    UTF8LMTP = "UTF8LMTP"
    UTF8LMTPA = "UTF8LMTPA"
    UTF8LMTPS = "UTF8LMTPS"
    UTF8LMTPSA = "UTF8LMTPSA"
    HTTP = "HTTP"  # RFC 5321 4.4 leaves the protocol open; used for mail submitted by the API


def with_protocol(*, extended: bool, tls: bool, authenticated: bool, utf8: bool = False,
                  lmtp: bool = False) -> WithProtocol:
    """Chooses the keyword for a transaction.

    TLS and AUTH keywords exist only in the ESMTP family (RFC 3848), so a client that said HELO
    over implicit TLS (RFC 8314) is reported as ESMTPS: the keyword describes what protected the
    transaction, which matters more to a reader than the greeting verb. SMTPUTF8 requires EHLO.
    """
    if not (extended or tls or authenticated or utf8 or lmtp):
        return WithProtocol.SMTP
    base = "LMTP" if lmtp else "SMTP"
    prefix = "UTF8" if utf8 else ("" if lmtp else "E")
    suffix = ("S" if tls else "") + ("A" if authenticated else "")
    return WithProtocol(prefix + base + suffix)


def build_received(
    *,
    helo: str,
    client_ip: str,
    by_host: str,
    queue_id: str,
    when: datetime,
    client_name: str | None = None,
    recipient: str | None = None,
    esmtp: bool = True,
    tls: bool = False,
    authenticated: bool = False,
    smtputf8: bool = False,
    tls_cipher: str | None = None,
    protocol: WithProtocol | None = None,
) -> bytes:
    """A folded Received field (RFC 5321 4.4) ending in CRLF, e.g.

    Received: from client.example (mail.client.example [192.0.2.1])
    \tby mx.example.com (mailprime) with ESMTPS id 0ABC
    \tfor <bob@example.com>; Tue, 07 Jan 2025 10:00:00 +0000

    `helo` is the client's HELO/EHLO argument and `client_name` its verified reverse-DNS name
    (None: unknown); both are untrusted and sanitised. Give `recipient` only when the message
    has exactly one: naming one of several recipients would disclose Bcc addresses.
    `protocol` overrides the keyword chosen from esmtp/tls/authenticated/smtputf8.
    `tls_cipher` adds the RFC 8314 4.3 "tls" clause (an IANA cipher suite name).
    """
    keyword = protocol or with_protocol(extended=esmtp, tls=tls, authenticated=authenticated,
                                        utf8=smtputf8)
    helo_text = _helo_text(helo)
    rdns = _sanitize_token(client_name or "", MAX_HELO) or "unknown"
    # Folded by clause, as Postfix and Sendmail do, so a reader finds each on its own line.
    # Every token is capped, so no line can reach the 998-octet limit of RFC 5322 2.1.1.
    lines = [
        f"Received: from {helo_text} ({rdns} {_address_literal(client_ip)})",
        f"\tby {_sanitize_token(by_host, MAX_HELO) or 'localhost'} (mailprime)"
        f" with {keyword.value} id {_sanitize_token(queue_id, 64)}",
    ]
    last = ""
    if recipient:
        # An SMTPUTF8 recipient may be UTF-8; the message then allows UTF-8 headers (RFC 6532).
        last = f"for <{_sanitize_token(recipient.strip('<>'), 256, utf8=True)}>"
    if tls_cipher:
        last = f"{last} tls {_sanitize_token(tls_cipher, 64)}".lstrip()
    if last:
        lines.append(f"\t{last}; {format_date(when)}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{format_date(when)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _helo_text(helo: str) -> str:
    """The HELO argument as shown: a valid address literal (RFC 5321 4.1.4 allows one) keeps
    its brackets, normalised; anything else is sanitised."""
    text = helo.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        inner = inner[5:] if inner.lower().startswith("ipv6:") else inner
        literal = _address_literal(inner)
        if literal != "[unknown]":
            return literal
    return _sanitize_token(text, MAX_HELO) or "unknown"


def _address_literal(ip: str) -> str:
    """RFC 5321 4.1.3: "[192.0.2.1]" or "[IPv6:2001:db8::1]"."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return "[unknown]"
    return f"[IPv6:{addr}]" if addr.version == 6 else f"[{addr}]"


def _sanitize_token(text: str, limit: int, *, utf8: bool = False) -> str:
    """Printable ASCII minus whitespace, parentheses, brackets, angle brackets, backslash and
    ';' (and, with `utf8`, printable non-ASCII); anything else becomes '?'. Keeps the field one
    line and its comments balanced whatever a client sends."""
    out = [
        ch if ("!" <= ch <= "~" and ch not in "()[]<>\\;") or (utf8 and ord(ch) > 127 and ch.isprintable())
        else "?"
        for ch in text[:limit]
    ]
    return "".join(out)


# Dates and ids --------------------------------------------------------------------------------

def format_date(when: datetime) -> str:
    """RFC 5322 3.3 date-time, e.g. "Tue, 07 Jan 2025 10:00:00 +0000". Needs an aware datetime."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("format_date needs a timezone-aware datetime")
    return format_datetime(when)


def make_message_id(host: str) -> str:
    """A fresh msg-id (RFC 5322 3.6.4): 128 random bits at our host name."""
    # dot-atom-text only (RFC 5322 3.6.4 id-right), whatever the configured host name holds.
    right = "".join(ch if ch.isascii() and (ch.isalnum() or ch in ".-") else "?" for ch in host[:MAX_HELO])
    right = right or "localhost"
    return f"<{secrets.token_hex(16)}@{right}>"


# Folding --------------------------------------------------------------------------------------

def fold(name: str, value: str, width: int = FOLD_WIDTH) -> str:
    """"Name: value" with CRLF inserted before whitespace so lines stay within `width` where a
    space allows it (RFC 5322 2.2.3). Removing every CRLF gives back "Name: value" exactly.
    A single word longer than MAX_LINE cannot be folded and is left whole. Raises ValueError if
    name or value contains CR or LF (a header injection)."""
    if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
        raise ValueError("header name and value must not contain CR or LF")
    if not name or ":" in name:
        raise ValueError(f"invalid header name {name!r}")
    text = f"{name}: {value}"
    if len(text) <= width:  # the usual field: one line, no search for fold points
        return text + "\r\n"
    lines: list[str] = []
    # The first fold point may not come before "Name: " so a line never holds only the name.
    start = len(name) + 2
    for _ in range(len(text)):  # each round removes at least one character
        if len(text) <= width:
            break
        first_word = next((i for i, ch in enumerate(text) if ch not in " \t"), len(text))
        lo = max(start, first_word + 1)
        cut = max(text.rfind(" ", lo, width + 1), text.rfind("\t", lo, width + 1))
        if cut < 0:
            # No whitespace within the width: fold at the next whitespace instead.
            after = max(width + 1, lo)
            spaces = [i for i in (text.find(" ", after), text.find("\t", after)) if i >= 0]
            cut = min(spaces) if spaces else -1
        if cut < 0 or not text[cut:].strip(" \t"):
            break  # nothing to fold at, or only trailing whitespace would move to a new line
        lines.append(text[:cut])
        text = text[cut:]
        start = 1
    lines.append(text)
    return "\r\n".join(lines) + "\r\n"


# Header sections ------------------------------------------------------------------------------

def header_section(message: bytes, limit: int = MAX_HEADER_SECTION) -> bytes:
    """The header section of `message`, with its line ends, without the empty line that ends it.

    Looks at no more than `limit` octets: a longer header section is cut at the last whole line
    inside the limit. Tolerates bare LF line ends. A message with no empty line is all header.
    """
    head = message[: limit + 2]
    if head.startswith((b"\r\n", b"\n")):
        return b""
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    if ends:
        end = min(ends)
        section = head[: end + (2 if head[end:end + 4] == b"\r\n\r\n" else 1)]
        if len(section) <= limit:
            return section
    if len(message) <= limit:
        return message
    cut = message.rfind(b"\n", 0, limit)
    return message[: cut + 1] if cut >= 0 else b""


def header_names(section: bytes) -> frozenset[str]:
    """Lower-cased field names in a header section (continuation lines and junk skipped)."""
    names: set[str] = set()
    for line in section.split(b"\n"):
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, sep, _ = line.partition(b":")
        name = name.rstrip(b" \t")  # RFC 822 obs-optional allows WSP before the colon
        if sep and name and all(33 <= c <= 126 for c in name):
            names.add(name.decode("ascii").lower())
    return frozenset(names)


def missing_header_lines(message: bytes, *, hostname: str, when: datetime,
                         message_id: str | None = None) -> bytes:
    """The lines to add so the message has a Message-ID and a Date (RFC 5322 3.6: Date is
    required, Message-ID SHOULD be present; RFC 6409 8.2/8.3 lets a submission server add both).
    Empty when both are present. `message_id` overrides the fresh id (for tests)."""
    names = header_names(header_section(message))
    out = ""
    if "message-id" not in names:
        out += fold("Message-ID", message_id or make_message_id(hostname))
    if "date" not in names:
        out += fold("Date", format_date(when))
    return out.encode("ascii")


__all__ = [
    "FOLD_WIDTH",
    "MAX_HEADER_SECTION",
    "MAX_LINE",
    "WithProtocol",
    "build_received",
    "fold",
    "format_date",
    "header_names",
    "header_section",
    "make_message_id",
    "missing_header_lines",
    "with_protocol",
]
