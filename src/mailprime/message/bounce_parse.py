"""Bounces arriving by mail: which recipients failed, why, hard or soft.

`parse_bounce(message)` returns one `FailedRecipient` per recipient that a bounce names as
failed (or delayed), and [] for anything that is not a bounce. It never raises.

Theory of operation
-------------------
A bounce is read in this order; the first reading that names a recipient wins:

1. A DSN (RFC 3464, RFC 6533): a message/delivery-status (or message/global-delivery-status)
   part anywhere outside a returned message. Its body is a per-message group then one group
   per recipient, groups separated by empty lines (RFC 3464 2.1); a repeated Final-Recipient
   also starts a new group, for the MTAs that forget the empty line. Recipients whose Action is
   delivered, relayed or expanded did not fail and are left out. Postfix, Exim 4.8+, Sendmail,
   Courier, Exchange / Office 365, Gmail and Yahoo all send DSNs.
2. The human-readable formats of MTAs that send no DSN (bounce_formats.py): qmail, Exim before
   DSN support, Sendmail without DSN, Gmail's and Yahoo's old notices, Exchange 2003/2007 text.

Each recipient is then classified (bounce_reason.classify_reply) from the most precise status
available: a DSN's Status, unless it is the catch-all X.0.0 and the Diagnostic-Code carries a
more specific one (Exim always writes Status: 5.0.0 and quotes the real reply). A recipient
without a Diagnostic-Code is classified from the lines of the human-readable part that name it.
Then the Action adjusts hard/soft: "delayed" is soft; "failed" with a transient (4.x.x) status
means the reporting MTA gave up retrying, which is EXPIRED and soft whatever the last reply said
(that reply stays in `diagnostic`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from mailprime.message.bounce_formats import (
    BounceFormat,
    Mentions,
    RawFailure,
    clean_address,
    one_line,
    parse_text_formats,
)
from mailprime.message.bounce_reason import (
    BounceReason,
    basic_code,
    classify_reply,
    enhanced_in,
    parse_enhanced,
)
from mailprime.message.dsn import DsnAction
from mailprime.message.header_lexer import first_value, parse_fields
from mailprime.message.headers import header_section
from mailprime.message.imap_fetch import decode_transfer_encoding
from mailprime.message.imap_search import decode_charset, part_text
from mailprime.message.mime_tree import MimePart, PartKind, parse_message

# RFC 3464 and RFC 6522 set no size. The parts of a bounce that matter (the human text, the
# report) come before the returned original, so a bounce is read only this far: bounded work.
MAX_REPORT = 1_000_000
# A DSN names each recipient in a group of a few lines; no bounce reports more recipients than
# an SMTP transaction may carry (RFC 5321 4.5.3.1.8 requires 100; servers allow some thousands).
MAX_RECIPIENTS = 5000
# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; a DSN diagnostic joins several lines.
MAX_DIAGNOSTIC = 2000


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    recipient: str  # the address that failed (a DSN's Final-Recipient)
    action: DsnAction  # FAILED or DELAYED (RFC 3464 2.3.3)
    status: str  # RFC 3463 enhanced status code
    diagnostic: str  # the remote reply or the MTA's words, on one line
    remote_mta: str | None
    reason: BounceReason
    hard: bool
    original_recipient: str | None = None  # a DSN's Original-Recipient (the ORCPT), if any


@dataclass(frozen=True, slots=True)
class BounceReport:
    format: BounceFormat
    recipients: tuple[FailedRecipient, ...]
    original_headers: bytes  # header section of the returned message (b"" if none came back)


def parse_bounce(message: bytes) -> list[FailedRecipient]:
    """The failed (and delayed) recipients a bounce names; [] for anything else."""
    report = parse_bounce_report(message)
    return list(report.recipients) if report is not None else []


def parse_bounce_report(message: bytes) -> BounceReport | None:
    """The bounce with its format and the returned original's header section, or None."""
    message = message[:MAX_REPORT]
    tree = parse_message(message)
    parts = list(top_level_parts(tree))
    human = human_text(message, parts)
    original = returned_headers(message, parts)
    status_part = next((p for p in parts if _is_delivery_status(p)), None)
    if status_part is not None:
        failures, delivered_only = _dsn_failures(message, status_part)
        if failures:
            if not all(f.diagnostic for f in failures):
                failures = _fill_diagnostics(failures, message, tree, human)
            return _report(BounceFormat.DSN, failures, original)
        if delivered_only:
            return None  # a success report (RFC 3461 NOTIFY=SUCCESS) bounces nothing
    found = parse_text_formats(message, tree, human)
    if found is None:
        return None
    fmt, failures, text_original = found
    return _report(fmt, failures, original or text_original)


