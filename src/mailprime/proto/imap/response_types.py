"""The IMAP response model: what the session hands to `ServerConnection.send` (RFC 3501 7, RFC 9051 7).

Untagged data is a tuple of typed values; the serializer (`serializer.py`) writes each one in its
wire form, choosing quoted string or literal, encoding mailbox names for the connection's mode.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from mailprime.proto.imap.command_types import FetchAttribute, fetch_item_name
from mailprime.proto.imap.sequence_set import SequenceSet

# Values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Atom:
    """Written as is: keywords ("EXISTS", "FETCH"), pre-formatted items ("BODY[TEXT]", "1:3")."""

    text: str


@dataclass(frozen=True, slots=True)
class String:
    """A string: the serializer writes it quoted when it can, else as a literal
    (CR, LF, NUL, 8-bit outside UTF-8 mode, or long)."""

    value: bytes | str


@dataclass(frozen=True, slots=True)
class Literal:
    """Always a literal "{n}\\r\\n..."; `binary` gives a literal8 "~{n}" (RFC 3516 4.3)."""

    data: bytes
    binary: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class StreamedLiteral:
    """A literal whose `size` octets the driver streams from `source` (a blob handle the core
    never touches). `send` returns it as its own segment, after the "{size}\\r\\n" header."""

    size: int
    source: object
    binary: bool = False


class NilType(enum.Enum):
    NIL = "NIL"


NIL: Final = NilType.NIL
Nil = NilType  # the type of NIL, for annotations


@dataclass(frozen=True, slots=True)
class ParenList:
    """A parenthesised list "(a b c)"."""

    items: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class Juxtaposed:
    """Parenthesised lists written back to back, with no separator and no parentheses of their
    own: "(...)(...)". RFC 3501 9 (and RFC 9051 9) juxtapose in two places: the bodies of a
    multipart, body-type-mpart = 1*body SP media-subtype, and the addresses of an envelope
    field, "(" 1*address ")". It stands as one item of the enclosing ParenList, so
    ParenList((Juxtaposed((a, b)), String("mixed"))) is "((a)(b) "mixed")".

    Only parenthesised lists: atoms or numbers back to back would run into one another. The
    grammar wants at least one (1*body, 1*address), so an empty one is refused when written."""

    items: tuple[ParenList, ...]


@dataclass(frozen=True, slots=True)
class MailboxName:
    """A mailbox name: modified UTF-7 (RFC 3501 5.1.3) or UTF-8 (RFC 9051, RFC 6855) per mode."""

    name: str


@dataclass(frozen=True, slots=True)
class Flag:
    """A flag or keyword, written as an atom ("\\Seen", "$Forwarded", "\\*")."""

    name: str


@dataclass(frozen=True, slots=True)
class DateTime:
    """IMAP date-time, quoted: "dd-Mon-yyyy hh:mm:ss +zzzz" (RFC 3501 9). Must be aware."""

    value: datetime


Value = (Atom | String | Literal | StreamedLiteral | NilType | int | ParenList | Juxtaposed | MailboxName
         | Flag | DateTime)


# Responses ------------------------------------------------------------------------------------


class ResponseStatus(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    BYE = "BYE"  # untagged only
    PREAUTH = "PREAUTH"  # untagged greeting only


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """"[NAME args]" (RFC 3501 7.1, RFC 9051 7.1, RFC 5530): e.g. ResponseCode("UIDVALIDITY", (5,)),
    ResponseCode("COPYUID", (5, Atom("1:3"), Atom("7:9"))), ResponseCode("TRYCREATE")."""

    name: str
    args: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class Tagged:
    """The command's completion: "tag OK|NO|BAD [code] text"."""

    tag: str
    status: ResponseStatus
    text: str
    code: ResponseCode | None = None


