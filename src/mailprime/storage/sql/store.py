"""SqlStore: the storage ports on SQLAlchemy Core, for SQLite (WAL) and PostgreSQL alike.

Blocking SQLAlchemy runs on threads, never on the event loop: every write goes to the one
group-commit writer thread (committer.py), every read to a small read pool. One writer per
process suits SQLite, which has a single write lock anyway, and lets unrelated writes (queue
claims, outcomes, events) share the fsync of the acceptances they are batched with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from mailprime.domain.clock import Clock, SystemClock
from mailprime.domain.deliverability import MtaStsPolicyRecord, Suppression, TlsResultKey
from mailprime.domain.dkim import DkimKey
from mailprime.domain.errors import DomainError, NotFound, StorageError
from mailprime.domain.ids import (
    AccountId,
    BlobId,
    MailboxId,
    QueueId,
    new_queue_id,
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
    SpooledContent,
    StoredMessage,
)
from mailprime.storage.ports import (
    BlobReader,
    ListedMessage,
    MailboxSnapshot,
    SpoolWriter,
    Store,
    WireContent,
)
from mailprime.storage.sql import (
    deliverability,
    directory,
    dkim_keys,
    mailbox_writes,
    mailstore,
    queue,
    snapshots,
)
from mailprime.storage.sql.accept import AcceptRecord, AcceptWriter, Lease
from mailprime.storage.sql.api_key_store import ApiKeySql
from mailprime.storage.sql.audience_store import AudienceSql
from mailprime.storage.sql.campaign_store import CampaignSql
from mailprime.storage.sql.changes import MailboxChanges
from mailprime.storage.sql.committer import CommitStats, GroupCommitter, as_storage_error
from mailprime.storage.sql.engines import reader_engine, writer_engine
from mailprime.storage.sql.folders import UidValidityClock
from mailprime.storage.sql.messaging_store import MessagingSql
from mailprime.storage.sql.migrate import upgrade_to_head
from mailprime.storage.sql.schema import blobs, mailboxes
from mailprime.storage.sql.spool import Spool
from mailprime.storage.sql.streams import (
    BufferedSpoolWriter,
    InlineBlob,
    SpooledBlob,
    close_read_file,
)
from mailprime.storage.sql.template_store import TemplateSql
from mailprime.storage.sql.urls import DatabaseUrl, parse_database_url
from mailprime.storage.sql.writelock import ProcessWriteLock

log = logging.getLogger("mailprime.storage")

R = TypeVar("R")

DEFAULT_QUEUE_LIFETIME = timedelta(days=5)
# Spool files younger than this are never swept: their row may be about to commit (in this or
# another worker process).
DEFAULT_SWEEP_GRACE = timedelta(hours=1)


# A transaction queueing at least this much content small enough to go inline (a campaign's
# batch: 100 messages of ~15 KB) writes it as one spool file instead (Spool.write_batch): once,
# not twice (WAL and checkpoint), and past the page cache. Below it, one file create and two
# fsyncs more cost more than they save.
BATCH_FILE_MIN = 64 * 1024


def _inline_bytes(record: AcceptRecord) -> int:
    """What an acceptance adds to the writer's transaction (spooled content is only a path)."""
    content = record.acceptance.content
    if isinstance(content, SpooledContent):
        return len(content.prefix)
    return 0 if record.spool_path else len(content)


@dataclass(frozen=True, slots=True)
class _BlobParts:
    """Where a blob's octets are: `data` inline, or `path` (a spool file) after `prefix`; in a
    shared batch file, the `size` octets from `offset`."""

    data: bytes | None
    path: str | None
    prefix: bytes
    offset: int | None
    size: int


def _blob_parts(conn: Connection, blob_id: BlobId) -> _BlobParts:
    row = conn.execute(select(blobs.c.data, blobs.c.path, blobs.c.prefix, blobs.c.file_offset,
                              blobs.c.size).where(blobs.c.id == blob_id)).first()
    if row is None:
        raise NotFound(f"no blob {blob_id}")
    return _BlobParts(bytes(row.data) if row.data is not None else None, row.path,
                      bytes(row.prefix) if row.prefix is not None else b"", row.file_offset,
                      row.size)


