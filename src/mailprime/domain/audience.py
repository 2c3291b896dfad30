"""The audience of marketing mail: contacts, mailing lists, memberships, consent and segments.

Theory of operation
-------------------
A contact is one address we may write to, with a name and free-form attributes (JSON values,
typed here as `JsonValue` so no `Any` crosses a layer). A contact belongs to lists through
memberships whose status says whether mail may go: on a single opt-in list every member who has
not unsubscribed is mailed; on a double opt-in list only confirmed members are. The consent
ledger is the evidence behind those statuses: append-only, one entry per act (consent given,
confirmed, withdrawn) with where it came from, the wording shown, the IP and the time. It is never
updated, except by erasure (GDPR Art. 17), which replaces the address by its hash and drops the IP:
what remains proves that some consent existed and was withdrawn, without naming the person.

Addresses are keyed by `email_key`: the whole address lower-cased, the domain as an IDNA A-label.
That is the same folding the suppression list uses (domain.deliverability.normalize_address), so a
contact and its suppression entry always meet; mailbox providers treat local parts
case-insensitively in practice, and two contacts differing only in case would be mailed twice.

A segment is a filter expression (marketing.segments parses it) whose syntax tree is defined here,
as plain data: marketing builds it, storage compiles it to SQL; neither imports the other.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from mailprime.domain.deliverability import Suppression
from mailprime.domain.errors import DomainError
from mailprime.domain.ids import ContactId, ListId, SegmentId
from mailprime.domain.mail import Event

# A JSON value as json.loads returns it. Recursive, so attributes nest without `Any`.
JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Attributes: TypeAlias = Mapping[str, JsonValue]

ERASED_PREFIX = "sha256:"  # an address replaced by its hash (erasure) starts with this


def email_hash(email_key: str) -> str:
    """The non-reversible stand-in for an erased address: "sha256:" + hex of the folded address.

    Unsalted on purpose: the suppression gate must recognise the address when it comes back (a
    re-import, an API send) without keeping anything that names it. It is pseudonymous, not
    anonymous (someone who already knows the address can test it), which is what a suppression
    record needs and all it reveals."""
    return ERASED_PREFIX + hashlib.sha256(email_key.encode("utf-8")).hexdigest()


class OptIn(enum.StrEnum):
    SINGLE = "single"  # a member is mailed until they unsubscribe
    DOUBLE = "double"  # a member is mailed only once they have confirmed


class MembershipStatus(enum.StrEnum):
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class ConsentAction(enum.StrEnum):
    GIVEN = "given"
    CONFIRMED = "confirmed"  # the double opt-in link was followed (or an import vouched for it)
    WITHDRAWN = "withdrawn"


class ConsentSource(enum.StrEnum):
    FORM = "form"
    API = "api"
    IMPORT = "import"
    CLI = "cli"
    ONE_CLICK = "one-click"  # RFC 8058 List-Unsubscribe-Post
    MAILTO = "mailto"  # a message to the List-Unsubscribe mailto (RFC 2369 3.2)
    ERASURE = "erasure"  # the withdrawal an erasure records


class ImportMode(enum.StrEnum):
    UPSERT = "upsert"  # existing contacts get the new name and attributes (merged)
    SKIP_EXISTING = "skip-existing"  # existing contacts are left as they are


@dataclass(frozen=True, slots=True)
class Contact:
    id: ContactId
    email: str  # as given, domain normalised
    email_key: str  # lower-cased whole address: the unique key
    name: str
    attributes: Attributes
    created_at: datetime
    updated_at: datetime
    # Engagement, written by tracking (issue 5, campaigns): what "opened within N days" reads.
    last_opened_at: datetime | None = None
    last_clicked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Addressee:
    """What a campaign's send needs of a contact (AudienceStore.audience_page): less to read
    and to make than a Contact, once per recipient of every campaign."""

    id: ContactId
    email: str
    name: str
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class ContactInput:
    """A contact to add or update (one row of an import, an API call)."""

    email: str
    name: str = ""
    attributes: Attributes = field(default_factory=dict)


def list_label(name: str) -> str:
    """The label a list's name gives its List-Id (RFC 2919 `<label.sending-domain>`): ASCII
    letters, digits and "-" only, lower case; "list" when nothing of the name is left."""
    clean = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "-") else "-"
                    for ch in name.lower()).strip("-")
    return clean or "list"


@dataclass(frozen=True, slots=True)
class MailingList:
    id: ListId
    name: str
    description: str
    opt_in: OptIn
    created_at: datetime

    @property
    def list_id_label(self) -> str:
        """The label of this list's List-Id (`<label.sending-domain>`): its name's label and its
        id, "news-3". Unique per list (names in other scripts, or differing in case only, give
        one label) and kept by a rename's id, so mail that names it maps back to exactly it."""
        return f"{list_label(self.name)}-{self.id}"


