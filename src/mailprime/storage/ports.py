"""Storage ports: what services, delivery and the CLI may ask of storage.

Implementations: `storage.sql.SqlStore` (SQLAlchemy Core on SQLite WAL or PostgreSQL).
Every method is async; implementations do blocking work off the event loop. Every write that
answers "accepted" to a peer (`accept`) returns only after its transaction is durable (fsync).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from mailprime.domain.ids import AccountId, BlobId, QueueId, RecipientId
from mailprime.domain.mail import (
    Acceptance,
    Account,
    Alias,
    DeliveryJob,
    Event,
    EventKind,
    Mailbox,
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


class MailStore(Protocol):
    """Accepting messages durably, and the mailboxes they land in."""

    async def accept(self, acceptance: Acceptance) -> None:
        """Stores the content once, files it into every local mailbox, queues every remote
        recipient and appends the events, in one transaction. Returns after the commit is
        durable. Concurrent calls share one commit (group commit). Raises StorageError."""
        ...

    async def read_blob(self, blob_id: BlobId) -> bytes: ...
    async def list_mailboxes(self, account_id: AccountId) -> Sequence[Mailbox]: ...
    async def get_mailbox(self, account_id: AccountId, name: str) -> Mailbox | None: ...
    async def list_messages(self, account_id: AccountId, mailbox: str) -> Sequence[StoredMessage]:
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


class Store(DirectoryStore, MailStore, QueueStore, EventLog, Protocol):
    """All storage ports in one object; the composition root builds one and passes it down."""

    async def close(self) -> None: ...


__all__ = [
    "DirectoryStore",
    "EventLog",
    "MailStore",
    "QueueStore",
    "RecipientId",
    "Store",
]
