"""Delivery Status Notifications (RFC 3464) for the sender of a message we queued.

A DSN is a multipart/report; report-type=delivery-status (RFC 6522) with three parts:

1. text/plain for people: what happened to which recipient, in the words of the remote server;
2. message/delivery-status for programs: per-message fields (Original-Envelope-Id, Reporting-MTA,
   Arrival-Date) then one block per recipient (Original-Recipient, Final-Recipient, Action,
   Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until);
3. the original: message/rfc822 when the sender asked RET=FULL (RFC 3461 4.3), the report is a
   failure and the message is small enough; otherwise text/rfc822-headers (RFC 6522 4).

Loop prevention — read before calling. A DSN is always sent with the null reverse-path
(MAIL FROM:<>, RFC 3461 6.2 and RFC 5321 4.5.5), so that no DSN is ever sent about a DSN.
Callers must therefore NEVER build a DSN for a message whose envelope sender was null: a bounce
of a bounce is dropped (and logged), not reported. `build_dsn` raises `DsnNotAllowed` if asked.

Which recipients to report is the caller's choice, guided by `wants_dsn` (the NOTIFY rules of
RFC 3461 4.1).

The DSN is 7-bit ASCII, so it travels without 8BITMIME: the human part is quoted-printable, a
UTF-8 address is written as utf-8-addr-xtext (RFC 6533 3), and an original that is not ASCII is
returned as message/global or message/global-headers in base64 (RFC 6532 3.7, RFC 6533 6.3).
The one exception is the To: field when the original sender's address is UTF-8: queue such a
DSN with SMTPUTF8 (the original was an SMTPUTF8 message, so the sender's server supports it).
"""

from __future__ import annotations

import base64
import enum
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import quoprimime

from mailprime.domain.mail import DsnNotify
from mailprime.message.headers import (
    MAX_LINE,
    fold,
    format_date,
    header_section,
    make_message_id,
)

# Above this size RET=FULL still returns only the headers (Postfix's bounce_size_limit is 50 000;
# RFC 3461 4.3 lets the MTA decide). The DSN itself stays small enough for any receiver.
DEFAULT_MAX_FULL_SIZE = 1_000_000
# A remote reply is at most 512 octets per line (RFC 5321 4.5.3.1.5); multi-line replies are
# joined by callers. Cap what we quote so one verbose server cannot bloat the report.
MAX_DIAGNOSTIC = 1000
# RFC 3461 4.4: an ENVID is at most 100 characters.
MAX_ENVID = 100

NULL_REVERSE_PATH = ""
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")  # RFC 3463 2


class DsnNotAllowed(ValueError):
    """Asked for a DSN about a message sent with the null reverse-path (RFC 3461 6.2)."""


