"""The parsed IMAP command AST (RFC 3501 6 and 9, RFC 9051 6 and 9, plus the extensions named
beside each type). Every field is already parsed and validated: the session never sees wire syntax.

Mailbox names are Unicode `str` (decoded from modified UTF-7, RFC 3501 5.1.3, unless UTF-8 mode
is on, RFC 6855 / RFC 9051); "INBOX" in any case is normalised to "INBOX" (RFC 3501 5.1).
System flags are in canonical case ("\\Seen"); keywords are kept as sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

from mailprime.proto.imap.sequence_set import SequenceSet

# Fetch attributes -----------------------------------------------------------------------------


class FetchItem(enum.Enum):
    """The fetch attributes without arguments (RFC 3501 6.4.5, RFC 9051 6.4.5, RFC 7162 3.1.4).

    The value is the attribute's name in the FETCH response.
    """

    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    ENVELOPE = "ENVELOPE"
    BODYSTRUCTURE = "BODYSTRUCTURE"
    BODY = "BODY"  # the non-extensible BODYSTRUCTURE
    UID = "UID"
    MODSEQ = "MODSEQ"
    RFC822 = "RFC822"  # like BODY[], sets \Seen
    RFC822_HEADER = "RFC822.HEADER"  # like BODY.PEEK[HEADER]
    RFC822_TEXT = "RFC822.TEXT"  # like BODY[TEXT], sets \Seen


@dataclass(frozen=True, slots=True)
class Section:
    """A body section spec: part numbers, then one of HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT,
    TEXT, MIME (the latter only after a part number), or nothing (the whole part)."""

    part: tuple[int, ...] = ()
    text: str | None = None  # None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[str, ...] = ()  # header names for HEADER.FIELDS[.NOT], as the client sent them

    def to_wire(self) -> str:
        """The spec as written between the brackets, e.g. "1.2.HEADER.FIELDS (SUBJECT FROM)"."""
        parts = [str(p) for p in self.part]
        if self.text is not None:
            parts.append(self.text)
        spec = ".".join(parts)
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class Partial:
    """"<offset.length>": return at most `length` octets starting at `offset` (RFC 3501 6.4.5)."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class BodySection:
    """BODY[section]<partial> (sets \\Seen) or BODY.PEEK[section]<partial> (does not)."""

    section: Section = field(default_factory=Section)
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> str:
        """The item's name in the FETCH response: never ".PEEK", only the partial's origin."""
        origin = f"<{self.partial.offset}>" if self.partial is not None else ""
        return f"BODY[{self.section.to_wire()}]{origin}"


@dataclass(frozen=True, slots=True)
class BinarySection:
    """BINARY[part]<partial> / BINARY.PEEK[part]<partial> (RFC 3516, RFC 9051 6.4.5): the part's
    content with its Content-Transfer-Encoding removed."""

    part: tuple[int, ...] = ()
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> str:
        origin = f"<{self.partial.offset}>" if self.partial is not None else ""
        return f"BINARY[{'.'.join(str(p) for p in self.part)}]{origin}"


@dataclass(frozen=True, slots=True)
class BinarySize:
    """BINARY.SIZE[part] (RFC 3516 4.2, RFC 9051 6.4.5): the decoded size of a part."""

    part: tuple[int, ...] = ()

    def response_name(self) -> str:
        return f"BINARY.SIZE[{'.'.join(str(p) for p in self.part)}]"


FetchAttribute = FetchItem | BodySection | BinarySection | BinarySize


def fetch_item_name(attribute: FetchAttribute) -> str:
    """The name under which `attribute` is answered in a FETCH response."""
    if isinstance(attribute, FetchItem):
        return attribute.value
    return attribute.response_name()


# Search keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchAll:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """A flag test: ANSWERED (\\Answered set), UNANSWERED (not set), KEYWORD x, UNKEYWORD x,
    RECENT / OLD (\\Recent set / not set); NEW is parsed as (RECENT UNSEEN)."""

    flag: str
    present: bool = True


class TextField(enum.Enum):
    BODY = "BODY"  # the body only
    TEXT = "TEXT"  # header and body


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY s / TEXT s: case-insensitive substring (RFC 3501 6.4.4)."""

    kind: TextField
    value: str


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER name s, and FROM / TO / CC / BCC / SUBJECT s (parsed as that header's name in upper
    case). An empty `value` matches every message that has the field (RFC 3501 6.4.4)."""

    name: str
    value: str


class DateField(enum.Enum):
    BEFORE = "BEFORE"  # internal date, day precision
    ON = "ON"
    SINCE = "SINCE"
    SENTBEFORE = "SENTBEFORE"  # Date: header, day precision
    SENTON = "SENTON"
    SENTSINCE = "SENTSINCE"


@dataclass(frozen=True, slots=True)
class SearchDate:
    kind: DateField
    date: date


class SizeField(enum.Enum):
    LARGER = "LARGER"
    SMALLER = "SMALLER"


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER n / SMALLER n on RFC822.SIZE."""

    kind: SizeField
    size: int