def _report(fmt: BounceFormat, failures: list[RawFailure], original: bytes) -> BounceReport | None:
    recipients = tuple(classify(f) for f in failures[:MAX_RECIPIENTS])
    return BounceReport(fmt, recipients, original) if recipients else None


def _fill_diagnostics(failures: list[RawFailure], message: bytes, tree: MimePart,
                      human: str) -> list[RawFailure]:
    """DSN recipients without a Diagnostic-Code get what the human-readable part says about
    them: the reply its format quotes (Exchange's "Diagnostic information for administrators",
    Courier's transcript), else the lines that name the address."""
    found = parse_text_formats(message, tree, human)
    stated = {f.recipient.lower(): f for f in found[1]} if found is not None else {}
    mentions = Mentions(human)
    filled = []
    for failure in failures:
        if failure.diagnostic:
            filled.append(failure)
            continue
        text = stated.get(failure.recipient.lower())
        diagnostic = text.diagnostic if text is not None else mentions.about(failure.recipient)
        remote = failure.remote_mta or (text.remote_mta if text is not None else None)
        filled.append(replace(failure, diagnostic=diagnostic, remote_mta=remote))
    return filled


# Classification -------------------------------------------------------------------------------

def classify(failure: RawFailure) -> FailedRecipient:
    """Classifies one failure (see the module docstring for the rules)."""
    text = diagnostic = one_line(failure.diagnostic)
    basic = basic_code(text)
    stated = parse_enhanced(failure.status)
    quoted = enhanced_in(text, basic)
    enhanced = stated
    if quoted is not None and (stated is None or stated.endswith(".0.0")):
        enhanced = quoted
    if enhanced is None and basic is None:
        # Nothing says the class: the Action does (RFC 3464 2.3.4 ties them together).
        basic = 450 if failure.action is DsnAction.DELAYED else 550
    verdict = classify_reply(basic, enhanced, text)
    reason, hard = verdict.reason, verdict.hard
    if failure.action is DsnAction.DELAYED:
        hard = False
    elif verdict.status.startswith("4"):
        reason, hard = BounceReason.EXPIRED, False
    return FailedRecipient(
        recipient=failure.recipient,
        action=failure.action,
        status=verdict.status,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        remote_mta=failure.remote_mta or None,
        reason=reason,
        hard=hard,
        original_recipient=failure.original_recipient,
    )


# DSN ----------------------------------------------------------------------------------------------

_DSN_TYPES = {(b"message", b"delivery-status"), (b"message", b"global-delivery-status")}
_FAILED_ACTIONS = {"failed": DsnAction.FAILED, "delayed": DsnAction.DELAYED}
_SUCCESS_ACTIONS = {"delivered", "relayed", "expanded"}


def _is_delivery_status(part: MimePart) -> bool:
    content = part.content
    return (content.media_type.lower(), content.media_subtype.lower()) in _DSN_TYPES


def _dsn_failures(message: bytes, part: MimePart) -> tuple[list[RawFailure], bool]:
    """The failed/delayed recipients of a delivery-status part, and whether it reported only
    successes."""
    body = part.body(message)
    decoded = decode_transfer_encoding(body, part.transfer_encoding)
    text = decode_charset(body if decoded is None else decoded, "utf-8")
    failures: list[RawFailure] = []
    successes = 0
    for group in dsn_groups(text):
        final = group.get("final-recipient") or group.get("original-recipient")
        if not final:
            continue
        action = group.get("action", "").strip().lower().split(" ")[0]
        status = group.get("status", "").strip().split(" ")[0]
        if action in _SUCCESS_ACTIONS or (not action and status.startswith("2")):
            successes += 1
            continue
        if action not in _FAILED_ACTIONS:
            # No or unknown Action: the status class says (RFC 3464 2.3.4).
            action = "delayed" if status.startswith("4") else "failed"
        recipient = dsn_address(final)
        if not recipient:
            continue
        original = group.get("original-recipient")
        failures.append(RawFailure(
            recipient=recipient,
            diagnostic=_after_type(group.get("diagnostic-code", "")),
            action=_FAILED_ACTIONS[action],
            status=status or None,
            remote_mta=_host(_after_type(group.get("remote-mta", ""))),
            original_recipient=dsn_address(original) if original else None,
        ))
    return failures, successes > 0 and not failures


_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


