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
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.audience import (
    Addressee,
    Attributes,
    ConsentAction,
    ConsentEntry,
    ConsentEvidence,
    Contact,
    ContactData,
    ContactInput,
    ErasureResult,
    ImportMode,
    ImportResult,
    MailingList,
    Membership,
    MembershipStatus,
    OptIn,
    Segment,
    SegmentFilter,
)
from mailprime.domain.campaigns import (
    Campaign,
    CampaignCounters,
    CampaignDraft,
    CampaignStats,
    CampaignStatus,
    PauseReason,
    SendRecord,
    SendStatus,
)
from mailprime.domain.deliverability import MtaStsPolicyRecord, Suppression, TlsResultKey
from mailprime.domain.dkim import DkimKey
from mailprime.domain.ids import (
    AccountId,
    ApiKeyId,
    BlobId,
    CampaignId,
    ContactId,
    ListId,
    MailboxId,
    QueueId,
    RecipientId,
    SegmentId,
    TemplateId,
)
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
from mailprime.domain.messaging import (
    DeliveryStatus,
    IdempotencyClaim,
    IdempotencyRecord,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryId,
    WebhookId,
    WebhookJob,
)
from mailprime.domain.templates import Template, TemplateFields


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
    read without the cost of a whole `StoredMessage` (dates, modseqs) for every message. Nothing
    of its content's row: on SQLite a column after the inline content is reached through the
    content's overflow pages, which cost a login milliseconds (the line form comes with the
    content instead: `WireContent`)."""

    uid: int
    size: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class WireContent:
    """A message's content as `message_wire_contents` reads it for sending: the octets (or the
    blob id of a spool file) with the `LineForm` found when they were stored (None: not known)
    and, for DOT_LINES, the offsets of the lines that start with "." when the store kept them
    (None: find them)."""

    content: bytes | BlobId
    line_form: LineForm | None = None
    dot_lines: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class AddressFacts:
    """What the send gate reads about one address (AudienceStore.send_gate_facts)."""

    suppression: Suppression | None  # the entry that applies: a global one first
    invalid: str = ""  # why the address is not one (InvalidAddress's message); "" if it is
    contact_id: ContactId | None = None  # None: no contact has the address
    memberships: Mapping[ListId, MembershipStatus] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GateFacts:
    """The send gate's reads for a batch of addresses, made in one transaction."""

    lists: Mapping[ListId, MailingList]  # those of the lists asked about that exist
    addresses: Sequence[AddressFacts]  # one per address asked, in the same order


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
        durable. Concurrent calls share one commit (group commit). Raises StorageError, and
        AlreadyExists for a queue id accepted before (queued, or its QUEUED/STORED event is
        there): a queue id is accepted once, local-only messages included.

        With `lease_to`, the remote recipients are written already leased to that owner until
        now + lease_seconds, and returned as `AcceptResult.jobs` (one per destination domain):
        the caller's worker runs them directly, with no claim. If the owner dies, the lease
        expires (or is reclaimed) like one taken by `claim_due`."""
        ...

    async def accept_many(self, acceptances: Sequence[Acceptance]) -> None:
        """`accept` for a batch (campaign dispatch), in one durable transaction: all are
        accepted or none is (a queue id already used fails the whole call with AlreadyExists,
        or StorageError when the queue's primary key finds it; accept them one by one to find
        which). Keep batches bounded: the contents are written in that one transaction.
        Events as `accept` writes them (QUEUED per recipient)."""
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

    async def sweep_spool(self) -> int:
        """Deletes content files that no message names any more and that are old enough that
        no write can still be about to commit them (left by writes that failed or were cut
        short); returns how many. Done when the store opens, and periodically by the server."""
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

    async def message_wire_contents(self, mailbox_id: MailboxId, first_uid: int,
                                    last_uid: int) -> Mapping[int, WireContent]:
        """`message_contents` with each content's line form (POP3's RETR sends it by that)."""
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
        `window_start` (this one included); older ones are forgotten. Concurrent calls for
        one address (any process, any node) are counted one after the other."""
        ...

    async def purge_soft_bounces(self, before: datetime) -> int:
        """Forgets the soft bounces of every address older than `before`; returns how many."""
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
    """Contacts, lists, memberships, the consent ledger and segments (issue 5), and retention.

    Addresses are looked up by their key (domain.audience: the whole address lower-cased, the
    domain an A-label); every method taking an address raises InvalidAddress for a bad one.
    A membership change writes its consent ledger line in the same transaction. Pages are keyset
    pages: pass the last contact id seen as `after` (None: from the start), at most 10,000 rows.
    """

    async def add_contact(self, item: ContactInput) -> Contact:
        """Raises AlreadyExists if the address is a contact already."""
        ...

    async def get_contact(self, email: str) -> Contact | None: ...
    async def get_contact_by_id(self, contact_id: ContactId) -> Contact | None: ...

    async def update_contact(self, contact_id: ContactId, *, name: str | None = None,
                             attributes: Attributes | None = None) -> Contact:
        """Replaces the name and/or the attributes given. NotFound if no such contact."""
        ...

    async def record_engagement(self, contact_id: ContactId, *, opened_at: datetime | None = None,
                                clicked_at: datetime | None = None) -> None:
        """Tracking's note of the last open/click (what segments' "opened within" reads)."""
        ...

    async def contacts_page(self, *, segment: SegmentFilter | None = None,
                            after: ContactId | None = None, limit: int = 1000) -> Sequence[Contact]:
        """Every contact (matching `segment`), by id: export and listings."""
        ...

    async def count_contacts(self, segment: SegmentFilter | None = None) -> int: ...

    async def upsert_contacts(self, items: Sequence[ContactInput], *, mode: ImportMode,
                              list_id: ListId | None = None,
                              status: MembershipStatus = MembershipStatus.UNCONFIRMED,
                              evidence: ConsentEvidence) -> ImportResult:
        """One import batch (distinct addresses, ~1,000), in one transaction: new contacts
        created, existing ones updated (attributes merged) or skipped per `mode`; with
        `list_id`, each added to the list with `status` (an unconfirmed membership is confirmed
        by a CONFIRMED import; an unsubscribed one is never renewed), with its ledger lines."""
        ...

    async def create_list(self, name: str, *, description: str = "",
                          opt_in: OptIn = OptIn.DOUBLE) -> MailingList:
        """Raises AlreadyExists for a name in use."""
        ...

    async def get_list(self, name: str) -> MailingList | None: ...
    async def get_list_by_id(self, list_id: ListId) -> MailingList | None: ...

    async def list_lists(self) -> Sequence[tuple[MailingList, Mapping[MembershipStatus, int]]]:
        """Every list by name, with its member count per status."""
        ...

    async def delete_list(self, name: str) -> int:
        """Removes the list and its memberships (the ledger keeps its lines); returns how many
        members it had. NotFound if no such list."""
        ...

    async def update_list(self, list_id: ListId, *, name: str | None = None,
                          description: str | None = None,
                          opt_in: OptIn | None = None) -> MailingList:
        """Changes what is given. NotFound; AlreadyExists for a name in use; Conflict for
        double -> single opt-in while a member is unconfirmed (people who never confirmed
        would become mailable). Single -> double is always allowed: it only mails fewer."""
        ...

    async def set_membership(self, contact_id: ContactId, list_id: ListId, *,
                             status: MembershipStatus, evidence: ConsentEvidence) -> Membership:
        """Subscribes, confirms or unsubscribes (adding the membership if needed) and records
        the act in the consent ledger; an unchanged status records nothing."""
        ...

    async def get_membership(self, contact_id: ContactId, list_id: ListId) -> Membership | None:
        ...

    async def contact_memberships(self, contact_id: ContactId
                                  ) -> Sequence[tuple[MailingList, Membership]]: ...

    async def list_members(self, list_id: ListId, *, status: MembershipStatus | None = None,
                           after: ContactId | None = None, limit: int = 1000
                           ) -> Sequence[tuple[Contact, Membership]]: ...

    async def record_consent(self, email: str, *, purpose: str, action: ConsentAction,
                             evidence: ConsentEvidence) -> None:
        """Appends a ledger line for a purpose that is not a list (e.g. "transactional")."""
        ...

    async def consent_entries(self, email: str) -> Sequence[ConsentEntry]:
        """The address's ledger lines, oldest first (those erased under its hash included)."""
        ...

    async def audience(self, list_ids: Sequence[ListId], *, segment: SegmentFilter | None = None,
                       after: ContactId | None = None, limit: int = 1000,
                       sending_domain: str = "") -> Sequence[Contact]:
        """A campaign's recipients, by id, each once however many of the lists it is on:
        confirmed members of double opt-in lists, members not unsubscribed of single opt-in
        lists, matching `segment`, never an address suppressed for `sending_domain` (global
        entries, that domain's, and hashed entries of erased addresses)."""
        ...

    async def audience_page(self, list_ids: Sequence[ListId], *,
                            segment: SegmentFilter | None = None,
                            after: ContactId | None = None, limit: int = 1000,
                            sending_domain: str = "") -> Sequence[Addressee]:
        """`audience`'s recipients as Addressees (what a send needs of each): a campaign's
        dispatch reads every recipient through this."""
        ...

    async def count_audience(self, list_ids: Sequence[ListId], *,
                             segment: SegmentFilter | None = None, sending_domain: str = "") -> int:
        ...

    async def send_gate_facts(self, addresses: Sequence[str], *, sending_domain: str,
                              list_ids: Sequence[ListId]) -> GateFacts:
        """For each address, in one read: the suppression entry that applies for
        `sending_domain` (as `find_suppression` finds it), whether it is an address at all,
        its contact, and its membership status in each of `list_ids`; and those lists. What
        marketing.gate.SendGate.check_many decides on, for a whole batch at once."""
        ...

    async def create_segment(self, name: str, expression: str) -> Segment:
        """Stores an expression the caller has parsed (marketing.segments). AlreadyExists."""
        ...

    async def get_segment(self, name: str) -> Segment | None: ...
    async def list_segments(self) -> Sequence[Segment]: ...
    async def delete_segment(self, name: str) -> bool: ...

    async def update_segment(self, segment_id: SegmentId, *, name: str | None = None,
                             expression: str | None = None) -> Segment:
        """Changes what is given (an expression the caller has parsed). NotFound;
        AlreadyExists for a name in use; Conflict for a new expression while a scheduled,
        sending or paused campaign uses the segment (its audience would change mid-way)."""
        ...

    async def contact_data(self, email: str, *, event_limit: int = 100_000) -> ContactData:
        """Everything held about the address (GDPR export), in one read."""
        ...

    async def erase_contact(self, email: str) -> ErasureResult:
        """GDPR erasure, in one transaction: the contact and its memberships removed, the ledger
        lines and events naming the address rewritten with its hash (the IP dropped), its
        suppression entries replaced by one hashed global entry (added even if it had none), so
        it is never mailed again. Mailboxes are not touched."""
        ...

    async def delete_events_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """Retention: deletes up to `limit` of the oldest events older than `cutoff`."""
        ...

    async def delete_finished_messages_before(self, cutoff: datetime, *,
                                              limit: int = 1_000) -> int:
        """Retention: deletes up to `limit` queue messages created before `cutoff` whose
        recipients are all final (delivered, bounced, expired), with their unshared content."""
        ...


