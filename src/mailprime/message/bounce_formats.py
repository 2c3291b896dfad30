"""Bounces without a DSN: the human-readable notices of qmail, Exim, Sendmail, Gmail, Yahoo,
Courier and Exchange, read into `RawFailure`s for bounce_parse to classify.

Theory of operation
-------------------
Each format is recognised by a sentence its MTA writes at the start of the notice (qmail-send's
"Hi. This is the qmail-send program", Exim's "This message was created automatically by mail
delivery software." ...) and read from there to the line that introduces the returned message
("--- Below this line is a copy of the message.", "------ This is a copy of the message ...").
No marker, no reading: a message that merely mentions an address and an SMTP code is not a
bounce. Within that span each format lists failed recipients its own way:

- qmail, Yahoo and Courier: a line "<address>:" followed by the lines about it; the remote
  reply follows "Remote host said:" (qmail, Yahoo) or "<<< " (Courier's transcript).
- Exim: the address indented by two spaces, the lines about it by four or more; the reply
  follows "SMTP error from remote mail server after ...:". X-Failed-Recipients is the fallback.
- Sendmail: addresses under "----- The following addresses had permanent fatal errors -----"
  (transient: delayed), each with "(reason: ...)"; else the transcript's lines naming it.
- Gmail (before its DSNs): indented addresses under "Delivery to the following recipient(s)
  failed permanently:" (or "has been delayed"), one shared "Technical details" paragraph.
- Exchange 2003/2007: "The following recipient(s) cannot be reached:" with the address and
  indented reason lines ending in "<host #5.1.1>"; or the "Diagnostic information for
  administrators:" section of newer NDRs, an address line then "#550 5.1.1 ... ##" or
  "Remote Server returned '550 ...'".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailprime.message.dsn import DsnAction
from mailprime.message.header_lexer import first_value
from mailprime.message.headers import header_section
from mailprime.message.imap_search import decode_charset
from mailprime.message.mime_tree import MimePart

# RFC 5321 4.5.3.1.1-3: local part 64, domain 255; with the "@" a path is at most 256 octets.
MAX_ADDRESS = 320
# No RFC describes these notices; each lists a recipient in a few lines, so read at most this
# many lines of one (bounce_parse.MAX_REPORT bounds the octets).
MAX_NOTICE_LINES = 20_000


class BounceFormat(enum.StrEnum):
    DSN = "dsn"
    QMAIL = "qmail"
    EXIM = "exim"
    SENDMAIL = "sendmail"
    GMAIL = "gmail"
    YAHOO = "yahoo"
    COURIER = "courier"
    EXCHANGE = "exchange"


@dataclass(frozen=True, slots=True)
class RawFailure:
    """One failed recipient as a format states it, before classification."""

    recipient: str
    diagnostic: str
    action: DsnAction = DsnAction.FAILED  # or DELAYED (RFC 3464 2.3.3)
    status: str | None = None  # a Status field, if the format has one
    remote_mta: str | None = None
    original_recipient: str | None = None


def clean_address(address: str) -> str:
    """An address as printed in a notice: brackets, quotes of the whole and trailing punctuation
    removed; "" if it is not an address (no "@", white space or control characters inside)."""
    address = address.strip().strip("<>\"'").rstrip(".,;:)").strip().strip("<>")
    if "@" not in address or len(address) > MAX_ADDRESS:
        return ""
    if any(ch.isspace() or not ch.isprintable() or ch in "<>" for ch in address):
        return ""
    return address


def one_line(text: str) -> str:
    """White space runs (line breaks included) made one space; control characters dropped."""
    return " ".join("".join(ch for ch in text if ch.isprintable() or ch.isspace()).split())


_ADDRESS_TOKEN = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


class Mentions:
    """Where a human-readable notice names each address, indexed once (a notice about thousands
    of recipients is then read once, not once per recipient)."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")[:MAX_NOTICE_LINES]
        self._first: dict[str, int] = {}
        for i, line in enumerate(self._lines):
            for token in _ADDRESS_TOKEN.findall(line):
                self._first.setdefault(token.rstrip(".").lower(), i)

    def about(self, address: str, lines_after: int = 6) -> str:
        """The first line naming `address` and the non-empty lines that follow it, up to the
        next empty line; "" if the notice does not name it."""
        i = self._first.get(address.lower())
        if i is None:
            return ""
        taken = [self._lines[i]]
        for follow in self._lines[i + 1:i + 1 + lines_after]:
            if not follow.strip():
                break
            taken.append(follow)
        return "\n".join(taken)