def report_fields(text: str) -> Iterator[tuple[str, str] | None]:
    """The fields of a report body (message/delivery-status, message/feedback-report): each as
    (lower-cased name, unfolded value), and None for each empty line that ends a group. Lines
    that are not fields are skipped; a field's continuation lines are joined with one space."""
    pending: tuple[str, list[str]] | None = None
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and raw.strip():
            if pending is not None and sum(map(len, pending[1])) < MAX_DIAGNOSTIC:
                pending[1].append(raw.strip())
            continue
        if pending is not None:
            yield pending[0], " ".join(pending[1])
            pending = None
        if not raw.strip():
            yield None
            continue
        m = _FIELD.match(raw)
        if m is not None:
            pending = (m.group(1).lower(), [m.group(2).strip()])
    if pending is not None:
        yield pending[0], " ".join(pending[1])


def dsn_groups(text: str) -> Iterator[dict[str, str]]:
    """The field groups of a delivery-status body (RFC 3464 2.1), names lower-cased. The first
    of a repeated field wins, except that a repeated Final-Recipient starts a new group, for
    MTAs that leave out the empty line between recipients."""
    group: dict[str, str] = {}
    for field in report_fields(text):
        if field is None or (field[0] == "final-recipient" and "final-recipient" in group):
            if group:
                yield group
            group = {}
        if field is not None:
            group.setdefault(field[0], field[1])
    if group:
        yield group


def _after_type(value: str) -> str:
    """The value after an RFC 3464 type ("smtp; 550 ..." -> "550 ..."; "dns; mx" -> "mx")."""
    kind, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][A-Za-z0-9-]*\s*", kind):
        return rest.strip()
    return value.strip()


def _host(value: str) -> str | None:
    """The host name of a Remote-MTA value ("mx.example.net. (192.0.2.25, the server for the
    domain example.net.)" -> "mx.example.net")."""
    return value.split(" ", maxsplit=1)[0].rstrip(".") or None


_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def dsn_address(value: str) -> str:
    """The address of an RFC 3464 2.3.2 field: "rfc822; a@b" -> "a@b"; an RFC 6533 3
    "utf-8;" address has its \\x{HEX} escapes decoded."""
    kind, sep, rest = value.partition(";")
    if not sep:
        kind, rest = "rfc822", value
    address = rest.strip().strip("<>").strip()
    if kind.strip().lower() == "utf-8":
        address = _UTF8_ESCAPE.sub(_chr, address)
    return clean_address(address)


def _chr(m: re.Match[str]) -> str:
    code = int(m.group(1), 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


# MIME helpers shared with bounce_formats and arf --------------------------------------------------

def top_level_parts(tree: MimePart) -> Iterator[MimePart]:
    """Every part of the report itself, depth first: never the inside of a returned message."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if node.kind is PartKind.MULTIPART:
            stack.extend(reversed(node.parts))


def human_text(message: bytes, parts: list[MimePart]) -> str:
    """The first text/plain part (the whole body of a message that is not multipart), decoded,
    with LF line ends."""
    for part in parts:
        if part.kind is PartKind.LEAF and part.content.media_type.lower() == b"text" \
                and part.content.media_subtype.lower() == b"plain":
            return part_text(message, part).replace("\r\n", "\n").replace("\r", "\n")
    return ""


_HEADERS_TYPES = {(b"text", b"rfc822-headers"), (b"message", b"global-headers")}


def returned_headers(message: bytes, parts: list[MimePart]) -> bytes:
    """The header section of the message a report returns (message/rfc822, message/global or
    text/rfc822-headers, RFC 6522 4), or b""."""
    for part in parts:
        if part.kind is PartKind.MESSAGE and part.parts:
            inner = part.parts[0]
            return message[inner.header_start:inner.body_start]
        kind = (part.content.media_type.lower(), part.content.media_subtype.lower())
        if part.kind is PartKind.LEAF and (kind in _HEADERS_TYPES or kind == (b"message", b"rfc822")):
            # A leaf message/rfc822 is one the tree did not open (an encoded one, RFC 6532 3.7).
            body = part.body(message)
            decoded = decode_transfer_encoding(body, part.transfer_encoding)
            return header_section(body if decoded is None else decoded)
    return b""


def header_text(headers: bytes, name: str) -> str | None:
    """The unfolded value of the first `name` field of a header section, as text."""
    if not name.isascii():
        return None  # a field name is printable ASCII (RFC 5322 3.6.8): no such field
    value = first_value(headers, parse_fields(headers), name.encode("ascii"))
    return None if value is None else decode_charset(value, "utf-8").strip()


__all__ = [
    "MAX_REPORT",
    "BounceFormat",
    "BounceReport",
    "FailedRecipient",
    "RawFailure",
    "classify",
    "clean_address",
    "dsn_address",
    "dsn_groups",
    "header_text",
    "human_text",
    "one_line",
    "parse_bounce",
    "parse_bounce_report",
    "report_fields",
    "returned_headers",
    "top_level_parts",
]
