"""Storage ports: what services, delivery and the CLI may ask of storage.

Implementations: `storage.sql.SqlStore` (SQLAlchemy Core on SQLite WAL or PostgreSQL).
Every method is async (or, for `new_spool_writer` and `open_blob`, returns an object whose I/O
methods are); implementations do blocking work off the event loop. Every write that
answers "accepted" to a peer (`accept`) returns only after its transaction is durable (fsync).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from mailprime.domain.deliverability import MtaStsPolicyRecord, Suppression, TlsResultKey
from mailprime.domain.dkim import DkimKey
from mailprime.domain.ids import AccountId, BlobId, MailboxId, QueueId, RecipientId
from mailprime.domain.mail import (
    Acceptance,
    AcceptResult,
    Account,
    AccountUsage,
    Alias,
    CopyResult,
    DeliveryJob,
    Event,
    EventKind,
    FlagChange,
    FlagMode,
    Mailbox,
    MailboxStatus,
    MessageContent,
    QueuedMessage,
    QueueRecipient,
    RecipientOutcome,
    StoredMessage,
)


class LineForm(enum.IntEnum):
    """What a message's stored octets need before they go out as a multi-line body (POP3's
    RETR, RFC 1939 3: CRLF line ends, a line starting with "." sent with one more). Found where
    the content is written and kept with it, so a reader need not scan the octets each time it
    sends them; None where it is not known (content written before it was kept, or streamed to a
    spool file): the reader then checks the octets itself."""

    BARE_LF = 0  # some LF has no CR before it: the line ends are normalised, then dots stuffed
    DOT_LINES = 1  # every LF ends a CRLF, and some line starts with ".": only stuffed
    AS_STORED = 2  # every LF ends a CRLF and no line starts with ".": sent as stored


@dataclass(frozen=True, slots=True)
class ListedMessage:
    """A message as a maildrop listing (POP3's LIST and UIDL) needs it: a few columns of its row,
    read without the cost of a whole `StoredMessage` (dates, modseqs) for every message, and the
    `LineForm` of its content (None: not known) with, for DOT_LINES, the offsets of the lines
    that start with "." when the store kept them (None: find them)."""

    uid: int
    size: int
    flags: frozenset[str]
    line_form: LineForm | None = None
    dot_lines: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class MailboxSnapshot:
    """A mailbox's row and its messages read in one transaction (IMAP's SELECT and its catch-up
    between commands): `mailbox.highestmodseq` covers exactly the changes `messages` show."""

    mailbox: Mailbox
    expunged_modseq: int  # the modseq of the mailbox's last expunge (0: none yet)
    messages: Sequence[StoredMessage]


class DirectoryStore(Protocol):
    """Local domains, accounts and aliases."""

    async def add_domain(self, name: str) -> None: ...
    async def remove_domain(self, name: str) -> None: ...
    async def list_domains(self) -> Sequence[str]: ...
    async def is_local_domain(self, name: str) -> bool: ...

    async def add_account(self, address: str, password_hash: str) -> Account:
        """Creates the account and its INBOX (and the special-use folders)."""
        ...

    async def get_account(self, address: str) -> Account | None:
        """Looks an account up by address, case-insensitively in the local part."""
        ...

    async def get_account_by_id(self, account_id: AccountId) -> Account | None: ...
    async def list_accounts(self) -> Sequence[Account]: ...
    async def set_password(self, address: str, password_hash: str) -> None: ...
    async def remove_account(self, address: str) -> None: ...

    async def add_alias(self, source: str, destination: str) -> None: ...
    async def remove_alias(self, source: str, destination: str | None = None) -> None: ...
    async def list_aliases(self) -> Sequence[Alias]: ...
    async def resolve_aliases(self, address: str) -> Sequence[str]:
        """Destinations of an alias (exact address first, then the "@domain" catch-all)."""
        ...


class SpoolWriter(Protocol):
    """A message body on its way in, with memory bounded by the store's inline limit: the first
    octets stay in memory; past the limit everything goes to a temporary spool file.

    Calls are sequential (one writer per message). `finish` fsyncs and returns the content to put
    in an `Acceptance` (bytes, or SpooledContent naming the file); `discard` deletes what was
    written, and is safe to call at any time, also after `finish` (it then removes the file
    only if no accept adopted it)."""

    @property
    def size(self) -> int:
        """Octets written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Raises StorageError (disk full, store closed); the writer is then discarded."""
        ...

    async def finish(self) -> MessageContent: ...
    async def discard(self) -> None: ...


class BlobReader(Protocol):
    """Stored content, read in pieces. Valid inside `MailStore.open_blob`'s context only; it
    stays readable even if the message is deleted meanwhile."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The content from its first octet, in pieces of bounded size; each call starts anew
        (a delivery retried on the next MX host sends it again)."""
        ...

    async def read_head(self, limit: int) -> bytes:
        """The first `limit` octets (all of them if the content is shorter)."""
        ...


class MailStore(Protocol):
    """Accepting messages durably, and the mailboxes they land in."""

    def new_spool_writer(self) -> SpoolWriter:
        """A writer for one incoming body (no I/O until the body outgrows memory)."""
        ...

    async def accept(self, acceptance: Acceptance, *, lease_to: str | None = None,
                     lease_seconds: float = 0.0) -> AcceptResult:
        """Stores the content once, files it into every local mailbox, queues every remote
        recipient and appends the events, in one transaction. Returns after the commit is
        durable. Concurrent calls share one commit (group commit). Raises StorageError.

        With `lease_to`, the remote recipients are written already leased to that owner until
        now + lease_seconds, and returned as `AcceptResult.jobs` (one per destination domain):
        the caller's worker runs them directly, with no claim. If the owner dies, the lease
        expires (or is reclaimed) like one taken by `claim_due`."""
        ...

    async def read_blob(self, blob_id: BlobId) -> bytes:
        """The whole content in memory: for small messages and tests; stream with open_blob."""
        ...

    def open_blob(self, blob_id: BlobId) -> AbstractAsyncContextManager[BlobReader]:
        """`async with store.open_blob(id) as blob:` streams the content. Raises NotFound."""
        ...

    async def list_mailboxes(self, account_id: AccountId) -> Sequence[Mailbox]: ...
    async def get_mailbox(self, account_id: AccountId, name: str) -> Mailbox | None: ...
    async def list_messages(self, account_id: AccountId, mailbox: str) -> Sequence[StoredMessage]:
        ...


class MailboxStore(Protocol):
    """Mailboxes as IMAP and POP3 see them (RFC 3501/9051 data model, RFC 7162 modseqs).

    Names are Unicode strings with "/" as the hierarchy delimiter; "INBOX" is case-insensitive.
    Every write is one durable transaction (fsynced before it returns, like `accept`) and raises
    the mailbox's `highestmodseq`; after the commit the store wakes `wait_for_change` waiters in
    this process. Errors: NotFound (no such mailbox/message), AlreadyExists, StorageError.
    """

    async def create_mailbox(self, account_id: AccountId, name: str,
                             special_use: str | None = None) -> Mailbox:
        """Creates `name` (not its missing parents: the caller creates those first)."""
        ...

    async def delete_mailbox(self, account_id: AccountId, name: str) -> None:
        """Deletes the mailbox and its messages (the caller refuses INBOX and \\Noselect rules)."""
        ...

    async def rename_mailbox(self, account_id: AccountId, old: str, new: str) -> None:
        """Renames `old` and every `old/...` child (new UIDVALIDITY is not needed: UIDs stay).
        Renaming INBOX moves its messages into a new mailbox `new` and leaves INBOX empty
        (RFC 3501 6.3.5)."""
        ...

    async def set_subscribed(self, account_id: AccountId, name: str, subscribed: bool) -> None: ...

    async def mailbox_status(self, mailbox_id: MailboxId) -> MailboxStatus: ...

    async def messages(self, mailbox_id: MailboxId, *, changed_since: int = 0) -> Sequence[StoredMessage]:
        """Messages in UID order; with `changed_since`, only those whose modseq is greater."""
        ...

    async def message_listing(self, mailbox_id: MailboxId) -> Sequence[ListedMessage]:
        """UID, size, flags and content line form of every message, in UID order (`messages`
        without the rest)."""
        ...

    async def message_contents(self, mailbox_id: MailboxId, first_uid: int,
                               last_uid: int) -> Mapping[int, bytes | BlobId]:
        """The content of every message in the mailbox with `first_uid` <= UID <= `last_uid`, in
        one read, for a session about to send them (POP3's read-ahead): UID -> the content when
        it is stored in the database, or its blob's id when it is in a spool file (not read
        here: stream it with `open_blob`). UIDs only grow, so a caller that listed the mailbox
        once knows every message this can return (those it listed, less any expunged since,
        which are simply absent) and bounds what it reads by choosing the range."""
        ...

    def local_change_mark(self, mailbox_id: MailboxId) -> int:
        """No I/O: the highest modseq that this process has committed to the mailbox since the
        store opened (0 if none). While it stays the same, nothing changed the mailbox from this
        process; changes by other processes do not move it (read `mailbox_status` for those)."""
        ...

    async def append_message(self, mailbox_id: MailboxId, content: MessageContent, *,
                     flags: frozenset[str] = frozenset(), internal_date: datetime | None = None
                     ) -> StoredMessage:
        """Stores one message (bytes, or spooled content from `new_spool_writer`) durably."""
        ...

    async def store_flags(self, mailbox_id: MailboxId, uids: Sequence[int], mode: FlagMode,
                          flags: frozenset[str], *, unchanged_since: int | None = None) -> FlagChange:
        """Changes the flags of the given UIDs that exist (others are ignored). Messages whose
        flags end up the same are not in `changed` and keep their modseq."""
        ...

    async def expunge(self, mailbox_id: MailboxId, uids: Sequence[int] | None = None, *,
                      only_deleted: bool = True) -> Sequence[int]:
        """Removes messages (those flagged \\Deleted, limited to `uids` if given; POP3 passes
        only_deleted=False) and returns the UIDs removed, ascending."""
        ...

    async def copy_messages(self, source: MailboxId, uids: Sequence[int], target: MailboxId, *,
                            move: bool = False) -> CopyResult:
        """Copies (or, with move, moves in one transaction) the given UIDs, keeping flags and
        internal dates; the content is shared, not duplicated."""
        ...

    async def account_usage(self, account_id: AccountId) -> AccountUsage: ...

    async def wait_for_change(self, mailbox_id: MailboxId, known_modseq: int, timeout: float) -> int:
        """Returns the mailbox's highestmodseq as soon as it exceeds `known_modseq` (at once if it
        already does), or after `timeout` seconds with the current value. Changes made in this
        process wake waiters at once; changes by another process are seen by polling."""
        ...

    # -- IMAP's whole-mailbox reads --------------------------------------------------------------

    async def mailbox_snapshot(self, mailbox_id: MailboxId, *, changed_since: int = 0) -> MailboxSnapshot:
        """The mailbox's row and its messages in UID order (with `changed_since`, only those
        whose modseq is greater), in one read transaction: the same messages as `messages`,
        made without its per-row cost (messages with the same flags share one frozenset).
        NotFound when the mailbox is gone."""
        ...


class QueueStore(Protocol):
    """The outbound queue. Claims are leases so several workers (or nodes) never share a job."""

    async def claim_due(self, now: datetime, limit: int, owner: str,
                        lease_seconds: float) -> Sequence[DeliveryJob]:
        """Claims up to `limit` due jobs (one message × one destination domain), by priority
        then due time, leasing their recipients to `owner` until now + lease_seconds."""
        ...

    async def record_outcomes(self, job: DeliveryJob, outcomes: Sequence[RecipientOutcome],
                              now: datetime) -> None:
        """Applies per-recipient results, releases the lease and appends the events."""
        ...

    async def next_due_at(self) -> datetime | None:
        """When the earliest pending recipient becomes due (None: queue empty)."""
        ...

    async def release_leases(self, owner: str) -> None:
        """Hands back every job `owner` leased (graceful shutdown)."""
        ...

    async def lease_owners(self) -> Sequence[str]:
        """Owners currently holding leases (to find those of crashed processes)."""
        ...

    async def get_message(self, queue_id: QueueId) -> QueuedMessage | None: ...
    async def list_queue(self, limit: int = 1000) -> Sequence[tuple[QueuedMessage, Sequence[QueueRecipient]]]:
        ...
    async def get_recipients(self, queue_id: QueueId) -> Sequence[QueueRecipient]: ...
    async def retry_now(self, queue_id: QueueId | None, now: datetime) -> int:
        """Makes pending recipients of one message (or all, for None) due now; returns count."""
        ...
    async def delete_message(self, queue_id: QueueId) -> bool: ...
    async def finished_message_ids(self, limit: int) -> Sequence[QueueId]:
        """Messages whose recipients are all final (candidates for clean-up)."""
        ...


class EventLog(Protocol):
    async def append(self, kind: EventKind, queue_id: QueueId | None, recipient: str | None,
                     detail: str = "", attrs: Sequence[tuple[str, str]] = ()) -> None: ...
    async def list_events(self, queue_id: QueueId | None = None, limit: int = 1000) -> Sequence[Event]:
        ...


class DkimKeyStore(Protocol):
    """DKIM signing keys per domain and selector (domain.dkim explains their life). Domains are
    lower-case A-labels. Writes are durable when they return, like every write."""

    async def add_dkim_key(self, key: DkimKey) -> None:
        """Raises AlreadyExists if the domain has a key with that selector, retired or not."""
        ...

    async def list_dkim_keys(self, domain: str | None = None, *,
                             active_only: bool = False) -> Sequence[DkimKey]:
        """Keys of `domain` (all domains for None) by domain, then age; with `active_only`,
        only the active ones (what signing needs)."""
        ...

    async def activate_dkim_key(self, domain: str, selector: str) -> DkimKey:
        """In one transaction: the key becomes the active one of its domain and type, and the
        key it replaces stays published but inactive. NotFound if no such unretired key."""
        ...

    async def retire_dkim_key(self, domain: str, selector: str, when: datetime) -> DkimKey:
        """Marks the key retired (inactive, no longer published). NotFound if no such
        unretired key."""
        ...


class SuppressionStore(Protocol):
    """The suppression list (domain.deliverability) and the soft-bounce counts behind it."""

    async def suppress(self, entry: Suppression) -> bool:
        """Adds the entry; True if it is new. An address already suppressed in that scope keeps
        its first entry (the first evidence is the one that counts)."""
        ...

    async def unsuppress(self, address: str, scope: str | None = None) -> int:
        """Removes the address from `scope` (every scope for None); returns entries removed."""
        ...

    async def find_suppression(self, address: str, sending_domain: str = "") -> Suppression | None:
        """The entry that stops mail to `address` from `sending_domain`: a global one, else one
        scoped to that domain; None when the address may be mailed."""
        ...

    async def list_suppressions(self, scope: str | None = None, *,
                                limit: int = 1000) -> Sequence[Suppression]:
        """Newest first; `scope` None lists every scope."""
        ...

    async def record_soft_bounce(self, address: str, scope: str, at: datetime,
                                 window_start: datetime) -> int:
        """Notes one soft bounce of `address` and returns how many it has had since
        `window_start` (this one included); older ones are forgotten."""
        ...


class SendingIpStore(Protocol):
    """Messages sent per source address and day (UTC), for warm-up caps shared by processes."""

    async def add_ip_usage(self, day: date, counts: Mapping[str, int]) -> None:
        """Adds `counts` (ip -> messages) to the day's totals."""
        ...

    async def ip_usage(self, day: date) -> Mapping[str, int]: ...