Found = tuple[BounceFormat, list[RawFailure], bytes]


def parse_text_formats(message: bytes, tree: MimePart, human: str) -> Found | None:
    """The first format whose marker appears in `human` (the notice's text) and that names at
    least one recipient: (format, failures, the returned original's header section)."""
    lines = human.split("\n")[:MAX_NOTICE_LINES]
    for reader in _READERS:
        found = reader(lines, message, tree)
        if found is not None and found[1]:
            return found
    return None


def _find(lines: Sequence[str], pattern: re.Pattern[str], start: int = 0) -> int:
    for i in range(start, len(lines)):
        if pattern.search(lines[i]):
            return i
    return -1


def _original_after(lines: Sequence[str], index: int) -> bytes:
    """The header section of the message copied after line `index`."""
    if index < 0:
        return b""
    rest = "\n".join(lines[index + 1:]).lstrip("\n")
    return header_section(rest.encode("utf-8", "replace"))


def _span(lines: Sequence[str], start: re.Pattern[str], end: re.Pattern[str]) -> tuple[int, int, int]:
    """(marker line, first line after the notice, end marker line or -1)."""
    first = _find(lines, start)
    if first < 0:
        return -1, -1, -1
    last = _find(lines, end, first + 1)
    return first, (last if last >= 0 else len(lines)), last


# qmail, Yahoo, Courier: "<address>:" blocks ---------------------------------------------------------

_ANGLE_RECORD = re.compile(r"^\s*(?:To\s*:\s*)?<([^<>\s]+@[^<>\s]+)>\s*:\s*$")
_QMAIL_START = re.compile(r"^Hi\. This is the qmail|^This is the qmail-send program")
_YAHOO_START = re.compile(r"^Sorry, we were unable to deliver your message")
_COURIER_START = re.compile(r"Your message to the following recipients cannot be delivered"
                            r"|UNDELIVERABLE MAIL|DELAYS IN DELIVERING YOUR MESSAGE")
_COPY_END = re.compile(r"^--- (Below this line is|Enclosed are the original)")
_QMAIL_HOST = re.compile(r"^(\S+) does not like recipient\.|Connected to (\S+) but"
                         r"|Giving up on (\S+?)\.?$|remote host (\S+) said:")
_COURIER_HOST = re.compile(r"^\s*([A-Za-z0-9][\w.-]*) \[[0-9A-Fa-f.:]+\]:\s*$")


def _angle_blocks(lines: Sequence[str], start: int, end: int) -> list[tuple[str, list[str]]]:
    blocks: list[tuple[str, list[str]]] = []
    for line in lines[start:end]:
        m = _ANGLE_RECORD.match(line)
        if m is not None:
            address = clean_address(m.group(1))
            if address:
                blocks.append((address, []))
                continue
        if blocks and line.strip():
            blocks[-1][1].append(line.strip())
    return blocks


def _remote_said(block: list[str]) -> str | None:
    """The reply after "Remote host said:" (qmail, Yahoo), to the end of the block."""
    for i, line in enumerate(block):
        _, sep, rest = line.partition("Remote host said:")
        if sep:
            tail = [rest.strip()] + [b for b in block[i + 1:] if not b.startswith("Giving up on ")]
            return " ".join(t for t in tail if t)
    return None


