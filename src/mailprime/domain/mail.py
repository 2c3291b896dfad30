"""Entities of the mail core: accounts, mailboxes, stored messages, the queue and its events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from mailprime.domain.ids import AccountId, BlobId, EventId, MailboxId, QueueId, RecipientId


class Priority(enum.IntEnum):
    """Queue priority classes: lower value is served first."""

    TRANSACTIONAL = 0
    NORMAL = 1
    BULK = 2


class RecipientStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its first attempt or a retry
    DELIVERED = "delivered"
    BOUNCED = "bounced"  # permanent failure
    EXPIRED = "expired"  # retried until the queue lifetime ran out


class EventKind(enum.StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    STORED = "stored"  # delivered into a local mailbox
    DSN_SENT = "dsn_sent"
    DELETED = "deleted"  # removed by an operator
    # Deliverability (issue 4). An asynchronous bounce (a DSN at the VERP address) is BOUNCED too,
    # with attrs source=async; a soft one is DEFERRED with source=async.
    COMPLAINED = "complained"  # an ARF report named the recipient (RFC 5965)
    SUPPRESSED = "suppressed"  # the address went onto the suppression list
    UNSUPPRESSED = "unsuppressed"  # an operator took it off
    # Engagement (issue 5): from the tracking and unsubscribe endpoints (web.tracking). An open
    # or click fetched by a machine (privacy proxy, scanner) carries attrs machine=yes.
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    # A message arrived at the MX whose In-Reply-To/References names one we sent (its signed
    # Message-ID: message.msgid_token; services.replies records it).
    REPLIED = "replied"


class DsnNotify(enum.StrEnum):
    """RFC 3461 section 4.1 NOTIFY values."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


class DsnRet(enum.StrEnum):
    """RFC 3461 section 4.3 RET values."""

    FULL = "FULL"
    HDRS = "HDRS"


@dataclass(frozen=True, slots=True)
class Domain:
    name: str


@dataclass(frozen=True, slots=True)
class Account:
    id: AccountId
    address: str
    password_hash: str
    created_at: datetime
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Alias:
    source: str  # full address, or "@domain" for a catch-all
    destination: str


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: MailboxId
    account_id: AccountId
    name: str
    uidvalidity: int
    uidnext: int
    special_use: str | None = None
    subscribed: bool = True
    # RFC 7162 CONDSTORE: raised by every change in the mailbox (append, flags, expunge).
    highestmodseq: int = 1


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message in a mailbox. `uid` is unique and ascending within the mailbox (RFC 3501 2.3.1.1)."""

    mailbox_id: MailboxId
    uid: int
    blob_id: BlobId
    size: int
    internal_date: datetime
    flags: frozenset[str] = frozenset()
    modseq: int = 1  # the mailbox's highestmodseq when this message last changed (RFC 7162)


class FlagMode(enum.Enum):
    """How STORE changes flags (RFC 3501 6.4.6): FLAGS, +FLAGS, -FLAGS."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """What STATUS, SELECT and POP3 STAT report about one mailbox, read in one transaction."""

    mailbox: Mailbox
    messages: int
    unseen: int  # messages without \Seen
    deleted: int  # messages with \Deleted
    size: int  # octets of all messages (RFC 8438 STATUS SIZE)
    # Highest modseq of an expunge in this mailbox (0: none yet); a session that saw an older
    # value must re-read the UID list to learn what vanished.
    expunged_modseq: int = 0


@dataclass(frozen=True, slots=True)
class FlagChange:
    """Result of a flag store: messages whose flags changed (with their new modseq), and the
    UIDs refused because they changed after UNCHANGEDSINCE (RFC 7162 3.1.3)."""

    changed: tuple[StoredMessage, ...]
    modified: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyResult:
    """RFC 4315 COPYUID: the destination's UIDVALIDITY and source->destination UID pairs."""

    uidvalidity: int
    uid_pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class AccountUsage:
    """RFC 9208 QUOTA resources of one account: STORAGE in octets, MESSAGE count."""

    storage: int
    messages: int


@dataclass(frozen=True, slots=True)
class EnvelopeRecipient:
    address: str
    notify: frozenset[DsnNotify] = frozenset()  # empty: not given (default FAILURE)
    orcpt: str | None = None  # RFC 3461 ORCPT, "addr-type;xtext"


@dataclass(frozen=True, slots=True)
class LocalDelivery:
    """Put the accepted message into a mailbox of a local account."""

    account_id: AccountId
    recipient: str
    mailbox: str = "INBOX"