class TemplateStore(Protocol):
    """Message templates for campaigns (issue 5). Names are unique (exactly as given)."""

    async def create_template(self, fields: TemplateFields) -> Template:
        """Raises AlreadyExists if the name is taken."""
        ...

    async def get_template(self, template_id: TemplateId) -> Template | None: ...

    async def get_template_by_name(self, name: str) -> Template | None: ...

    async def list_templates(self, *, limit: int = 1000) -> Sequence[Template]:
        """By name."""
        ...

    async def update_template(self, template_id: TemplateId, fields: TemplateFields) -> Template:
        """Replaces name and sources; NotFound, or AlreadyExists if the new name is taken."""
        ...

    async def delete_template(self, template_id: TemplateId) -> bool:
        """True if it existed."""
        ...


class ApiKeyStore(Protocol):
    """HTTP API keys, stored hashed, with their scopes (issue 5; domain.api_keys)."""

    async def add_api_key(self, name: str, prefix: str, secret_hash: str, scopes: frozenset[str],
                          created_at: datetime) -> ApiKey:
        """AlreadyExists if an unrevoked key has that name, or any key that prefix."""
        ...

    async def find_api_key(self, prefix: str) -> ApiKey | None:
        """The key with that prefix, revoked or not (the caller checks)."""
        ...

    async def list_api_keys(self, *, include_revoked: bool = False) -> Sequence[ApiKey]:
        """Oldest first."""
        ...

    async def revoke_api_key(self, name_or_prefix: str, at: datetime) -> ApiKey:
        """Revokes the unrevoked key with that name or prefix; NotFound if none."""
        ...

    async def touch_api_key(self, key_id: ApiKeyId, at: datetime, min_interval: float) -> bool:
        """Sets the key's last use to `at` unless it was set less than `min_interval` seconds
        before (so a busy key is not a write per request); True if it was set."""
        ...