def _transcript_reply(block: list[str]) -> str | None:
    """The server's lines of a Courier transcript ("<<< 550 ...")."""
    said = [line[4:].strip() for line in block if line.startswith("<<< ")]
    return " ".join(said) if said else None


def _read_angle_blocks(lines: Sequence[str], _message: bytes, _tree: MimePart) -> Found | None:
    for fmt, start in ((BounceFormat.QMAIL, _QMAIL_START), (BounceFormat.YAHOO, _YAHOO_START),
                       (BounceFormat.COURIER, _COURIER_START)):
        first, stop, end = _span(lines, start, _COPY_END)
        if first < 0:
            continue
        delayed = fmt is BounceFormat.COURIER and "DELAYS IN DELIVERING" in lines[first]
        action = DsnAction.DELAYED if delayed else DsnAction.FAILED
        failures = []
        for address, block in _angle_blocks(lines, first + 1, stop):
            diagnostic = _remote_said(block) or _transcript_reply(block) or " ".join(block)
            host = None
            for line in block:
                m = _QMAIL_HOST.search(line) or _COURIER_HOST.match(line)
                if m is not None:
                    host = next(g for g in m.groups() if g)
                    break
            failures.append(RawFailure(address, diagnostic, action, remote_mta=host))
        return fmt, failures, _original_after(lines, end)
    return None


# Exim without DSN ---------------------------------------------------------------------------------

_EXIM_START = re.compile(r"^This message was created automatically by mail delivery software\.")
_EXIM_END = re.compile(r"^-{6} This is a copy of (the|your) message")
_EXIM_RECORD = re.compile(r"^ {2}(?! )(\S+@[^\s:]+)(?::\s*(.*))?$")
_EXIM_REPLY = re.compile(r"SMTP error from remote (?:mail server|mailer) after [^:]*(?::<[^>]*>)?:\s*(.*)$")
_EXIM_HOST = re.compile(r"host (\S+) \[[0-9A-Fa-f.:]+\]")


def _read_exim(lines: Sequence[str], message: bytes, tree: MimePart) -> Found | None:
    first, stop, end = _span(lines, _EXIM_START, _EXIM_END)
    if first < 0:
        return None
    notice = " ".join(lines[first:min(stop, first + 8)])
    action = DsnAction.DELAYED if "has not yet been delivered" in notice else DsnAction.FAILED
    records: list[tuple[str, list[str]]] = []
    for line in lines[first + 1:stop]:
        m = _EXIM_RECORD.match(line)
        if m is not None and clean_address(m.group(1)):
            records.append((clean_address(m.group(1)), [m.group(2) or ""]))
        elif records and line.startswith("    "):
            records[-1][1].append(line.strip())
        elif records and line.strip():
            break  # the paragraph after the list
    failures = [_exim_failure(address, block, action) for address, block in records]
    if not failures:
        # X-Failed-Recipients (Exim's own header) lists them when the body does not.
        value = first_value(message, tree.header_fields(message), b"x-failed-recipients")
        listed = decode_charset(value, "utf-8").split(",") if value else []
        failures = [RawFailure(a, "", action) for a in map(clean_address, listed) if a]
    return BounceFormat.EXIM, failures, _original_after(lines, end)


def _exim_failure(address: str, block: list[str], action: DsnAction) -> RawFailure:
    host = None
    reply: list[str] | None = None
    for line in block:
        if host is None and (h := _EXIM_HOST.search(line)):
            host = h.group(1)
        if reply is None and (r := _EXIM_REPLY.search(line)):
            reply = [r.group(1)]
            continue
        if reply is not None:
            # Old Exim: "host mx [ip]: 550 ..." carries the reply after the host.
            reply.append(_EXIM_HOST.sub("", line).lstrip(": ").strip())
    diagnostic = " ".join(reply) if reply else " ".join(b for b in block if b)
    return RawFailure(address, diagnostic, action, remote_mta=host)