@dataclass(frozen=True, slots=True)
class SpooledContent:
    """Message content too large to hold in memory: `prefix` (the trace headers a service put in
    front), then the `body_size` octets of a spool file that storage has already written and
    fsynced. `ticket` is storage's name for that file (from `MailStore.new_spool_writer`); the
    store adopts the file when it commits the acceptance, or deletes it when the accept fails.
    """

    ticket: str
    body_size: int
    prefix: bytes = b""
    body_8bit: bool = False  # the file holds an octet above 127

    @property
    def size(self) -> int:
        return len(self.prefix) + self.body_size

    def with_prefix(self, data: bytes) -> SpooledContent:
        return replace(self, prefix=data + self.prefix)


# A message as services hand it to storage: small ones as bytes, large ones already spooled.
MessageContent = bytes | SpooledContent


def prepend(data: bytes, content: MessageContent) -> MessageContent:
    """`data` (header lines) followed by `content`, without copying a spooled body."""
    if isinstance(content, SpooledContent):
        return content.with_prefix(data)
    return data + content


def content_size(content: MessageContent) -> int:
    return content.size if isinstance(content, SpooledContent) else len(content)


def content_is_8bit(content: MessageContent) -> bool:
    """Whether any octet is above 127 (RFC 6152: such a body needs BODY=8BITMIME to be relayed
    as is). For spooled content the writer noted it while the body streamed past."""
    if isinstance(content, SpooledContent):
        return content.body_8bit or not content.prefix.isascii()
    return not content.isascii()


@dataclass(frozen=True, slots=True)
class Acceptance:
    """Everything one accepted message becomes, committed atomically by `MailStore.accept`.

    `content` is the full message as it will be stored (trace headers already prepended): bytes,
    or for a large message a `SpooledContent` whose body is already in a spool file.
    """

    queue_id: QueueId
    content: MessageContent
    sender: str  # envelope sender; "" is the null reverse-path
    local: tuple[LocalDelivery, ...] = ()
    remote: tuple[EnvelopeRecipient, ...] = ()
    priority: Priority = Priority.NORMAL
    dsn_ret: DsnRet | None = None
    dsn_envid: str | None = None
    smtputf8: bool = False
    source: str = "smtp"  # listener role or api, for logs
    # RFC 8689: MAIL FROM ... REQUIRETLS was given (relay only over verified TLS to hops that
    # offer REQUIRETLS), or "TLS-Required: No" without it (ignore the recipient's MTA-STS).
    require_tls: bool = False
    tls_optional: bool = False
    client: str = ""  # peer description, for logs and events

    @property
    def size(self) -> int:
        return content_size(self.content)

    @property
    def body_8bit(self) -> bool:
        return content_is_8bit(self.content)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: QueueId
    sender: str
    blob_id: BlobId
    size: int
    priority: Priority
    created_at: datetime
    expires_at: datetime
    dsn_ret: DsnRet | None = None
    dsn_envid: str | None = None
    smtputf8: bool = False
    body_8bit: bool = False  # content has octets above 127: relay with BODY=8BITMIME (RFC 6152)
    require_tls: bool = False  # RFC 8689 REQUIRETLS (see Acceptance)
    tls_optional: bool = False  # RFC 8689 "TLS-Required: No" (see Acceptance)
    # The reverse-path to send in MAIL FROM when it differs from `sender` (a VERP address, set
    # per recipient at delivery, never stored): `sender` stays the sender that IP pools,
    # DSNs and events go by.
    return_path: str | None = None

    @property
    def wire_sender(self) -> str:
        return self.sender if self.return_path is None else self.return_path


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    id: RecipientId
    queue_id: QueueId
    address: str
    domain: str
    status: RecipientStatus
    attempts: int
    next_attempt_at: datetime
    last_reply: str = ""
    notify: frozenset[DsnNotify] = frozenset()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One message to one destination domain: the unit a delivery worker claims and attempts."""

    message: QueuedMessage
    domain: str
    recipients: tuple[QueueRecipient, ...]


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """What `MailStore.accept` hands back. `jobs`: when the caller asked for a lease at accept,
    the remote recipients as delivery jobs (one per destination domain), already leased to it,
    so the local worker can run them without a claim transaction; empty otherwise."""

    jobs: tuple[DeliveryJob, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What happened to one recipient in one attempt."""

    recipient_id: RecipientId
    status: RecipientStatus  # PENDING means deferred (temporary failure)
    reply: str  # remote reply or local reason, one line
    remote_host: str = ""
    next_attempt_at: datetime | None = None  # for deferrals
    # The next hop offered DSN and so was handed NOTIFY/ORCPT: it reports SUCCESS itself, and
    # we owe no "relayed" DSN (RFC 3461 5.2.1 and 5.2.2).
    remote_dsn: bool = False
    # More facts for the outcome's event (delivery.bounce_policy: the bounce's reason, hard or
    # soft, the enhanced status, source=sync), appended to the attrs record_outcomes writes.
    attrs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    id: EventId
    at: datetime
    kind: EventKind
    queue_id: QueueId | None
    recipient: str | None
    detail: str = ""
    attrs: tuple[tuple[str, str], ...] = field(default=())
