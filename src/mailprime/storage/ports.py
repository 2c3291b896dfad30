"""Storage ports: what services, delivery and the CLI may ask of storage.

Implementations: `storage.sql.SqlStore` (SQLAlchemy Core on SQLite WAL or PostgreSQL).
Every method is async (or, for `new_spool_writer` and `open_blob`, returns an object whose I/O
methods are); implementations do blocking work off the event loop. Every write that
answers "accepted" to a peer (`accept`) returns only after its transaction is durable (fsync).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

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


class Store(DirectoryStore, MailStore, MailboxStore, QueueStore, EventLog, Protocol):
    """All storage ports in one object; the composition root builds one and passes it down."""

    async def close(self) -> None: ...


__all__ = [
    "BlobReader",
    "DirectoryStore",
    "EventLog",
    "MailStore",
    "MailboxStore",
    "QueueStore",
    "RecipientId",
    "SpoolWriter",
    "Store",
]
