"""Grammar primitives of IMAP command lines (RFC 3501 9, RFC 9051 9): a `Reader` over one
command's text and literals, with atoms, strings, numbers, dates, flags and sequence sets.

A command arrives as text parts and the literals between them: part 0, literal 0, part 1, ...
Each part but the last ends with its literal's announcement "{n}", "{n+}" or "~{n}". When the
last announcement's octets have not been read yet (`open_literal`), reaching it raises
`LiteralPending`: everything before it parsed cleanly, so the core can ask for the literal (or,
for APPEND's message, `announced_literal()` returns its size instead).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

from mailprime.proto.imap import mutf7
from mailprime.proto.imap.response_types import ResponseCode, ResponseStatus
from mailprime.proto.imap.sequence_set import SeqRange, SequenceSet

T = TypeVar("T")

# RFC 3501 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
# resp-specials. ATOM-CHAR is any other CHAR (7-bit); ASTRING-CHAR adds "]".
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in _ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
# list-char = ATOM-CHAR / list-wildcards / resp-specials (RFC 3501 9, LIST patterns).
LIST_CHARS = ASTRING_CHARS | {ord("%"), ord("*")}
# tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 9).
TAG_CHARS = ASTRING_CHARS - {ord("+")}

MAX_NUMBER = 2**32 - 1  # RFC 3501 9 number: unsigned 32-bit
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 9 number64 (and RFC 7162 mod-sequence-value)

LITERAL_ANNOUNCEMENT = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

SYSTEM_FLAGS = {f.upper(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
RECENT = "\\Recent"


class ParseError(Exception):
    """The command is malformed or refused; carries its wire answer (BAD unless said otherwise)."""

    def __init__(self, text: str, code: ResponseCode | None = None,
                 status: ResponseStatus = ResponseStatus.BAD) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


class LiteralPending(Exception):
    """The parse reached the announced literal whose octets are still to come."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """A literal announcement at the end of a line: "{n}", "{n+}" or "~{n}" (RFC 3516 literal8).

    `in_range` is False when n is not a valid number64 (RFC 9051 9): such a literal cannot be
    read or skipped, and `size` is then 0.
    """

    size: int
    synchronizing: bool
    binary: bool
    in_range: bool = True


def find_announcement(line: bytes) -> Announcement | None:
    """The literal the line announces at its end, or None."""
    match = LITERAL_ANNOUNCEMENT.search(line)
    if match is None:
        return None
    digits = match.group(2)
    sync = not match.group(3)
    if len(digits) > 19 or int(digits) > MAX_NUMBER64:
        return Announcement(0, sync, bool(match.group(1)), in_range=False)
    return Announcement(int(digits), synchronizing=sync, binary=bool(match.group(1)))


def decode_mailbox(raw: bytes, utf8: bool) -> str:
    """A mailbox name as received -> Unicode (RFC 3501 5.1.3 modified UTF-7, or UTF-8 when
    enabled, RFC 9051 5.1 / RFC 6855 3); INBOX is case-insensitive (RFC 3501 5.1)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("mailbox name is not valid UTF-8") from exc
    if not utf8 and text.isascii():
        try:
            text = mutf7.decode(text)
        except mutf7.MUtf7Error as exc:
            raise ParseError(f"invalid mailbox name: {exc}") from exc
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ParseError("control character in mailbox name")
    return "INBOX" if text.upper() == "INBOX" else text


