"""Group commit: one writer thread turns many concurrent writes into one durable transaction.

Theory of operation
-------------------
Callers on the event loop put an item (a "bulk" payload such as an acceptance, or an "op": a
function of a connection) on a thread-safe queue and await a future. One dedicated writer thread
loops:

    wait for the first item -> take everything else already queued (up to `max_batch` items
    and `max_batch_bytes` of payload, so one transaction never holds unbounded content)
    -> BEGIN; write every bulk payload with one bulk call; run every op; COMMIT
    -> resolve every future (one call_soon_threadsafe per event loop, not per item).

COMMIT is the durability point: SQLite runs with synchronous=FULL (the WAL is fsynced) and a
PostgreSQL commit is durable, so a future resolves only after its write is on disk. There is no
artificial delay: while one commit is in flight new requests pile up in the queue, and they form
the next batch — the busier the server, the bigger the batches and the fewer fsyncs per message.

If a batch fails, it is rolled back and every item is retried alone in its own transaction, so one
bad request (a duplicate queue id, an account that vanished) fails only itself. An item's error
reaches its caller as the DomainError the op raised, or as StorageError for anything else.

States: RUNNING (accepting items) -> CLOSING (close() called: new items are refused, the queue up
to the stop marker is drained and committed) -> STOPPED (thread joined). A caller that is cancelled
while waiting does not undo its write: it may still commit; its future is simply ignored.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from mailprime.domain.errors import DomainError, StorageError

log = logging.getLogger("mailprime.storage")

T = TypeVar("T")
R = TypeVar("R")

Op = Callable[[Connection], object]


@dataclass(slots=True)
class CommitStats:
    """Counters kept by the writer thread (read them from anywhere; only the writer writes)."""

    commits: int = 0  # transactions committed (batches plus items retried alone)
    accepted: int = 0  # bulk payloads committed
    ops: int = 0  # ops committed
    failed: int = 0  # items answered with an error
    batch_failures: int = 0  # batches rolled back and retried item by item
    largest_batch: int = 0


class _Item:
    __slots__ = ("future", "loop", "op", "payload", "weight")

    def __init__(self, op: Op | None, payload: object, weight: int, future: asyncio.Future[object],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.op = op
        self.payload = payload
        self.weight = weight
        self.future = future
        self.loop = loop


_STOP = object()
_Outcome = tuple[asyncio.Future[object], object, BaseException | None]


def _resolve(outcomes: list[_Outcome]) -> None:
    """Runs on the caller's event loop."""
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def as_storage_error(exc: BaseException) -> BaseException:
    """The error a caller sees: domain errors as raised, database and other failures as
    StorageError (chained, so the log keeps the cause)."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        err = StorageError(f"database error: {orig if orig is not None else exc}")
    else:
        err = StorageError(f"storage failure: {exc!r}")
    err.__cause__ = exc
    return err


class GroupCommitter(Generic[T]):
    """Owns the writer thread and its engine connection. `T` is the bulk payload type."""

    def __init__(self, engine: Engine, bulk_writer: Callable[[Connection, Sequence[T]], None],
                 *, weigh: Callable[[T], int] = lambda _payload: 0, max_batch: int = 256,
                 max_batch_bytes: int = 32 * 1024 * 1024,
                 write_lock: AbstractContextManager[None] | None = None,
                 name: str = "mailprime-writer") -> None:
        self._engine = engine
        self._write_lock = write_lock or nullcontext()
        self._bulk_writer = bulk_writer
        self._weigh = weigh
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.stats = CommitStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ---- event-loop side -----------------------------------------------------------------

    async def _submit(self, op: Op | None, payload: object, weight: int) -> object:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        with self._lock:  # so that nothing can be queued behind the stop marker
            if self._closed:
                raise StorageError("store is closed")
            self._queue.put(_Item(op, payload, weight, future, loop))
        return await future

    async def submit(self, payload: T) -> None:
        """Writes `payload` with the bulk writer; returns once it is committed and durable."""
        await self._submit(None, payload, self._weigh(payload))

    async def run(self, op: Callable[[Connection], R]) -> R:
        """Runs `op` in the writer's transaction; returns its result once committed."""
        return cast(R, await self._submit(op, None, 0))

    async def close(self) -> None:
        """Commits everything already queued, then stops the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # ---- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [cast(_Item, first)]
            weight = batch[0].weight
            while len(batch) < self._max_batch and weight < self._max_batch_bytes:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(cast(_Item, nxt))
                weight += batch[-1].weight
            try:
                self._commit_batch(batch)
            except BaseException as exc:  # never let the thread die with callers waiting
                log.exception("writer thread: unexpected failure")
                self._settle([(item, None, as_storage_error(exc)) for item in batch])

    def _transact(self, items: Sequence[_Item]) -> list[object]:
        bulk = [cast(T, item.payload) for item in items if item.op is None]
        with self._write_lock, self._engine.begin() as conn:
            if bulk:
                self._bulk_writer(conn, bulk)
            results = [item.op(conn) if item.op is not None else None for item in items]
        # Leaving the block committed the transaction: from here on the items are durable.
        stats = self.stats
        stats.commits += 1
        stats.accepted += len(bulk)
        stats.ops += len(items) - len(bulk)
        return results

    def _commit_batch(self, batch: list[_Item]) -> None:
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        try:
            results = self._transact(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._settle([(batch[0], None, self._failure(exc))])
                return
            self.stats.batch_failures += 1
            log.log(logging.INFO if isinstance(exc, DomainError) else logging.WARNING,
                    "group commit of %d items failed (%s); retrying each alone", len(batch), exc)
        else:
            self._settle([(item, result, None) for item, result in zip(batch, results, strict=True)])
            return
        outcomes: list[tuple[_Item, object, BaseException | None]] = []
        for item in batch:
            try:
                outcomes.append((item, self._transact([item])[0], None))
            except Exception as exc:
                outcomes.append((item, None, self._failure(exc)))
        self._settle(outcomes)

    def _failure(self, exc: Exception) -> BaseException:
        self.stats.failed += 1
        if not isinstance(exc, DomainError):
            log.warning("storage write failed: %s", exc)
        return as_storage_error(exc)

    def _settle(self, outcomes: list[tuple[_Item, object, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for item, result, error in outcomes:
            by_loop.setdefault(item.loop, []).append((item.future, result, error))
        for loop, entries in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, entries)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                continue