class SqlStore(AudienceSql, TemplateSql, ApiKeySql, CampaignSql, MessagingSql):
    """Implements storage.ports.Store (some ports through the mixins of storage/sql/*_store.py).
    Build it with `open_store`; finish with `close`."""

    def __init__(self, *, db: DatabaseUrl, writer: Engine, reader: Engine, spool: Spool,
                 inline_max: int, queue_lifetime: timedelta, clock: Clock, read_threads: int,
                 max_batch: int, spool_threads: int = 8) -> None:
        self.db = db
        self._writer_engine = writer
        self._reader_engine = reader
        self._spool = spool
        self._inline_max = inline_max
        self._clock = clock
        self._uidvalidity = UidValidityClock()
        accept_writer = AcceptWriter(dialect_name=writer.dialect.name, clock=clock,
                                     queue_lifetime=queue_lifetime, uidvalidity=self._uidvalidity)
        self._write_lock = (ProcessWriteLock(Path(db.url.database))
                            if db.backend == "sqlite" and db.url.database else None)
        self._accept_writer = accept_writer  # accept_many runs it as one op
        self._writer: GroupCommitter[AcceptRecord] = GroupCommitter(
            writer, accept_writer, weigh=_inline_bytes, max_batch=max_batch,
            write_lock=self._write_lock)
        self._pool = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="mailprime-read")
        # Spool file I/O (streamed bodies in and out) has its own threads, so that many large
        # messages moving at once never queue the database reads behind them.
        self._io_pool = ThreadPoolExecutor(max_workers=spool_threads,
                                           thread_name_prefix="mailprime-spool")
        self._changes = MailboxChanges()
        self._closed = False

    @property
    def stats(self) -> CommitStats:
        """Live group-commit counters (commits, accepted, ...)."""
        return self._writer.stats

    def _start(self) -> None:
        self._writer.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._writer.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_sync)

    def _shutdown_sync(self) -> None:
        self._pool.shutdown(wait=True)
        self._io_pool.shutdown(wait=True)
        self._writer_engine.dispose()
        self._reader_engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()

    # ---- plumbing ------------------------------------------------------------------------

    async def _read(self, fn: Callable[[Connection], R]) -> R:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._read_sync, fn)
        except RuntimeError as exc:  # the pool was shut down
            raise StorageError("store is closed") from exc

    def _read_sync(self, fn: Callable[[Connection], R]) -> R:
        try:
            with self._reader_engine.begin() as conn:
                return fn(conn)
        except DomainError:
            raise
        except Exception as exc:
            raise as_storage_error(exc) from exc

    def _io_job(self, fn: Callable[[], R]) -> asyncio.Future[R]:
        """Blocking spool file work handed to the spool threads (its future)."""
        try:
            return asyncio.get_running_loop().run_in_executor(self._io_pool, fn)
        except RuntimeError as exc:  # the pool was shut down
            raise StorageError("store is closed") from exc

    async def _io(self, fn: Callable[[], R]) -> R:
        """Runs blocking spool file work on the spool threads."""
        return await self._io_job(fn)

    async def _unlink(self, paths: Sequence[str]) -> None:
        """Removes spool files whose rows are gone; called only after that deletion committed."""
        if paths:
            await self._io(lambda: self._spool.remove_all(paths))

    async def _discard_unnamed(self, paths: Collection[str], failure: DomainError) -> None:
        """After a failed write: removes the spool files among `paths` that no row names.
        A failure does not always mean nothing committed — the answer to a COMMIT can be lost
        with the connection after the server committed, and the op retried alone is then
        refused for its own first attempt's rows — so the files are asked about, not assumed
        garbage. A StorageError leaves them all: the database may still be committing the
        transaction whose answer was lost (its rows not yet visible to a reader), and only a
        refusal (a conflict, a duplicate: the rows it met are committed and visible) proves
        what is there. The sweep removes what no row names an hour on."""
        if not paths or isinstance(failure, StorageError):
            return
        wanted = sorted(set(paths))
        try:
            named = await self._read(lambda c: set(c.execute(
                select(blobs.c.path).where(blobs.c.path.in_(wanted))).scalars()))
        except DomainError:
            return
        self._spool.remove_all([path for path in wanted if path not in named])

    async def _write_batch_file(self, hint: str, contents: Sequence[bytes]
                                ) -> list[tuple[str, int]]:
        """Spool.write_batch on the spool threads. Cancelled while the thread writes, the files
        it makes are removed when it is done (no row can name them: none was handed to the
        writer)."""
        job = self._io_job(lambda: self._spool.write_batch(hint, contents))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            def drop(done: asyncio.Future[list[tuple[str, int]]]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self._spool.remove_all({path for path, _ in done.result()})
            job.add_done_callback(drop)
            raise

    # ---- MailStore -----------------------------------------------------------------------

    def new_spool_writer(self) -> SpoolWriter:
        return BufferedSpoolWriter(self._spool, self._inline_max, self._io)

    async def _spool_content(self, acceptance: Acceptance) -> str | None:
        """The spool path of the acceptance's content, None when it goes inline.
        Durable on disk before the row naming it can commit (see spool.py): a streamed body
        was fsynced by its writer and is renamed into place here (the shard directory fsynced);
        a large body given as bytes is written out now."""
        content = acceptance.content
        if isinstance(content, SpooledContent):
            return await self._io(lambda: self._spool.adopt(
                content.ticket, acceptance.queue_id, content.body_size))
        if len(content) > self._inline_max:
            return await self._io(lambda: self._spool.write(acceptance.queue_id, content))
        return None

    async def accept(self, acceptance: Acceptance, *, lease_to: str | None = None,
                     lease_seconds: float = 0.0) -> AcceptResult:
        spool_path = await self._spool_content(acceptance)
        lease = Lease(lease_to, lease_seconds) if lease_to and acceptance.remote else None
        record = AcceptRecord(acceptance, spool_path, lease)
        try:
            await self._writer.submit(record)
        except DomainError as exc:
            if spool_path is not None:
                await self._discard_unnamed([spool_path], exc)
            raise
        # Filled by the writer thread before the commit that resolved our future.
        for mailbox_id, modseq in record.filed:
            self._changes.changed(MailboxId(mailbox_id), modseq)
        return AcceptResult(jobs=tuple(record.jobs))

    async def accept_many(self, acceptances: Sequence[Acceptance]) -> None:
        """All of `acceptances` in one transaction, all or none (see the port)."""
        await self._accept_together(acceptances)

    async def _accept_together(self, acceptances: Sequence[Acceptance],
                               before: Callable[[Connection], object] | None = None) -> None:
        """`acceptances` in one transaction, after `before` in the same one. The records go
        to the writer as one op instead of one bulk item each: no per-message future, and the
        group committer's `max_batch` does not cut the batch in several transactions."""
        records: list[AcceptRecord] = []
        inline_max = self._inline_max

        def write(conn: Connection) -> None:
            if before is not None:
                before(conn)
            if records:
                self._accept_writer(conn, records)

        # Contents small enough to go inline go together into one batch file instead when
        # there are enough of them (see BATCH_FILE_MIN).
        small = [(a, a.content) for a in acceptances
                 if isinstance(a.content, bytes) and len(a.content) <= inline_max]
        batched: dict[int, tuple[str, int]] = {}
        handed = False  # to the writer: from then on a failure may have committed
        try:
            if len(small) > 1 and sum(len(content) for _, content in small) >= BATCH_FILE_MIN:
                places = await self._write_batch_file(small[0][0].queue_id,
                                                      [content for _, content in small])
                batched = {id(a): place for (a, _), place in zip(small, places, strict=True)}
            for acceptance in acceptances:
                content = acceptance.content
                place = batched.get(id(acceptance))
                if place is not None:
                    records.append(AcceptRecord(acceptance, place[0], spool_offset=place[1]))
                    continue
                spool_path = (None if isinstance(content, bytes) and len(content) <= inline_max
                              else await self._spool_content(acceptance))
                records.append(AcceptRecord(acceptance, spool_path))
            if records or before is not None:
                handed = True
                await self._writer.run(write)
        except BaseException as exc:
            files = ({r.spool_path for r in records if r.spool_path is not None}
                     | {path for path, _ in batched.values()})
            if not handed:  # no row can name them
                self._spool.remove_all(files)
            elif isinstance(exc, DomainError):
                await self._discard_unnamed(files, exc)
            # Cancelled while the writer has the op: it may still commit; the sweep decides.
            raise
        for record in records:
            for mailbox_id, modseq in record.filed:
                self._changes.changed(MailboxId(mailbox_id), modseq)

    async def read_blob(self, blob_id: BlobId) -> bytes:
        def read(conn: Connection) -> bytes:
            parts = _blob_parts(conn, blob_id)
            if parts.data is not None:
                return parts.data
            return parts.prefix + self._spool.read(parts.path or "", parts.offset, parts.size)
        return await self._read(read)

    @asynccontextmanager
    async def open_blob(self, blob_id: BlobId) -> AsyncIterator[BlobReader]:
        parts = await self._read(lambda c: _blob_parts(c, blob_id))
        path = parts.path
        if path is None:
            yield InlineBlob(parts.data or b"")
            return
        # Opened once: the reader keeps the content even if the message is deleted meanwhile.
        file = await self._io(lambda: self._spool.open_read(path, parts.offset, parts.size))
        try:
            yield SpooledBlob(parts.prefix, file, self._io)
        finally:
            await close_read_file(file, self._io)

    async def list_mailboxes(self, account_id: AccountId) -> Sequence[Mailbox]:
        return await self._read(lambda c: mailstore.list_mailboxes(c, account_id))

    async def get_mailbox(self, account_id: AccountId, name: str) -> Mailbox | None:
        return await self._read(lambda c: mailstore.get_mailbox(c, account_id, name))

    async def list_messages(self, account_id: AccountId, mailbox: str) -> Sequence[StoredMessage]:
        return await self._read(lambda c: mailstore.list_messages(c, account_id, mailbox))

    async def sweep_spool(self, older_than: timedelta = DEFAULT_SWEEP_GRACE) -> int:
        """Deletes spool files no blob row references (left by accepts that never committed)."""
        referenced = await self._read(
            lambda c: set(c.execute(select(blobs.c.path).where(blobs.c.path.is_not(None))).scalars()))
        try:
            return await self._io(lambda: self._spool.sweep(referenced,
                                                             older_than.total_seconds()))
        except OSError as exc:  # a directory it cannot read, a file it cannot remove
            raise StorageError(f"spool sweep failed: {exc}") from exc

    # ---- MailboxStore --------------------------------------------------------------------

    async def create_mailbox(self, account_id: AccountId, name: str,
                             special_use: str | None = None) -> Mailbox:
        now = self._clock.now()
        return await self._writer.run(lambda c: mailbox_writes.create_mailbox(
            c, account_id, name, special_use, now=now, uidvalidity=self._uidvalidity))

    async def delete_mailbox(self, account_id: AccountId, name: str) -> None:
        await self._unlink(await self._writer.run(
            lambda c: mailbox_writes.delete_mailbox(c, account_id, name)))

    async def rename_mailbox(self, account_id: AccountId, old: str, new: str) -> None:
        now = self._clock.now()
        await self._writer.run(lambda c: mailbox_writes.rename_mailbox(
            c, account_id, old, new, now=now, uidvalidity=self._uidvalidity))

    async def set_subscribed(self, account_id: AccountId, name: str, subscribed: bool) -> None:
        await self._writer.run(lambda c: mailbox_writes.set_subscribed(c, account_id, name, subscribed))

    async def mailbox_status(self, mailbox_id: MailboxId) -> MailboxStatus:
        return await self._read(lambda c: mailbox_writes.mailbox_status(c, mailbox_id))

    async def messages(self, mailbox_id: MailboxId, *, changed_since: int = 0) -> Sequence[StoredMessage]:
        return await self._read(lambda c: snapshots.read_messages(c, mailbox_id, changed_since))

    async def message_listing(self, mailbox_id: MailboxId) -> Sequence[ListedMessage]:
        return await self._read(lambda c: mailstore.message_listing(c, mailbox_id))

    async def message_contents(self, mailbox_id: MailboxId, first_uid: int,
                               last_uid: int) -> Mapping[int, bytes | BlobId]:
        if first_uid > last_uid:
            return {}
        return await self._read(
            lambda c: mailstore.message_contents(c, mailbox_id, first_uid, last_uid))

    async def message_wire_contents(self, mailbox_id: MailboxId, first_uid: int,
                                    last_uid: int) -> Mapping[int, WireContent]:
        if first_uid > last_uid:
            return {}
        return await self._read(
            lambda c: mailstore.message_wire_contents(c, mailbox_id, first_uid, last_uid))

    def local_change_mark(self, mailbox_id: MailboxId) -> int:
        return self._changes.mark(mailbox_id)

    async def append_message(self, mailbox_id: MailboxId, content: MessageContent, *,
                     flags: frozenset[str] = frozenset(), internal_date: datetime | None = None
                     ) -> StoredMessage:
        now = self._clock.now()
        hint = new_queue_id()  # names the spool file only
        spool_path: str | None = None
        if isinstance(content, SpooledContent):
            spool_path = await self._io(lambda: self._spool.adopt(content.ticket, hint,
                                                                  content.body_size))
            row: dict[str, object] = {"size": content.size, "data": None, "path": spool_path,
                                      "prefix": content.prefix or None, "created_at": now}
            size = content.size
        else:
            if len(content) > self._inline_max:
                spool_path = await self._io(lambda: self._spool.write(hint, content))
            row = {"size": len(content), "data": None if spool_path else content,
                   "path": spool_path, "prefix": None, "created_at": now}
            size = len(content)
        try:
            stored = await self._writer.run(lambda c: mailbox_writes.append(
                c, mailbox_id, row, size, flags=flags, internal_date=internal_date or now))
        except DomainError as exc:
            if spool_path is not None:
                await self._discard_unnamed([spool_path], exc)
            raise
        self._changes.changed(mailbox_id, stored.modseq)
        return stored

    async def store_flags(self, mailbox_id: MailboxId, uids: Sequence[int], mode: FlagMode,
                          flags: frozenset[str], *, unchanged_since: int | None = None) -> FlagChange:
        change = await self._writer.run(lambda c: mailbox_writes.store_flags(
            c, mailbox_id, uids, mode, flags, unchanged_since=unchanged_since))
        if change.changed:
            self._changes.changed(mailbox_id, change.changed[0].modseq)
        return change

    async def expunge(self, mailbox_id: MailboxId, uids: Sequence[int] | None = None, *,
                      only_deleted: bool = True) -> Sequence[int]:
        removed, paths, modseq = await self._writer.run(
            lambda c: mailbox_writes.expunge(c, mailbox_id, uids, only_deleted))
        await self._unlink(paths)
        if removed:
            self._changes.changed(mailbox_id, modseq)
        return removed

    async def copy_messages(self, source: MailboxId, uids: Sequence[int], target: MailboxId, *,
                            move: bool = False) -> CopyResult:
        result, changed = await self._writer.run(
            lambda c: mailbox_writes.copy_messages(c, source, uids, target, move=move))
        for mailbox_id, modseq in changed:
            self._changes.changed(mailbox_id, modseq)
        return result

    async def account_usage(self, account_id: AccountId) -> AccountUsage:
        return await self._read(lambda c: mailbox_writes.account_usage(c, account_id))

    async def wait_for_change(self, mailbox_id: MailboxId, known_modseq: int, timeout: float) -> int:
        return await self._changes.wait(mailbox_id, known_modseq, timeout,
                                        lambda: self._highestmodseq(mailbox_id))

    # -- IMAP's whole-mailbox reads (snapshots.py) --

    async def mailbox_snapshot(self, mailbox_id: MailboxId, *, changed_since: int = 0) -> MailboxSnapshot:
        return await self._read(lambda c: snapshots.mailbox_snapshot(c, mailbox_id, changed_since))

    async def _highestmodseq(self, mailbox_id: MailboxId) -> int:
        def read(conn: Connection) -> int:
            value = conn.execute(select(mailboxes.c.highestmodseq)
                                 .where(mailboxes.c.id == mailbox_id)).scalar()
            if value is None:
                raise NotFound("no such mailbox")
            return int(value)
        return await self._read(read)

    # ---- DirectoryStore ------------------------------------------------------------------

    async def add_domain(self, name: str) -> None:
        now = self._clock.now()
        await self._writer.run(lambda c: directory.add_domain(c, name, now))

    async def remove_domain(self, name: str) -> None:
        await self._writer.run(lambda c: directory.remove_domain(c, name))

    async def list_domains(self) -> Sequence[str]:
        return await self._read(directory.list_domains)

    async def is_local_domain(self, name: str) -> bool:
        return await self._read(lambda c: directory.is_local_domain(c, name))

    async def add_account(self, address: str, password_hash: str) -> Account:
        now = self._clock.now()
        return await self._writer.run(
            lambda c: directory.add_account(c, address, password_hash, now, self._uidvalidity))

    async def get_account(self, address: str) -> Account | None:
        return await self._read(lambda c: directory.get_account(c, address))

    async def get_account_by_id(self, account_id: AccountId) -> Account | None:
        return await self._read(lambda c: directory.get_account_by_id(c, account_id))

    async def list_accounts(self) -> Sequence[Account]:
        return await self._read(directory.list_accounts)

    async def set_password(self, address: str, password_hash: str) -> None:
        await self._writer.run(lambda c: directory.set_password(c, address, password_hash))

    async def remove_account(self, address: str) -> None:
        await self._unlink(await self._writer.run(lambda c: directory.remove_account(c, address)))

    async def add_alias(self, source: str, destination: str) -> None:
        await self._writer.run(lambda c: directory.add_alias(c, source, destination))

    async def remove_alias(self, source: str, destination: str | None = None) -> None:
        await self._writer.run(lambda c: directory.remove_alias(c, source, destination))

    async def list_aliases(self) -> Sequence[Alias]:
        return await self._read(directory.list_aliases)

    async def resolve_aliases(self, address: str) -> Sequence[str]:
        return await self._read(lambda c: directory.resolve_aliases(c, address))

    # ---- QueueStore ----------------------------------------------------------------------

    async def claim_due(self, now: datetime, limit: int, owner: str,
                        lease_seconds: float) -> Sequence[DeliveryJob]:
        return await self._writer.run(lambda c: queue.claim_due(c, now, limit, owner, lease_seconds))

    async def record_outcomes(self, job: DeliveryJob, outcomes: Sequence[RecipientOutcome],
                              now: datetime) -> None:
        await self._writer.run(lambda c: queue.record_outcomes(c, job, outcomes, now))

    async def next_due_at(self) -> datetime | None:
        return await self._read(queue.next_due_at)

    async def release_leases(self, owner: str) -> None:
        await self._writer.run(lambda c: queue.release_leases(c, owner))

    async def lease_owners(self) -> Sequence[str]:
        return await self._read(queue.lease_owners)

    async def get_message(self, queue_id: QueueId) -> QueuedMessage | None:
        return await self._read(lambda c: queue.get_message(c, queue_id))

    async def list_queue(self, limit: int = 1000) -> Sequence[tuple[QueuedMessage, Sequence[QueueRecipient]]]:
        return await self._read(lambda c: queue.list_queue(c, limit))

    async def get_recipients(self, queue_id: QueueId) -> Sequence[QueueRecipient]:
        return await self._read(lambda c: queue.get_recipients(c, queue_id))

    async def retry_now(self, queue_id: QueueId | None, now: datetime) -> int:
        return await self._writer.run(lambda c: queue.retry_now(c, queue_id, now))

    async def delete_message(self, queue_id: QueueId) -> bool:
        now = self._clock.now()
        found, paths = await self._writer.run(lambda c: queue.delete_message(c, queue_id, now))
        await self._unlink(paths)
        return found

    async def finished_message_ids(self, limit: int) -> Sequence[QueueId]:
        return await self._read(lambda c: queue.finished_message_ids(c, limit))

    # ---- EventLog ------------------------------------------------------------------------

    async def append(self, kind: EventKind, queue_id: QueueId | None, recipient: str | None,
                     detail: str = "", attrs: Sequence[tuple[str, str]] = ()) -> None:
        row = mailstore.event_row(self._clock.now(), kind, queue_id, recipient,
                                  detail=detail, attrs=attrs)
        await self._writer.run(lambda c: mailstore.append_event(c, row))

    async def list_events(self, queue_id: QueueId | None = None, limit: int = 1000) -> Sequence[Event]:
        return await self._read(lambda c: mailstore.list_events(c, queue_id, limit))


    # ---- DkimKeyStore (DKIM signing keys) -------------------------------------------------

    async def add_dkim_key(self, key: DkimKey) -> None:
        await self._writer.run(lambda c: dkim_keys.add_key(c, key))

    async def list_dkim_keys(self, domain: str | None = None, *,
                             active_only: bool = False) -> Sequence[DkimKey]:
        return await self._read(lambda c: dkim_keys.list_keys(c, domain, active_only))

    async def activate_dkim_key(self, domain: str, selector: str) -> DkimKey:
        return await self._writer.run(lambda c: dkim_keys.activate_key(c, domain, selector))

    async def retire_dkim_key(self, domain: str, selector: str, when: datetime) -> DkimKey:
        return await self._writer.run(lambda c: dkim_keys.retire_key(c, domain, selector, when))

    # ---- SuppressionStore ------------------------------------------------------------------

    async def suppress(self, entry: Suppression) -> bool:
        return await self._writer.run(lambda c: deliverability.suppress(c, entry))

    async def unsuppress(self, address: str, scope: str | None = None) -> int:
        return await self._writer.run(lambda c: deliverability.unsuppress(c, address, scope))

    async def find_suppression(self, address: str, sending_domain: str = "") -> Suppression | None:
        return await self._read(
            lambda c: deliverability.find_suppression(c, address, sending_domain))

    async def list_suppressions(self, scope: str | None = None, *,
                                limit: int = 1000) -> Sequence[Suppression]:
        return await self._read(lambda c: deliverability.list_suppressions(c, scope, limit))

    async def record_soft_bounce(self, address: str, scope: str, at: datetime,
                                 window_start: datetime) -> int:
        return await self._writer.run(
            lambda c: deliverability.record_soft_bounce(c, address, scope, at, window_start))

    async def purge_soft_bounces(self, before: datetime) -> int:
        return await self._writer.run(lambda c: deliverability.purge_soft_bounces(c, before))

    # ---- SendingIpStore and MtaStsStore ---------------------------------------------------------

    async def add_ip_usage(self, day: date, counts: Mapping[str, int]) -> None:
        await self._writer.run(lambda c: deliverability.add_ip_usage(c, day, counts))

    async def ip_usage(self, day: date) -> Mapping[str, int]:
        return await self._read(lambda c: deliverability.get_ip_usage(c, day))

    async def save_mta_sts_policy(self, policy: MtaStsPolicyRecord) -> None:
        await self._writer.run(lambda c: deliverability.save_mta_sts_policy(c, policy))

    async def get_mta_sts_policy(self, domain: str) -> MtaStsPolicyRecord | None:
        return await self._read(lambda c: deliverability.get_mta_sts_policy(c, domain))

    async def add_tls_results(self, day: date, counts: Mapping[TlsResultKey, int]) -> None:
        await self._writer.run(lambda c: deliverability.add_tls_results(c, day, counts))

    async def tls_results(self, day: date) -> Sequence[tuple[TlsResultKey, int]]:
        return await self._read(lambda c: deliverability.get_tls_results(c, day))


async def open_store(url: str, *, spool_dir: Path, inline_max: int,
                     max_queue_lifetime: timedelta | float = DEFAULT_QUEUE_LIFETIME,
                     clock: Clock | None = None, read_threads: int = 4,
                     max_batch: int = 256) -> SqlStore:
    """Opens (creating or upgrading the schema to head) the database at `url` and returns the store.

    url: "sqlite:///path/to/db" or "postgresql://user@host/db". Messages larger than `inline_max`
    bytes are kept as files under `spool_dir`; a queued message expires `max_queue_lifetime` after
    it was accepted (a timedelta, or seconds as in settings.delivery.max_queue_lifetime).
    """
    db = parse_database_url(url)
    lifetime = (max_queue_lifetime if isinstance(max_queue_lifetime, timedelta)
                else timedelta(seconds=max_queue_lifetime))
    spool = Spool(spool_dir)

    def open_sync() -> tuple[Engine, Engine]:
        if db.backend == "sqlite" and db.url.database:
            Path(db.url.database).parent.mkdir(parents=True, exist_ok=True)
        writer = writer_engine(db)
        reader = reader_engine(db, read_threads)
        try:
            if db.backend == "sqlite" and db.url.database:
                # Workers starting together take turns creating and migrating the file.
                lock = ProcessWriteLock(Path(db.url.database))
                try:
                    with lock:
                        upgrade_to_head(writer)
                finally:
                    lock.close()
            else:
                upgrade_to_head(writer)
            spool.ensure_root()
        except Exception as exc:
            writer.dispose()
            reader.dispose()
            if isinstance(exc, DomainError):
                raise
            raise StorageError(f"cannot open {db.render()}: {as_storage_error(exc)}") from exc
        return writer, reader

    writer, reader = await asyncio.get_running_loop().run_in_executor(None, open_sync)
    store = SqlStore(db=db, writer=writer, reader=reader, spool=spool, inline_max=inline_max,
                     queue_lifetime=lifetime, clock=clock or SystemClock(),
                     read_threads=read_threads, max_batch=max_batch)
    store._start()
    try:
        swept = await store.sweep_spool()
    except BaseException:
        await store.close()
        raise
    if swept:
        log.info("removed %d uncommitted spool files", swept)
    return store


if TYPE_CHECKING:  # mypy proves here that SqlStore implements every storage port

    def _implements_store(store: SqlStore) -> Store:
        return store