class Reader:
    """A cursor over one command's parts and literals. Methods raise `ParseError`."""

    def __init__(self, parts: list[bytes], literals: list[bytes], *, utf8: bool = False,
                 open_literal: bool = False, max_nesting: int = 32) -> None:
        self._parts = parts
        self._literals = literals
        self._index = 0
        self._cur = parts[0]
        self.pos = 0
        self.utf8 = utf8
        self.open_literal = open_literal
        self.max_nesting = max_nesting

    # Low level ---------------------------------------------------------------------------

    def peek(self) -> int | None:
        return self._cur[self.pos] if self.pos < len(self._cur) else None

    def at_end(self) -> bool:
        return self.pos >= len(self._cur) and self._index == len(self._parts) - 1

    def expect_end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected characters at end of command")

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("expected a space" if not self.at_end() else "missing arguments")
        self.pos += 1

    def maybe_sp(self) -> bool:
        """Consume one space if there is one (for optional arguments)."""
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def char(self, ch: bytes) -> None:
        if self.peek() != ch[0]:
            raise ParseError(f"expected {ch.decode()!r}")
        self.pos += 1

    def maybe_char(self, ch: bytes) -> bool:
        if self.peek() == ch[0]:
            self.pos += 1
            return True
        return False

    def _run(self, allowed: frozenset[int] | set[int]) -> bytes:
        start = self.pos
        cur = self._cur
        while self.pos < len(cur) and cur[self.pos] in allowed:
            self.pos += 1
        return cur[start:self.pos]

    def run_until(self, stops: bytes) -> bytes:
        """The octets up to (not including) any of `stops` or the end of the line."""
        start = self.pos
        cur = self._cur
        while self.pos < len(cur) and cur[self.pos] not in stops:
            self.pos += 1
        return cur[start:self.pos]

    def _next_is_8bit(self) -> bool:
        nxt = self.peek()
        return nxt is not None and nxt >= 0x80

    # Atoms -------------------------------------------------------------------------------

    def tag(self) -> str:
        raw = self._run(TAG_CHARS)
        if not raw:
            raise ParseError("missing or invalid tag")
        if self.peek() not in (None, 0x20):
            raise ParseError("invalid character in tag")
        return raw.decode("ascii")

    def atom(self, what: str = "atom") -> str:
        raw = self._run(ATOM_CHARS)
        if not raw:
            if self._next_is_8bit():
                raise ParseError(f"8-bit character in {what}")
            raise ParseError(f"expected {what}")
        if self._next_is_8bit():
            raise ParseError(f"8-bit character in {what}")
        return raw.decode("ascii")

    def keyword(self) -> str:
        """An atom in upper case (command names, search keys, options)."""
        return self.atom("keyword").upper()

    def expect_keyword(self, word: str) -> None:
        if self.keyword() != word:
            raise ParseError(f"expected {word}")

    def number(self, *, nonzero: bool = False, limit: int = MAX_NUMBER) -> int:
        raw = self._run(frozenset(b"0123456789"))
        if not raw:
            raise ParseError("expected a number")
        if len(raw) > 20 or int(raw) > limit:
            raise ParseError("number out of range")
        value = int(raw)
        if nonzero and value == 0:
            raise ParseError("zero is not allowed here")
        return value

    def number64(self, *, nonzero: bool = False) -> int:
        return self.number(nonzero=nonzero, limit=MAX_NUMBER64)

    # Strings -----------------------------------------------------------------------------

    def _quoted(self) -> bytes:
        self.pos += 1  # the opening DQUOTE
        out = bytearray()
        cur = self._cur
        while self.pos < len(cur):
            ch = cur[self.pos]
            self.pos += 1
            if ch == 0x22:
                return bytes(out)
            if ch == 0x5C:
                if self.pos >= len(cur) or cur[self.pos] not in (0x22, 0x5C):
                    raise ParseError("invalid escape in quoted string")
                out.append(cur[self.pos])
                self.pos += 1
            elif ch in (0x00, 0x0D, 0x0A):
                raise ParseError("invalid character in quoted string")
            else:
                out.append(ch)
        raise ParseError("unterminated quoted string")

    def _literal_header(self) -> Announcement:
        match = LITERAL_ANNOUNCEMENT.match(self._cur, self.pos)
        if match is None or match.end() != len(self._cur):
            raise ParseError("invalid literal")
        found = find_announcement(self._cur[self.pos:])
        if found is None or not found.in_range:
            raise ParseError("literal size out of range")
        self.pos = len(self._cur)
        return found

    def _take_literal(self) -> bytes:
        if self._index >= len(self._literals):
            raise LiteralPending
        data = self._literals[self._index]
        self._index += 1
        self._cur = self._parts[self._index]
        self.pos = 0
        return data

    def announced_literal(self) -> Announcement:
        """APPEND's message: the literal announced at the very end, whose octets the core streams."""
        if self.peek() not in (ord("{"), ord("~")):
            raise ParseError("expected a literal")
        found = self._literal_header()
        if not (self.open_literal and self._index == len(self._parts) - 1):
            raise ParseError("unexpected literal")
        return found

    def string(self) -> bytes:
        """quoted / literal (RFC 3501 9 `string`)."""
        nxt = self.peek()
        if nxt == 0x22:
            return self._quoted()
        if nxt == ord("{"):
            self._literal_header()
            return self._take_literal()
        if nxt == ord("~"):
            raise ParseError("literal8 is only allowed for APPEND data")
        raise ParseError("expected a string")

    def astring(self) -> bytes:
        nxt = self.peek()
        if nxt in (0x22, ord("{"), ord("~")):
            return self.string()
        raw = self._run(ASTRING_CHARS)
        if not raw or self._next_is_8bit():
            raise ParseError("8-bit character in atom" if self._next_is_8bit() else "expected a string")
        return raw

    def nstring(self) -> bytes | None:
        if self.peek() in (0x22, ord("{")):
            return self.string()
        if self.atom("NIL").upper() != "NIL":
            raise ParseError("expected a string or NIL")
        return None

    def text(self, raw: bytes, what: str = "string") -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"{what} is not valid UTF-8") from exc

    def astring_str(self, what: str = "string") -> str:
        return self.text(self.astring(), what)

    def mailbox(self) -> str:
        return decode_mailbox(self.astring(), self.utf8)

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string (RFC 3501 9): a LIST pattern, wildcards kept."""
        if self.peek() in (0x22, ord("{"), ord("~")):
            raw = self.string()
        else:
            raw = self._run(LIST_CHARS)
            if not raw or self._next_is_8bit():
                raise ParseError("invalid mailbox pattern")
        if not raw:
            return ""
        return decode_mailbox(raw, self.utf8)

    # Structured values -------------------------------------------------------------------

    def flag(self) -> str:
        """flag (RFC 3501 9): a system flag in canonical case, "\\Recent", "\\X" or a keyword."""
        if self.maybe_char(b"\\"):
            name = "\\" + self.atom("flag")
            return SYSTEM_FLAGS.get(name.upper(), RECENT if name.upper() == "\\RECENT" else name)
        return self.atom("flag")

    def paren_list(self, item: Callable[[], T], *, empty: bool = True) -> list[T]:
        """"(" item *(SP item) ")", the shape of every list in the grammar; "()" too when
        `empty` (flag-list, option lists), not where it says 1*item (fetch attributes, header
        names, search keys)."""
        self.char(b"(")
        items: list[T] = []
        if empty and self.maybe_char(b")"):
            return items
        while True:
            items.append(item())
            if self.maybe_char(b")"):
                return items
            self.sp()

    def flag_list(self) -> list[str]:
        """"(" [flag *(SP flag)] ")"."""
        return self.paren_list(self.flag)

    def paren_atoms(self) -> list[str]:
        """"(" [atom *(SP atom)] ")" in upper case (option lists)."""
        return self.paren_list(self.keyword)

    def sequence_set(self) -> SequenceSet:
        """sequence-set (RFC 3501 9): ("*" / nz-number) [":" ...] *("," ...)."""
        ranges: list[SeqRange] = []
        while True:
            start = self._seq_number()
            end = self._seq_number() if self.maybe_char(b":") else start
            ranges.append(SeqRange(start, end))
            if not self.maybe_char(b","):
                break
        nxt = self.peek()
        if nxt is not None and nxt not in (0x20, ord(")")):
            raise ParseError("invalid sequence set")
        return SequenceSet(tuple(ranges))

    def _seq_number(self) -> int | None:
        if self.maybe_char(b"*"):
            return None
        try:
            return self.number(nonzero=True)
        except ParseError as exc:
            raise ParseError(f"invalid sequence set: {exc.text}") from exc

    def date(self) -> date:
        """date = date-text / DQUOTE date-text DQUOTE; date-text = d[d]-Mon-yyyy (RFC 3501 9)."""
        quoted = self.maybe_char(b'"')
        raw = self._run(frozenset(b"0123456789-ADEFGJLMNOPSTUVYCBRadefgjlmnopstuvycbr"))
        if quoted:
            self.char(b'"')
        return parse_date_text(raw)

    def date_time(self) -> datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
        if self.peek() != 0x22:
            raise ParseError("expected a quoted date-time")
        return parse_date_time(self._quoted())

    def base64(self, raw: bytes) -> bytes:
        """A SASL response (RFC 3501 6.2.2, RFC 4959 "=" for empty)."""
        if raw == b"=":
            return b""
        try:
            return binascii.a2b_base64(raw, strict_mode=True)
        except binascii.Error as exc:
            raise ParseError("invalid base64") from exc


def parse_date_text(raw: bytes) -> date:
    parts = raw.split(b"-")
    if len(parts) != 3 or not (1 <= len(parts[0]) <= 2) or len(parts[2]) != 4:
        raise ParseError("invalid date")
    day, month, year = parts
    if not day.isdigit() or not year.isdigit() or month.upper().decode("ascii", "replace") not in MONTHS:
        raise ParseError("invalid date")
    try:
        return date(int(year), MONTHS.index(month.upper().decode("ascii")) + 1, int(day))
    except ValueError as exc:
        raise ParseError("invalid date") from exc


_DATE_TIME = re.compile(
    rb"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\Z"
)


def parse_date_time(raw: bytes) -> datetime:
    match = _DATE_TIME.match(raw)
    if match is None:
        raise ParseError("invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
    month = mon.upper().decode("ascii")
    if month not in MONTHS:
        raise ParseError("invalid date-time")
    offset = timedelta(hours=int(zh), minutes=int(zm))
    if offset >= timedelta(hours=24):
        raise ParseError("invalid time zone")
    try:
        return datetime(int(year), MONTHS.index(month) + 1, int(day.strip()), int(hh), int(mm), int(ss),
                        tzinfo=timezone(-offset if sign == b"-" else offset))
    except ValueError as exc:
        raise ParseError("invalid date-time") from exc
