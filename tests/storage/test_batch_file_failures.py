"""A batch file (storage/sql/batch_file.py) and the failures around its write, on SQLite and
PostgreSQL: the answer to a COMMIT lost after the rows committed (the file must stay: the rows
name it, and the dispatcher marks those sends queued through `accepted_queue_ids`), and a batch
cancelled while its file is written (the file must go: no row can ever name it).

The faults are injected where they happen: the group committer's transaction commits, then
raises what psycopg raises when the connection drops during COMMIT; the file writer is held
until the caller has been cancelled."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.exc import OperationalError

from mailprime.domain.errors import DomainError, StorageError
from mailprime.runtime import _sweep_spool
from mailprime.storage.sql.store import BATCH_FILE_MIN
from tests.storage.test_batch_files import bodies
from tests.storage.test_streaming import INLINE_MAX, accepting, spool_files

if TYPE_CHECKING:
    from tests.storage.conftest import Backend


def _lose_next_commit_ack(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = store._writer
    real = writer._transact
    state = {"armed": True}

    def transact(items: Any) -> Any:
        results = real(items)  # committed and durable
        if state["armed"]:
            state["armed"] = False
            raise OperationalError("COMMIT", {}, Exception(
                "server closed the connection unexpectedly"))
        return results

    monkeypatch.setattr(writer, "_transact", transact)


async def _accept_losing_ack(store: Any, monkeypatch: pytest.MonkeyPatch,
                             contents: list[bytes]) -> list[Any]:
    acceptances = [accepting(c) for c in contents]
    _lose_next_commit_ack(store, monkeypatch)
    try:
        await store.accept_many(acceptances)
    except DomainError:
        pass  # what the dispatcher sees; it then asks accepted_queue_ids
    else:
        raise AssertionError("the simulated lost COMMIT answer did not reach the caller")
    accepted = await store.accepted_queue_ids([a.queue_id for a in acceptances])
    assert accepted == {a.queue_id for a in acceptances}  # committed: the sends become queued
    return acceptances


async def test_committed_rows_keep_their_file_when_the_commit_answer_is_lost(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        # Control: a batch under BATCH_FILE_MIN stays inline and survives the same failure.
        small = bodies(5, 1_000)
        assert sum(map(len, small)) < BATCH_FILE_MIN
        for acceptance in await _accept_losing_ack(store, monkeypatch, small):
            msg = await store.get_message(acceptance.queue_id)
            assert msg is not None
            assert await store.read_blob(msg.blob_id) == acceptance.content

        # A campaign-sized batch: one shared file, which 40 committed rows name.
        batch = bodies(40, 3_000)
        assert sum(map(len, batch)) >= BATCH_FILE_MIN
        acceptances = await _accept_losing_ack(store, monkeypatch, batch)
        assert spool_files(backend.spool_dir)[1] != [], (
            "the batch file named by 40 committed rows was deleted")
        for acceptance in acceptances:
            msg = await store.get_message(acceptance.queue_id)
            assert msg is not None
            assert await store.read_blob(msg.blob_id) == acceptance.content


async def test_a_batch_cancelled_while_its_file_is_written_leaves_no_file(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        writer: Any = store._spool._batch_writer
        real = writer.write
        started, release = threading.Event(), threading.Event()
        finished = threading.Event()

        def slow_write(path: Any, contents: Any) -> None:
            started.set()
            release.wait(10)
            try:
                real(path, contents)
            finally:
                finished.set()

        writer.write = slow_write
        task = asyncio.ensure_future(store.accept_many([accepting(c) for c in bodies(30, 3_000)]))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        release.set()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, finished.wait, 10)
        await asyncio.sleep(0.1)
        assert spool_files(backend.spool_dir)[1] == [], "a batch file no row can ever name"


async def test_the_server_sweeps_what_a_cut_short_write_left_without_a_restart(
        backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        await store.accept_many([accepting(c) for c in bodies(30, 3_000)])
        (named,) = spool_files(backend.spool_dir)[1]
        left = named.parent / "left.0123456789abcdef.eml"  # a write cancelled in the writer
        left.write_bytes(b"".join(bodies(3, 100)))
        old = time.time() - 7200
        for path in (named, left):
            os.utime(path, (old, old))
        sweeping = asyncio.create_task(_sweep_spool(store, interval=0.01))
        try:
            for _ in range(500):
                if not left.exists():
                    break
                await asyncio.sleep(0.01)
        finally:
            sweeping.cancel()
            await asyncio.gather(sweeping, return_exceptions=True)
        assert spool_files(backend.spool_dir)[1] == [named]


async def test_a_batch_after_close_fails_as_storage_error_like_a_single_accept(
        backend: Backend) -> None:
    """A batch file's write on a closed store is a StorageError, as every write's is."""
    async with backend.open(inline_max=INLINE_MAX) as store:
        pass
    with pytest.raises(StorageError):
        await store.accept(accepting(b"x" * (INLINE_MAX + 10)))  # control
    with pytest.raises(StorageError):
        await store.accept_many([accepting(c) for c in bodies(30, 3_000)])


async def test_the_spool_sweep_survives_a_file_system_error(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep that meets a file-system error (a file it may not remove) is logged and tried
    again at the next interval: the task goes on, and Server.stop, awaiting it, stops."""
    async with backend.open(inline_max=INLINE_MAX) as store:
        calls = {"n": 0}

        def failing(_referenced: Any, _older: float) -> int:
            calls["n"] += 1
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(store._spool, "sweep", failing)
        task = asyncio.create_task(_sweep_spool(store, interval=0.01))
        await asyncio.sleep(0.2)
        alive = not task.done()
        task.cancel()
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
        assert alive and calls["n"] > 1, f"sweep task died after {calls['n']} run(s): {outcome!r}"


async def test_a_write_lost_with_its_connection_leaves_its_file_to_the_sweep(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A StorageError does not say whether the transaction committed (the server may still be
    committing it): the file stays until a sweep finds no row naming it."""
    async with backend.open(inline_max=INLINE_MAX) as store:
        writer = store._writer
        real = writer._transact
        state = {"armed": True}

        def transact(items: Any) -> Any:
            if state["armed"]:
                state["armed"] = False
                raise OperationalError("INSERT", {}, Exception("server closed the connection"))
            return real(items)

        monkeypatch.setattr(writer, "_transact", transact)
        batch = [accepting(c) for c in bodies(30, 3_000)]
        with pytest.raises(StorageError):
            await store.accept_many(batch)
        assert await store.accepted_queue_ids([a.queue_id for a in batch]) == set()
        (left,) = spool_files(backend.spool_dir)[1]
        old = time.time() - 7200
        os.utime(left, (old, old))
        assert await store.sweep_spool() == 1
        assert spool_files(backend.spool_dir)[1] == []