@dataclass(frozen=True, slots=True)
class SearchSeq:
    """A bare sequence set: messages with those sequence numbers."""

    sequence: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchUid:
    """UID set."""

    uids: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """MODSEQ [entry-name entry-type] n (RFC 7162 3.1.5): mod-sequence >= n. The optional
    per-flag entry is parsed and kept, servers may ignore it (RFC 7162 3.1.5)."""

    modseq: int
    entry: tuple[str, str] | None = None  # ("/flags/\\draft", "all" | "shared" | "priv")


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """Several keys in a row, or a parenthesised list: all must match."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll | SearchFlag | SearchText | SearchHeader | SearchDate | SearchSize | SearchSeq
    | SearchUid | SearchModSeq | SearchNot | SearchOr | SearchAnd
)


# Commands -------------------------------------------------------------------------------------


class StoreMode(enum.Enum):
    """STORE FLAGS / +FLAGS / -FLAGS (RFC 3501 6.4.6)."""

    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True, slots=True)
class Capability:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Logout:
    pass


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS (RFC 3501 6.2.1): bytes the client pipelined after it were discarded."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (RFC 3501 6.2.2, SASL-IR RFC 4959).

    `initial_response` is base64-decoded; "=" gives b"" (an empty response), absent gives None.
    """

    mechanism: str  # upper case
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Login:
    userid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Enable:
    """ENABLE (RFC 5161): capability names in upper case."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Select:
    mailbox: str
    condstore: bool = False  # "(CONDSTORE)" select parameter, RFC 7162 3.1.8


@dataclass(frozen=True, slots=True)
class Examine:
    mailbox: str
    condstore: bool = False


@dataclass(frozen=True, slots=True)
class Create:
    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE name (USE (\Drafts)), RFC 6154 3


@dataclass(frozen=True, slots=True)
class Delete:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    mailbox: str


@dataclass(frozen=True, slots=True)
class ListReturn:
    """LIST RETURN options (RFC 5258 3.2, RFC 6154 2, RFC 5819 LIST-STATUS)."""

    subscribed: bool = False
    children: bool = False
    special_use: bool = False
    status: tuple[str, ...] | None = None  # STATUS items to return with each name


@dataclass(frozen=True, slots=True)
class List:
    """LIST, basic or extended (RFC 3501 6.3.8, RFC 5258, RFC 9051 6.3.9).

    `reference` and `patterns` are decoded like mailbox names; wildcards "*" and "%" are kept.
    `select_options` holds upper-case names among SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE.
    """

    reference: str
    patterns: tuple[str, ...]
    select_options: frozenset[str] = frozenset()
    return_options: ListReturn = field(default_factory=ListReturn)


@dataclass(frozen=True, slots=True)
class Lsub:
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS mailbox (items): upper-case names among MESSAGES, RECENT, UIDNEXT, UIDVALIDITY,
    UNSEEN, DELETED, SIZE (RFC 9051 6.3.11) and HIGHESTMODSEQ (RFC 7162 3.1.6)."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """APPEND mailbox [(flags)] [date-time] {size} (RFC 3501 6.3.11, BINARY ~{size} RFC 3516).

    Reported when the message literal is announced, before any of its octets: the session
    answers with `accept_literal()` or `reject_literal(...)`; the octets then arrive as
    `AppendData` events and the end of the command as `AppendEnd`.
    """

    mailbox: str
    flags: frozenset[str]
    internal_date: datetime | None
    size: int
    binary: bool = False  # literal8 (RFC 3516 4.4): the message may hold NUL octets
    synchronizing: bool = True  # False for {n+}: the octets follow without a continuation


@dataclass(frozen=True, slots=True)
class Idle:
    pass


@dataclass(frozen=True, slots=True)
class Check:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Unselect:
    pass


@dataclass(frozen=True, slots=True)
class Expunge:
    pass


@dataclass(frozen=True, slots=True)
class UidExpunge:
    """UID EXPUNGE set (RFC 4315 2.1, RFC 9051 6.4.9)."""

    uids: SequenceSet


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH (RFC 3501 6.4.4); ESEARCH return options (RFC 4731, RFC 9051 6.4.4).

    `return_options` is None for a plain SEARCH (answer "* SEARCH ..."); a tuple (maybe empty,
    which means ALL) of upper-case names among MIN, MAX, ALL, COUNT when RETURN was given
    (answer "* ESEARCH ...").
    """

    key: SearchKey
    charset: str | None = None  # upper case, already accepted (US-ASCII or UTF-8)
    uid: bool = False
    return_options: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH (RFC 3501 6.4.5); CHANGEDSINCE modifier (RFC 7162 3.1.4).

    Macros ALL, FAST and FULL are expanded; UID FETCH always includes `FetchItem.UID`
    (RFC 3501 6.4.8), and CHANGEDSINCE always includes `FetchItem.MODSEQ` (RFC 7162 3.1.4.1).
    """

    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changed_since: int | None = None


@dataclass(frozen=True, slots=True)
class Store:
    """STORE / UID STORE (RFC 3501 6.4.6); UNCHANGEDSINCE modifier (RFC 7162 3.1.3)."""

    sequence: SequenceSet
    mode: StoreMode
    silent: bool
    flags: frozenset[str]
    uid: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    sequence: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """MOVE / UID MOVE (RFC 6851)."""

    sequence: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971): field/value pairs, or None for "ID NIL"."""

    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class GetQuota:
    """GETQUOTA root (RFC 9208 4.2)."""

    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    """GETQUOTAROOT mailbox (RFC 9208 4.3)."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """SETQUOTA root (resource limit ...) (RFC 9208 4.4): resource names upper case."""

    root: str
    limits: tuple[tuple[str, int], ...]


Command = (
    Capability | Noop | Logout | StartTls | Authenticate | Login | Enable | Select | Examine
    | Create | Delete | Rename | Subscribe | Unsubscribe | List | Lsub | Namespace | Status
    | Append | Idle | Check | Close | Unselect | Expunge | UidExpunge | Search | Fetch | Store
    | Copy | Move | Id | GetQuota | GetQuotaRoot | SetQuota
)