def list_of_label(label: str) -> ListId | None:
    """The list id a List-Id label names (`MailingList.list_id_label`), or None."""
    _name, dash, number = label.rpartition("-")
    if not dash or not number.isascii() or not number.isdigit() or len(number) > 18:
        return None
    return ListId(int(number))


@dataclass(frozen=True, slots=True)
class Membership:
    contact_id: ContactId
    list_id: ListId
    status: MembershipStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConsentEvidence:
    """Where an act of consent came from: what a membership change records in the ledger."""

    source: ConsentSource
    wording_version: str = ""  # which text of the form/notice the person saw
    ip: str = ""


@dataclass(frozen=True, slots=True)
class ConsentEntry:
    """One line of the append-only ledger. `email` is the address, or its hash once erased."""

    id: int
    email: str
    contact_id: ContactId | None
    list_id: ListId | None
    purpose: str  # the list's name at the time, or a purpose such as "transactional"
    action: ConsentAction
    source: ConsentSource
    wording_version: str
    ip: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Segment:
    id: SegmentId
    name: str
    expression: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one batch of an import did."""

    created: int = 0
    updated: int = 0
    skipped: int = 0  # existing contacts left alone (skip-existing)
    subscribed: int = 0  # memberships added or confirmed


@dataclass(frozen=True, slots=True)
class ErasureResult:
    contact: bool  # a contact row was removed
    memberships: int
    consent_entries: int  # ledger lines whose personal data was replaced
    events: int  # event rows whose recipient was replaced
    suppressions: int  # clear-text suppression entries replaced by the hashed one


@dataclass(frozen=True, slots=True)
class ContactData:
    """Everything held about one address (GDPR Art. 15 / 20 export)."""

    email: str
    contact: Contact | None
    memberships: Sequence[tuple[MailingList, Membership]]
    consent: Sequence[ConsentEntry]
    events: Sequence[Event]
    suppressions: Sequence[Suppression]


# ---- segment filter syntax tree (marketing.segments parses; storage compiles) -----------------


class SegmentError(DomainError):
    """A filter expression that cannot be used; `position` is the 1-based column of the fault."""

    http_status = 422

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"column {position}: {message}")
        self.reason = message
        self.position = position


class Field(enum.StrEnum):
    EMAIL = "email"
    DOMAIN = "domain"
    NAME = "name"
    ATTRIBUTE = "attributes"


class CompareOp(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class Engagement(enum.StrEnum):
    OPENED = "opened"
    CLICKED = "clicked"


Scalar: TypeAlias = "str | int | float | bool"


@dataclass(frozen=True, slots=True)
class FieldRef:
    field: Field
    path: tuple[str, ...] = ()  # for ATTRIBUTE: attributes.a.b -> ("a", "b")


@dataclass(frozen=True, slots=True)
class Compare:
    ref: FieldRef
    op: CompareOp
    value: Scalar


@dataclass(frozen=True, slots=True)
class Contains:
    """A string that contains `value` (case-insensitive), or an array with `value` in it."""

    ref: FieldRef
    value: Scalar


@dataclass(frozen=True, slots=True)
class InValues:
    ref: FieldRef
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    ref: FieldRef


@dataclass(frozen=True, slots=True)
class InList:
    """A member (not unsubscribed) of the list with this name."""

    name: str


@dataclass(frozen=True, slots=True)
class Engaged:
    kind: Engagement
    days: int


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[SegmentFilter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[SegmentFilter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: SegmentFilter


SegmentFilter: TypeAlias = "Compare | Contains | InValues | Exists | InList | Engaged | And | Or | Not"
