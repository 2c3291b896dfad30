"""Where the build workers (marketing.build_pool) put the messages they made: a memory area
shared with the dispatching process, instead of the pool's result pipe.

Theory of operation
-------------------
A job's messages (100 of ~15 KB, ~1.5 MB) used to come back pickled through the pool's result
pipe: pickled in the worker (a copy), written into the pipe (a copy, and a blocking write per
pipe's worth), read out of it (a copy), unpickled (a copy). The dispatcher now makes one area
(memfd_create: anonymous memory with a file descriptor, gone with the process) of `slots`
slots of SLOT_BYTES and lends each job one slot: the worker writes the job's signed messages
into it one after the other and returns only where each one is (offset, length); the
dispatcher copies each out into the bytes it stores, then the slot goes back. Two copies, and
a few hundred octets through the pipe.

Who writes a slot: the worker running the job that holds it, and only while that job runs. The
dispatcher reads it once the job's result has come back (only inside that job's slot), and
lends it again only after its copies are made — or, when the caller stopped waiting, once the
job has ended in the pool. A pool that broke (a worker died) marks its jobs failed before its
other workers have stopped, and those may still be writing: its area is retired with it
(build_pool), never lent to the replacement workers, which get an area of their own. So a slot
is never written by two jobs at once nor read while written, without a lock.

A job waits on the event loop for a free slot before it is handed to the pool, so at most
`slots` jobs are in the pool at a time: about three per worker (one running, two queued) keeps
every worker busy. Free slots are lent last-in first-out, so the pages in use stay few (the
bench counts the resident memory of every process).

A message that does not fit in what is left of its slot (a job of large messages) comes back
through the pipe as before, and so does everything where there is no area: memfd_create is
Linux-only, and a worker opens the area as /proc/<dispatcher>/fd/<fd>, which a hardened /proc
may refuse — the worker then just has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from mailprime.domain.errors import StorageError

T = TypeVar("T")

SLOT_BYTES = 2 << 20  # a job's messages: 100 newsletters of ~15 KB fit with room to spare
SLOTS_PER_WORKER = 3  # one job running, two queued behind it

# (offset, length, SMTPUTF8): a message in the area, as a worker returns it.
Placed = tuple[int, int, bool]


class ResultArea:
    """The dispatcher's side: the area, its slots and the copies out of it."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd = fd
        self.size = slots * SLOT_BYTES
        self._map = mmap.mmap(fd, self.size)
        self._view = memoryview(self._map)
        self._slots = slots
        self._free = list(range(slots - 1, -1, -1))  # the last one is lent first
        self._waiting: deque[asyncio.Future[int]] = deque()
        self._closed = False

    @classmethod
    def make(cls, workers: int) -> ResultArea | None:
        """An area for `workers` workers, or None where it cannot be made."""
        create = getattr(os, "memfd_create", None)
        if create is None:
            return None
        slots = SLOTS_PER_WORKER * max(1, workers)
        try:
            fd = create("mailprime-build-results", os.MFD_CLOEXEC)
        except OSError:
            return None
        try:
            os.ftruncate(fd, slots * SLOT_BYTES)
            return cls(fd, slots)
        except (OSError, ValueError):
            os.close(fd)
            return None

    async def lend(self) -> int:
        """A free slot, waiting for one (on the event loop) when all are lent."""
        if self._free:
            return self._free.pop()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter  # a slot given back is handed over
        except asyncio.CancelledError:
            # Cancelled after a slot was handed over but before this task ran again: the slot
            # is ours, and nobody else will give it back.
            if waiter.done() and not waiter.cancelled():
                self.give_back(waiter.result())
            raise

    def give_back(self, slot: int) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    def give_back_when_done(self, slot: int, job: Future[Any]) -> None:
        """`slot` back once `job` has ended in the pool (now if it has): for a job abandoned
        while a worker may still be writing its slot."""
        if job.done():
            self.give_back(slot)
            return
        on_loop_when_done(job, lambda _job: self.give_back(slot))

    def all_free(self) -> bool:
        return len(self._free) == self._slots

    def copy(self, offset: int, length: int, slot: int) -> bytes:
        """A message the job holding `slot` placed there."""
        start = slot * SLOT_BYTES
        if not start <= offset <= offset + length <= start + SLOT_BYTES:
            raise StorageError(f"a build worker placed a message outside its slot {slot} "
                               f"({offset} + {length})")
        if self._closed:
            raise StorageError("the message-building processes are stopped (the server is "
                               "stopping); the batch is retried at the next run")
        return bytes(self._view[offset:offset + length])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._view.release()
        self._map.close()
        os.close(self.fd)


def on_loop_when_done(job: Future[T], callback: Callable[[Future[T]], None]) -> None:
    """`callback(job)` on the running event loop once `job` has ended in the pool (the pool's
    thread only schedules it); dropped if the loop is closed by then (nobody waits any more)."""
    loop = asyncio.get_running_loop()

    def ended(done: Future[T]) -> None:  # in the pool's thread
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, done)

    job.add_done_callback(ended)


# ---- in the worker ----------------------------------------------------------------------------

_worker_area: list[mmap.mmap] = []  # the area as this worker mapped it, if it could


def open_in_worker(parent: int, fd: int, size: int) -> None:
    """Maps the dispatcher's area (worker start-up); where that fails the worker has none and
    returns every message through the pipe."""
    try:
        own = os.open(f"/proc/{parent}/fd/{fd}", os.O_RDWR)
    except OSError:
        return
    try:
        _worker_area[:] = [mmap.mmap(own, size)]
    except (OSError, ValueError):
        return
    finally:
        os.close(own)


class SlotWriter:
    """Puts one job's messages into its slot, while they fit."""

    __slots__ = ("_area", "_at", "_end")

    def __init__(self, slot: int | None) -> None:
        self._area = _worker_area[0] if slot is not None and _worker_area else None
        self._at = (slot or 0) * SLOT_BYTES
        self._end = self._at + SLOT_BYTES

    def place(self, message: bytes, smtputf8: bool) -> Placed | tuple[bytes, bool]:
        """Where `message` went in the area, or the message itself when it did not fit."""
        area, at = self._area, self._at
        end = at + len(message)
        if area is None or end > self._end:
            return message, smtputf8
        area[at:end] = message
        self._at = end
        return at, len(message), smtputf8


__all__ = [
    "SLOTS_PER_WORKER",
    "SLOT_BYTES",
    "Placed",
    "ResultArea",
    "SlotWriter",
    "on_loop_when_done",
    "open_in_worker",
]