# Sendmail without DSN -----------------------------------------------------------------------------

_SENDMAIL_START = re.compile(
    r"^\s*-+ The following addresses had (permanent fatal|transient non-fatal) errors -+")
_SENDMAIL_TRANSCRIPT = re.compile(r"^\s*-+ Transcript of session follows -+")
_SENDMAIL_COPY = re.compile(r"^\s*-+ (Original message follows|Returned message|Message header follows|"
                            r"This is a copy)")
_SENDMAIL_ADDRESS = re.compile(r"^\s*<?([^<>\s]+@[^<>\s]+?)>?(?:\.\.\..*)?\s*$")
_SENDMAIL_REASON = re.compile(r"^\s*\(reason:\s*(.*?)\)?\s*$")
_SENDMAIL_HOST = re.compile(r"while talking to ([^\s:]+?)\.?:")


def _read_sendmail(lines: Sequence[str], _message: bytes, _tree: MimePart) -> Found | None:
    failures: list[RawFailure] = []
    transcript_at = _find(lines, _SENDMAIL_TRANSCRIPT)
    transcript = lines[transcript_at + 1:] if transcript_at >= 0 else []
    copy_at = _find(lines, _SENDMAIL_COPY)
    if copy_at >= 0 and transcript_at >= 0:
        transcript = lines[transcript_at + 1:copy_at] if copy_at > transcript_at else transcript
    start = _find(lines, _SENDMAIL_START)
    while start >= 0:
        action = DsnAction.FAILED if "permanent" in lines[start] else DsnAction.DELAYED
        i = start + 1
        while i < len(lines) and not lines[i].lstrip().startswith("-----"):
            m = _SENDMAIL_ADDRESS.match(lines[i])
            address = clean_address(m.group(1)) if m else ""
            if address:
                said, host = _transcript_lines(transcript, address)
                follow = _SENDMAIL_REASON.match(lines[i + 1]) if i + 1 < len(lines) else None
                reason = follow.group(1) if follow is not None else said
                failures.append(RawFailure(address, reason, action, remote_mta=host))
            i += 1
        start = _find(lines, _SENDMAIL_START, i)
    return BounceFormat.SENDMAIL, failures, _original_after(lines, copy_at)


def _transcript_lines(transcript: Sequence[str], address: str) -> tuple[str, str | None]:
    """The last reply line of a Sendmail transcript naming `address` ("550 5.1.1 <a>... User
    unknown") and the host it was talking to then ("... while talking to mx.example.net.:")."""
    needle = address.lower()
    host: str | None = None
    said, said_host = "", None
    for line in transcript:
        if m := _SENDMAIL_HOST.search(line):
            host = m.group(1)
        elif needle in line.lower() and re.match(r"^\s*(<<< )?[245]\d\d[ -]", line):
            said, said_host = line.strip().removeprefix("<<< "), host
    return said, said_host or host


# Gmail before DSNs --------------------------------------------------------------------------------

_GMAIL_START = re.compile(r"^\s*Delivery to the following recipients? (failed permanently|has been delayed"
                          r"|failed)")
_GMAIL_DETAILS = re.compile(r"Technical details of (permanent|temporary) failure:")
_GMAIL_END = re.compile(r"^\s*-{5} (Original message|Message header follows)")
_GMAIL_RETURNED = re.compile(r"The error that the other server returned was:\s*(.*)$")
_GMAIL_HOST = re.compile(r" by (\S+?)\.? \[[0-9A-Fa-f.:]+\]")