class DsnAction(enum.StrEnum):
    """RFC 3464 2.3.3 action-value."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


# RFC 3464 2.3.3/2.3.4: the status class must agree with the action.
_CLASS_FOR_ACTION = {
    DsnAction.FAILED: "5",
    DsnAction.DELAYED: "4",
    DsnAction.DELIVERED: "2",
    DsnAction.RELAYED: "2",
    DsnAction.EXPANDED: "2",
}


def wants_dsn(notify: frozenset[DsnNotify], action: DsnAction) -> bool:
    """RFC 3461 4.1: NEVER means none; no NOTIFY means FAILURE (we also send DELAY then, which
    4.1 allows); otherwise only what was asked. RELAYED/EXPANDED report SUCCESS requests."""
    if DsnNotify.NEVER in notify:
        return False
    if not notify:
        return action in (DsnAction.FAILED, DsnAction.DELAYED)
    wanted = {
        DsnAction.FAILED: DsnNotify.FAILURE,
        DsnAction.DELAYED: DsnNotify.DELAY,
        DsnAction.DELIVERED: DsnNotify.SUCCESS,
        DsnAction.RELAYED: DsnNotify.SUCCESS,
        DsnAction.EXPANDED: DsnNotify.SUCCESS,
    }[action]
    return wanted in notify


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """What happened to one recipient."""

    final_recipient: str  # the address we tried
    action: DsnAction
    status: str  # RFC 3463 enhanced status, e.g. "5.1.1"; its class must match the action
    original_recipient: str | None = None  # ORCPT as received: "rfc822;bob+2Bx@example.com"
    remote_mta: str | None = None  # the host that gave the diagnostic
    diagnostic: str | None = None  # the remote SMTP reply as one line, e.g. "550 5.1.1 No such user"
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # for "delayed"
    # RFC 3464 2.3.6: "smtp" for a remote reply; for our own reasons (connection refused, DNS)
    # an "x-" type such as "x-mailprime".
    diagnostic_type: str = "smtp"

    def __post_init__(self) -> None:
        # Accept the plain string too ("failed"), as the StrEnum's value; reject anything else.
        object.__setattr__(self, "action", DsnAction(self.action))


@dataclass(frozen=True, slots=True)
class _Report:
    """Everything `build_dsn` was given, normalised, handed to the part builders."""

    host: str
    sender: str
    recipients: tuple[DsnRecipient, ...]
    original: bytes
    now: datetime
    arrival_date: datetime | None
    envid: str | None
    ret_full: bool
    queue_id: str | None
    max_full_size: int


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    original_content: bytes,
    recipients: Sequence[DsnRecipient],
    now: datetime,
    arrival_date: datetime | None = None,
    envid: str | None = None,
    ret_full: bool = False,
    queue_id: str | None = None,
    max_full_size: int = DEFAULT_MAX_FULL_SIZE,
    message_id: str | None = None,
) -> bytes:
    """The DSN message, to be queued from the null reverse-path to `original_sender`.

    `reporting_mta` is our host name; `original_content` the queued message (its header section
    at least); `envid` the xtext-decoded ENVID; `ret_full` whether the sender asked RET=FULL —
    the whole original is then returned in a failure report if it is at most `max_full_size`
    octets, otherwise (and without RET=FULL) only its header section. `message_id` overrides
    the fresh Message-ID (tests).

    Raises DsnNotAllowed for a null original sender, ValueError for no recipients or a status
    whose class does not fit its action.
    """
    sender = original_sender.strip().strip("<>").strip()
    if not sender:
        raise DsnNotAllowed("never send a DSN about a message with the null reverse-path (RFC 3461 6.2)")
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient (RFC 3464 2.1)")
    for rcpt in recipients:
        m = _STATUS.match(rcpt.status)
        if m is None:
            raise ValueError(f"invalid enhanced status {rcpt.status!r} (RFC 3463 2)")
        if m.group(1) != _CLASS_FOR_ACTION[rcpt.action]:
            raise ValueError(f"status {rcpt.status} does not fit action {rcpt.action} (RFC 3464 2.3.4)")

    host = _ascii_token(reporting_mta) or "localhost"
    report = _Report(host, sender, tuple(recipients), original_content, now, arrival_date, envid,
                     ret_full, queue_id, max_full_size)
    third_head, third_body = _original_part(report)
    boundary = _boundary([third_body])
    parts = [
        _human_part(report),
        b"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        + _status_part(report),
        # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1): one more keeps
        # the returned original's last line end.
        third_head + b"\r\n" + third_body + b"\r\n",
    ]
    head = "".join([
        fold("From", f'"Mail Delivery System" <MAILER-DAEMON@{host}>'),
        fold("To", f"<{sender}>"),
        fold("Subject", _subject(report)),
        fold("Date", format_date(now)),
        fold("Message-ID", message_id or make_message_id(host)),
        fold("Auto-Submitted", "auto-replied"),  # RFC 3834 5: no automatic reply to this one
        fold("MIME-Version", "1.0"),
        fold("Content-Type", f'multipart/report; report-type=delivery-status; boundary="{boundary}"'),
    ]).encode("utf-8")
    body = b"This is a MIME-encapsulated message.\r\n\r\n"
    for part in parts:
        body += b"--" + boundary.encode() + b"\r\n" + part
        if not part.endswith(b"\r\n"):
            body += b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return head + b"\r\n" + body


# The three parts --------------------------------------------------------------------------------

_INTRO = {
    DsnAction.FAILED: "Your message could not be delivered to the following recipients.\n"
                      "This is a permanent error; the mail system will not try again.",
    DsnAction.DELAYED: "Your message has not yet been delivered to the following recipients.\n"
                       "The mail system will keep trying; you do not need to send it again.",
    DsnAction.DELIVERED: "Your message was delivered to the following recipients.",
    DsnAction.RELAYED: "Your message was passed on to a system that does not report delivery\n"
                       "for the following recipients.",
    DsnAction.EXPANDED: "Your message was delivered to the following list or alias, which\n"
                        "passed it on to its members.",
}


def _subject(report: _Report) -> str:
    actions = {r.action for r in report.recipients}
    if DsnAction.FAILED in actions:
        return "Undelivered Mail Returned to Sender"
    if DsnAction.DELAYED in actions:
        return "Delayed Mail (still being retried)"
    return "Successful Mail Delivery Report"


def _human_part(report: _Report) -> bytes:
    lines = [f"This is the mail system at host {report.host}.", ""]
    if report.queue_id:
        lines += [f"Queue id of your message: {_ascii_token(report.queue_id)}.", ""]
    for action in DsnAction:
        group = [r for r in report.recipients if r.action is action]
        if not group:
            continue
        lines += [_INTRO[action], ""]
        for r in group:
            reason = _one_line(r.diagnostic or "", MAX_DIAGNOSTIC) or f"status {r.status}"
            where = f" (from {_ascii_token(r.remote_mta)})" if r.remote_mta else ""
            lines.append(f"<{_one_line(r.final_recipient, 256)}>{where}: {reason}")
            if r.will_retry_until is not None:
                lines.append(f"    will retry until {format_date(r.will_retry_until)}")
        lines.append("")
    text = "\n".join(lines)
    charset = "us-ascii" if text.isascii() else "utf-8"
    # Quoted-printable keeps the part 7-bit whatever the addresses contain.
    encoded = quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), eol="\r\n")
    head = (f"Content-Description: Notification\r\nContent-Type: text/plain; charset={charset}\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    return head.encode("ascii") + encoded.encode("ascii") + b"\r\n"


def _status_part(report: _Report) -> bytes:
    per_message = ""
    envid = _one_line(report.envid or "", MAX_ENVID, ascii_only=True)
    if envid:
        per_message += fold("Original-Envelope-Id", envid)
    per_message += fold("Reporting-MTA", f"dns; {report.host}")
    if report.arrival_date is not None:
        per_message += fold("Arrival-Date", format_date(report.arrival_date))
    blocks = [per_message]
    for r in report.recipients:
        block = ""
        orcpt = _orcpt(r.original_recipient)
        if orcpt:
            block += fold("Original-Recipient", orcpt)
        block += fold("Final-Recipient", _address_field(r.final_recipient))
        block += fold("Action", r.action.value)
        block += fold("Status", r.status)
        if r.remote_mta:
            block += fold("Remote-MTA", f"dns; {_ascii_token(r.remote_mta)}")
        diagnostic = _one_line(r.diagnostic or "", MAX_DIAGNOSTIC, ascii_only=True)
        if diagnostic:
            kind = _ascii_token(r.diagnostic_type).lower() or "smtp"
            block += fold("Diagnostic-Code", f"{kind}; {diagnostic}")
        if r.last_attempt is not None:
            block += fold("Last-Attempt-Date", format_date(r.last_attempt))
        if r.will_retry_until is not None and r.action is DsnAction.DELAYED:
            block += fold("Will-Retry-Until", format_date(r.will_retry_until))
        blocks.append(block)
    # RFC 3464 2.1: the groups are separated by empty lines.
    return "\r\n".join(blocks).encode("ascii")


def _original_part(report: _Report) -> tuple[bytes, bytes]:
    """(part header lines, part body): the whole original or its header section."""
    full = (
        report.ret_full
        and any(r.action is DsnAction.FAILED for r in report.recipients)
        and len(report.original) <= report.max_full_size
        and _embeddable(report.original)
    )
    if full:
        content = _crlf(report.original)
        if content.isascii():
            return (b"Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n"
                    b"Content-Transfer-Encoding: 7bit\r\n", content)
        # message/rfc822 may not be encoded (RFC 2046 5.2.1); message/global may (RFC 6532 3.7).
        return (b"Content-Description: Undelivered Message\r\nContent-Type: message/global\r\n"
                b"Content-Transfer-Encoding: base64\r\n", _base64(content))
    headers = _crlf(header_section(report.original))
    if headers.isascii():
        return (b"Content-Description: Undelivered Message Headers\r\n"
                b"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n", headers)
    return (b"Content-Description: Undelivered Message Headers\r\n"
            b"Content-Type: message/global-headers\r\nContent-Transfer-Encoding: base64\r\n",
            _base64(headers))


def _base64(data: bytes) -> bytes:
    """RFC 2045 6.8: lines of at most 76 characters."""
    encoded = base64.b64encode(data)
    return b"".join(encoded[i:i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def _embeddable(message: bytes) -> bool:
    """A message can travel as an 8bit MIME part only without NUL and with lines of at most
    998 octets (RFC 2045 2.8); a binary one is returned as headers only."""
    if b"\x00" in message:
        return False
    return all(len(line.rstrip(b"\r")) <= MAX_LINE for line in message.split(b"\n"))


# Field values -----------------------------------------------------------------------------------

def _address_field(address: str) -> str:
    """RFC 3464 2.3.2 "rfc822; addr"; a UTF-8 address as "utf-8; " utf-8-addr-xtext (RFC 6533 3)."""
    addr = address.strip("<> ")
    if addr.isascii() and addr.isprintable():
        return f"rfc822; {addr}"
    return "utf-8; " + "".join(_utf8_addr_xtext(ch) for ch in addr)


def _utf8_addr_xtext(ch: str) -> str:
    # QCHAR (RFC 6533 3): printable ASCII except "+", "=", "\" and space; others as \x{HEX}.
    if "!" <= ch <= "~" and ch not in "+=\\":
        return ch
    return f"\\x{{{ord(ch):X}}}"


def _orcpt(value: str | None) -> str | None:
    """ORCPT "addr-type;xtext" (RFC 3461 4.2) decoded into Original-Recipient's value; None if
    it is malformed, so a bad parameter never breaks the report."""
    if not value:
        return None
    addr_type, sep, xtext = value.partition(";")
    if not sep or not addr_type.strip() or not xtext:
        return None
    decoded = _xtext_decode(xtext.strip())
    if decoded is None or not decoded.isascii() or not decoded.isprintable():
        return None
    return f"{addr_type.strip().lower()}; {decoded}"


def _xtext_decode(text: str) -> str | None:
    """RFC 3461 4: "+" followed by two upper-case hex digits stands for one octet."""
    out = bytearray()
    i = 0
    for _ in range(len(text)):
        if i >= len(text):
            break
        if text[i] == "+":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or any(c not in "0123456789ABCDEF" for c in pair):
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            out += text[i].encode("utf-8")
            i += 1
    return out.decode("utf-8", errors="replace")


def _one_line(text: str, limit: int, *, ascii_only: bool = False) -> str:
    """Collapses whitespace (a multi-line reply becomes one line), drops controls, caps length."""
    words = " ".join(text.split())
    out = "".join(
        ch if ch.isprintable() and (ch.isascii() or not ascii_only) else "?" for ch in words
    )
    return out[:limit]


def _ascii_token(text: str) -> str:
    return "".join(ch if "!" <= ch <= "~" and ch not in "()<>\\;" else "?" for ch in text.strip()[:255])


def _crlf(data: bytes) -> bytes:
    """Bare LF and bare CR become CRLF, as SMTP requires (RFC 5321 2.3.8)."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def _boundary(contents: list[bytes]) -> str:
    """A boundary that occurs in no embedded content (RFC 2046 5.1.1). "=_" cannot occur in
    quoted-printable text, and 96 random bits make a clash with the original unlikely."""
    for _ in range(16):
        candidate = f"=_mailprime_{secrets.token_hex(12)}"
        if not any(b"--" + candidate.encode() in c for c in contents):
            return candidate
    raise RuntimeError("could not find a MIME boundary absent from the message")  # 2^-96 odds


__all__ = [
    "DEFAULT_MAX_FULL_SIZE",
    "NULL_REVERSE_PATH",
    "DsnAction",
    "DsnNotAllowed",
    "DsnRecipient",
    "build_dsn",
    "wants_dsn",
]