class MtaStsStore(Protocol):
    """MTA-STS policies fetched (RFC 8461 5.1 cache) and TLS results for reports (RFC 8460)."""

    async def save_mta_sts_policy(self, policy: MtaStsPolicyRecord) -> None:
        """Inserts or replaces the domain's cached policy."""
        ...

    async def get_mta_sts_policy(self, domain: str) -> MtaStsPolicyRecord | None: ...

    async def add_tls_results(self, day: date, counts: Mapping[TlsResultKey, int]) -> None:
        """Adds `counts` to the day's totals."""
        ...

    async def tls_results(self, day: date) -> Sequence[tuple[TlsResultKey, int]]: ...


class AudienceStore(Protocol):
    """Contacts, lists, memberships, the consent ledger and segments (issue 5)."""


class TemplateStore(Protocol):
    """Message templates for campaigns (issue 5)."""


class ApiKeyStore(Protocol):
    """HTTP API keys, stored hashed, with their scopes (issue 5)."""


class Store(DirectoryStore, MailStore, MailboxStore, QueueStore, EventLog, DkimKeyStore,
            SuppressionStore, SendingIpStore, MtaStsStore, AudienceStore, TemplateStore,
            ApiKeyStore, Protocol):
    """All storage ports in one object; the composition root builds one and passes it down."""

    async def close(self) -> None: ...


__all__ = [
    "ApiKeyStore",
    "AudienceStore",
    "BlobReader",
    "DirectoryStore",
    "DkimKeyStore",
    "EventLog",
    "LineForm",
    "ListedMessage",
    "MailStore",
    "MailboxStore",
    "MtaStsStore",
    "QueueStore",
    "RecipientId",
    "SendingIpStore",
    "SpoolWriter",
    "Store",
    "SuppressionStore",
    "TemplateStore",
]