def _read_gmail(lines: Sequence[str], _message: bytes, _tree: MimePart) -> Found | None:
    first, stop, end = _span(lines, _GMAIL_START, _GMAIL_END)
    if first < 0:
        return None
    action = DsnAction.DELAYED if "delayed" in lines[first] else DsnAction.FAILED
    details_at = _find(lines, _GMAIL_DETAILS, first)
    addresses = []
    for line in lines[first + 1:details_at if details_at >= 0 else stop]:
        if line.startswith(" ") and (address := clean_address(line.strip())):
            addresses.append(address)
    details = lines[details_at + 1:stop] if details_at >= 0 else []
    text = " ".join(line.strip() for line in details)
    returned = _GMAIL_RETURNED.search(text)
    diagnostic = returned.group(1) if returned else text
    host = _GMAIL_HOST.search(text)
    failures = [RawFailure(a, diagnostic, action, remote_mta=host.group(1) if host else None)
                for a in addresses]
    return BounceFormat.GMAIL, failures, _original_after(lines, end)


# Exchange text ------------------------------------------------------------------------------------

_EXCHANGE_OLD = re.compile(r"^\s*The following recipient\(s\) (cannot|could not) be reached:")
_EXCHANGE_OLD_RECORD = re.compile(r"^\s+(\S+@\S+?)(?:<mailto:[^>]*>)? on \d")
_EXCHANGE_ADMIN = re.compile(r"^\s*Diagnostic information for administrators:")
_EXCHANGE_END = re.compile(r"^\s*(Original message headers:|-{5,})")
_EXCHANGE_HOST = re.compile(r"<([^<>\s#]+) #([245]\.\d{1,3}\.\d{1,3})")
_EXCHANGE_GENERATING = re.compile(r"^\s*Generating server:\s*(\S+)")
_EXCHANGE_REMOTE = re.compile(r"Remote Server returned '(.*?)'?\s*$")
_EXCHANGE_HASH = re.compile(r"^\s*#(.*?)\s*(?:##.*)?$")


def _read_exchange(lines: Sequence[str], _message: bytes, _tree: MimePart) -> Found | None:
    admin = _find(lines, _EXCHANGE_ADMIN)
    if admin >= 0:
        end = _find(lines, _EXCHANGE_END, admin + 1)
        section = lines[admin + 1:end if end >= 0 else len(lines)]
        generating = next((m.group(1) for m in map(_EXCHANGE_GENERATING.match, section) if m), None)
        failures = []
        for i, line in enumerate(section):
            address = clean_address(line.split("<mailto:")[0])
            if not address or line.startswith(" ") or i + 1 >= len(section):
                continue
            follow = section[i + 1]
            m = _EXCHANGE_REMOTE.search(follow) or _EXCHANGE_HASH.match(follow)
            if m is not None:
                failures.append(RawFailure(address, m.group(1), remote_mta=generating))
        if failures:
            return BounceFormat.EXCHANGE, failures, b""
    first = _find(lines, _EXCHANGE_OLD)
    if first < 0:
        return None
    failures = []
    current: tuple[str, list[str]] | None = None
    records: list[tuple[str, list[str]]] = []
    for line in lines[first + 1:]:
        m = _EXCHANGE_OLD_RECORD.match(line)
        if m is not None and clean_address(m.group(1)):
            current = (clean_address(m.group(1)), [])
            records.append(current)
        elif current is not None and line.strip():
            current[1].append(line.strip())
        elif current is not None and current[1]:
            current = None  # an empty line ends a recipient's lines
    for address, block in records:
        host = None
        status = None
        for line in block:
            if h := _EXCHANGE_HOST.search(line):
                host, status = h.group(1), h.group(2)
        failures.append(RawFailure(address, " ".join(block), status=status, remote_mta=host))
    return BounceFormat.EXCHANGE, failures, b""


_READERS: tuple[Callable[[Sequence[str], bytes, MimePart], Found | None], ...] = (
    _read_angle_blocks,
    _read_exim,
    _read_sendmail,
    _read_gmail,
    _read_exchange,
)


__all__ = [
    "BounceFormat",
    "Mentions",
    "RawFailure",
    "clean_address",
    "one_line",
    "parse_text_formats",
]