@dataclass(frozen=True, slots=True)
class UntaggedStatus:
    """"* OK|NO|BAD|BYE|PREAUTH [code] text" (greeting, alerts, BYE before closing)."""

    status: ResponseStatus
    text: str
    code: ResponseCode | None = None


@dataclass(frozen=True, slots=True)
class Untagged:
    """Server data: "* " followed by the values separated by spaces, e.g. (5, Atom("EXISTS"))."""

    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Continuation:
    """"+ text", or "+ base64(data)" for a SASL challenge (RFC 3501 7.5)."""

    text: str = ""
    data: bytes | None = None


Response = Tagged | UntaggedStatus | Untagged | Continuation

WireSegment = bytes | StreamedLiteral
"""What `send` returns: encoded bytes, and streamed literals the driver copies from their source."""


# Helper constructors --------------------------------------------------------------------------


def ok(tag: str, text: str = "completed", code: ResponseCode | None = None) -> Tagged:
    return Tagged(tag, ResponseStatus.OK, text, code)


def no(tag: str, text: str, code: ResponseCode | None = None) -> Tagged:
    return Tagged(tag, ResponseStatus.NO, text, code)


def bad(tag: str, text: str, code: ResponseCode | None = None) -> Tagged:
    return Tagged(tag, ResponseStatus.BAD, text, code)


def bye(text: str, code: ResponseCode | None = None) -> UntaggedStatus:
    return UntaggedStatus(ResponseStatus.BYE, text, code)


def exists(count: int) -> Untagged:
    return Untagged((count, Atom("EXISTS")))


def recent(count: int) -> Untagged:
    return Untagged((count, Atom("RECENT")))


def expunge(seq: int) -> Untagged:
    return Untagged((seq, Atom("EXPUNGE")))


def flags_response(flags: Iterable[str]) -> Untagged:
    """"* FLAGS (\\Answered \\Flagged ...)"."""
    return Untagged((Atom("FLAGS"), ParenList(tuple(Flag(f) for f in flags))))


def capability_response(capabilities: Iterable[str]) -> Untagged:
    return Untagged((Atom("CAPABILITY"), *(Atom(c) for c in capabilities)))


def fetch_response(seq: int, items: Iterable[tuple[FetchAttribute | str, Value]]) -> Untagged:
    """"* seq FETCH (name value ...)"; names come from the requested attribute or are given."""
    flat: list[Value] = []
    for name, value in items:
        flat.append(Atom(name if isinstance(name, str) else fetch_item_name(name)))
        flat.append(value)
    return Untagged((seq, Atom("FETCH"), ParenList(tuple(flat))))


def search_response(numbers: Sequence[int], highest_modseq: int | None = None) -> Untagged:
    """"* SEARCH 2 5 9", with "(MODSEQ n)" after CONDSTORE searches (RFC 7162 3.1.5)."""
    values: list[Value] = [Atom("SEARCH"), *numbers]
    if highest_modseq is not None and numbers:
        values.append(ParenList((Atom("MODSEQ"), highest_modseq)))
    return Untagged(tuple(values))


def list_response(attributes: Iterable[str], delimiter: str | None, name: str,
                  extra: tuple[Value, ...] = ()) -> Untagged:
    """"* LIST (\\HasNoChildren) "/" name" (RFC 3501 7.2.2); `extra` for LIST-EXTENDED data."""
    delim: Value = String(delimiter) if delimiter is not None else NIL
    values: list[Value] = [Atom("LIST"), ParenList(tuple(Flag(a) for a in attributes)), delim,
                           MailboxName(name)]
    if extra:
        values.append(ParenList(extra))
    return Untagged(tuple(values))


def sequence_atom(numbers: SequenceSet | Iterable[int]) -> Atom:
    """A compact sequence set as an atom (COPYUID, APPENDUID, MODIFIED, ESEARCH ALL)."""
    seq = numbers if isinstance(numbers, SequenceSet) else SequenceSet.of(numbers)
    return Atom(seq.to_wire())