class CampaignStore(Protocol):
    """Campaigns and their per-recipient send records (issue 5; domain.campaigns). Status
    changes go through domain.campaigns.transition inside the write (IllegalTransition)."""

    async def create_campaign(self, draft: CampaignDraft) -> Campaign:
        """A new draft. AlreadyExists if the name is taken."""
        ...

    async def get_campaign(self, campaign_id: CampaignId) -> Campaign | None: ...
    async def get_campaign_by_name(self, name: str) -> Campaign | None: ...

    async def list_campaigns(self, *, status: CampaignStatus | None = None,
                             limit: int = 1000, after: CampaignId | None = None
                             ) -> Sequence[Campaign]:
        """Oldest (lowest id) first; `after`: a keyset page from the id after that one."""
        ...

    async def update_campaign(self, campaign_id: CampaignId, draft: CampaignDraft, *,
                              only_from: frozenset[CampaignStatus] | None = None) -> Campaign:
        """Replaces the campaign's settings by the draft's (status, times and sends stay).
        Only in domain.campaigns.EDITABLE states and, with `only_from`, only in those (the
        status the caller checked the change for), checked inside the write: else
        IllegalTransition. NotFound; AlreadyExists if the new name is taken."""
        ...

    async def set_campaign_status(self, campaign_id: CampaignId, to: CampaignStatus, *,
                                  reason: PauseReason | None = None, detail: str = "",
                                  scheduled_at: datetime | None = None,
                                  only_from: frozenset[CampaignStatus] | None = None,
                                  unchanged_since: datetime | None = None,
                                  template_unchanged_since: datetime | None = None) -> Campaign:
        """Moves the campaign (and returns it moved); with `only_from`, only if its status is
        one of those (else it is returned unchanged); with `unchanged_since`, only if its
        `updated_at` is still that (else IllegalTransition: it was changed since the caller
        checked it), and with `template_unchanged_since` likewise its template's. A move to
        cancelled settles, in the same write, the pending rows no dispatcher holds
        (`settle_cancelled`). NotFound, IllegalTransition."""
        ...

    async def delete_campaign(self, campaign_id: CampaignId, *,
                              only_from: frozenset[CampaignStatus] | None = None) -> bool:
        """True if it existed. With `only_from`, a campaign in another status is kept and
        IllegalTransition raised (checked inside the write)."""
        ...

    async def due_campaigns(self, now: datetime) -> Sequence[Campaign]:
        """Campaigns sending, and those scheduled for `now` or earlier."""
        ...

    async def claim_campaign(self, campaign_id: CampaignId, owner: str, now: datetime,
                             until: datetime) -> bool:
        """Leases a sending campaign to `owner` until `until` (renewing its own lease) unless
        another owner's lease is still running at `now`; True if `owner` holds it."""
        ...

    async def release_campaign(self, campaign_id: CampaignId, owner: str) -> None: ...

    async def record_sends(self, campaign_id: CampaignId,
                           rows: Sequence[SendRecord]) -> Sequence[SendRecord]:
        """Inserts the rows of contacts that have none in this campaign (one per campaign and
        contact, ever), durably; returns each given contact's row as it now is."""
        ...

    async def queue_sends(self, campaign_id: CampaignId, rows: Sequence[SendRecord],
                          acceptances: Sequence[Acceptance], cursor: ContactId | None) -> None:
        """In one durable transaction: `rows` (each QUEUED row's message is among
        `acceptances`, under its queue id; the others are SKIPPED or FAILED), the messages,
        and the audience cursor to `cursor`; all or none. A Conflict when a contact of `rows`
        already has a row in the campaign (an earlier run's: record_sends and settle_sends
        then), AlreadyExists when a queue id is taken; nothing is written then."""
        ...

    async def settle_sends(self, campaign_id: CampaignId,
                           updates: Sequence[tuple[ContactId, SendStatus, str, str]],
                           cursor: ContactId | None = None) -> None:
        """Pending rows to (status, reason, detail); the audience cursor to `cursor`."""
        ...

    async def settle_cancelled(self, campaign_id: CampaignId) -> int:
        """Settles a cancelled campaign's pending rows when no dispatcher holds it (accepted
        -> queued, else failed "cancelled"); 0 while one does. Returns how many."""
        ...

    async def cancelled_with_pending(self) -> Sequence[CampaignId]:
        """Cancelled campaigns that still have pending rows."""
        ...

    async def pending_sends(self, campaign_id: CampaignId, *, after: ContactId | None = None,
                            limit: int = 1000) -> Sequence[SendRecord]:
        """Pending rows by contact id (keyset pages)."""
        ...

    async def get_send(self, campaign_id: CampaignId, contact_id: ContactId) -> SendRecord | None:
        ...

    async def list_sends(self, campaign_id: CampaignId, *, status: SendStatus | None = None,
                         after: ContactId | None = None, limit: int = 1000
                         ) -> Sequence[SendRecord]:
        """Send rows by contact id (keyset pages), of one status or all."""
        ...

    async def accepted_queue_ids(self, queue_ids: Sequence[QueueId]) -> set[QueueId]:
        """Those of `queue_ids` that an accept committed (queued now, or its QUEUED or STORED
        event: a message for local mailboxes only is never in the queue)."""
        ...

    async def campaign_counters(self, campaign_id: CampaignId) -> CampaignCounters:
        """Sends by status; contacts hard-bounced and complaining (events of the sends)."""
        ...

    async def campaign_stats(self, campaign_id: CampaignId) -> CampaignStats: ...


class MessagingStore(Protocol):
    """API idempotency records, webhooks and their delivery log (issue 5; domain.messaging)."""

    async def claim_idempotency_key(self, api_key_id: ApiKeyId, key: str, request_hash: str, *,
                                    now: datetime, stale_before: datetime,
                                    expired_before: datetime,
                                    queue_id: QueueId | None = None) -> IdempotencyClaim:
        """Owned: the caller now holds (key, api_key_id) and must complete or release it; a
        new record takes `queue_id`, the id its message must be accepted under. Else the
        record holding it. A pending record of the same request older than `stale_before` is
        taken over (owned), keeping its queue id: its dead owner's message, if accepted, is
        under it. A record older than `expired_before` is forgotten first."""
        ...

    async def prepare_idempotency_key(self, api_key_id: ApiKeyId, key: str, body: str, *,
                                      claimed_at: datetime) -> None:
        """Stores, on the owner's pending record, the response it will give once its message
        is accepted (written before the accept: a retry that finds it accepted answers so).
        `claimed_at` is the created_at of the caller's claim: Conflict if the record was
        claimed since (taken over: the caller must not accept)."""
        ...

    async def complete_idempotency_key(self, api_key_id: ApiKeyId, key: str, status: int,
                                       body: str, *, claimed_at: datetime | None = None) -> bool:
        """Stores the response on a record still pending; with `claimed_at`, only if the
        caller's claim (its created_at) still holds it. False when it did not: a completed
        record is never overwritten, and a request taken over by a retry does not complete
        what the retry now owns."""
        ...

    async def idempotency_record(self, api_key_id: ApiKeyId, key: str
                                 ) -> IdempotencyRecord | None:
        """The record of (key, api_key_id) as it stands, pending or done; None without one."""
        ...

    async def release_idempotency_key(self, api_key_id: ApiKeyId, key: str, *,
                                      claimed_at: datetime) -> None:
        """Forgets a pending record (its request failed before it sent anything), unless it
        was claimed since `claimed_at` (its claim's created_at) by another request."""
        ...

    async def purge_idempotency_keys(self, before: datetime) -> int:
        """Forgets records created before `before`; returns how many."""
        ...

    async def add_webhook(self, url: str, secret: str, events: frozenset[str], *, active: bool,
                          description: str, created_at: datetime) -> Webhook:
        """A new webhook; it gets the events appended from now on."""
        ...

    async def get_webhook(self, webhook_id: WebhookId) -> Webhook | None: ...

    async def list_webhooks(self) -> Sequence[Webhook]:
        """Oldest first."""
        ...

    async def update_webhook(self, webhook_id: WebhookId, *, url: str, events: frozenset[str],
                             active: bool, description: str) -> Webhook:
        """Replaces the fields; NotFound if no such webhook."""
        ...

    async def delete_webhook(self, webhook_id: WebhookId) -> bool:
        """With its delivery log; True if it existed."""
        ...

    async def enqueue_webhook_events(self, now: datetime, batch: int) -> int:
        """Makes a pending delivery (due `now`) for each event appended since each active
        webhook last looked, of a kind it wants; at most `batch` events per webhook per call.
        Returns the deliveries made."""
        ...

    async def claim_webhook_deliveries(self, now: datetime, limit: int,
                                       lease_until: datetime) -> Sequence[WebhookJob]:
        """Up to `limit` due deliveries, leased (not due again) until `lease_until`; no two
        callers (processes, nodes) get the same one."""
        ...

    async def record_webhook_attempt(self, delivery_id: WebhookDeliveryId, *, at: datetime,
                                     status: DeliveryStatus, attempts: int,
                                     next_attempt_at: datetime | None, status_code: int | None,
                                     response: str) -> None:
        """The outcome of one attempt (the response excerpt is cut to 1000 characters)."""
        ...

    async def list_webhook_deliveries(self, webhook_id: WebhookId, *, limit: int = 100,
                                      status: DeliveryStatus | None = None
                                      ) -> Sequence[WebhookDelivery]:
        """The delivery log of a webhook, newest first."""
        ...


class Store(DirectoryStore, MailStore, MailboxStore, QueueStore, EventLog, DkimKeyStore,
            SuppressionStore, SendingIpStore, MtaStsStore, AudienceStore, TemplateStore,
            ApiKeyStore, CampaignStore, MessagingStore, Protocol):
    """All storage ports in one object; the composition root builds one and passes it down."""

    async def close(self) -> None: ...


__all__ = [
    "ApiKeyStore",
    "AudienceStore",
    "BlobReader",
    "CampaignStore",
    "DirectoryStore",
    "DkimKeyStore",
    "EventLog",
    "LineForm",
    "ListedMessage",
    "MailStore",
    "MailboxStore",
    "MessagingStore",
    "MtaStsStore",
    "QueueStore",
    "RecipientId",
    "SendingIpStore",
    "SpoolWriter",
    "Store",
    "SuppressionStore",
    "TemplateStore",
    "WireContent",
]
