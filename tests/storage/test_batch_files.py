"""Messages queued together share one spool file, on SQLite and PostgreSQL (fixtures in
conftest.py): `accept_many` (a campaign's batch) writes contents small enough to go inline as
one file when there are enough of them; each row names the file and its offset; the file goes
with the last row naming it, or with the sweep; readers see exactly each message's octets."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from mailprime.domain.errors import AlreadyExists
from mailprime.domain.ids import new_queue_id
from mailprime.storage.sql.migrate import alembic_config
from mailprime.storage.sql.store import BATCH_FILE_MIN
from mailprime.storage.sql.streams import READ_CHUNK
from tests.storage.test_contract import sync_engine
from tests.storage.test_streaming import INLINE_MAX, accepting, body_of, read_all, spool_files

if TYPE_CHECKING:
    from tests.storage.conftest import Backend


def bodies(count: int, size: int) -> list[bytes]:
    """`count` different messages of about `size` octets (dot lines and a bare LF included, so
    that the line facts recorded with them matter)."""
    return [body_of(size + i) + b".dot line\r\nbare\nLF %d\r\n" % i for i in range(count)]


def blob_rows(backend: Backend) -> list[tuple[object, ...]]:
    engine = sync_engine(backend.url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT path, file_offset, size, data IS NULL, line_form FROM blobs ORDER BY id"))]
    finally:
        engine.dispose()


async def test_a_batch_is_one_file_and_each_message_reads_back_exactly(backend: Backend) -> None:
    contents = bodies(40, 3_000)
    assert sum(map(len, contents)) >= BATCH_FILE_MIN
    async with backend.open(inline_max=INLINE_MAX) as store:
        acceptances = [accepting(c) for c in contents]
        await store.accept_many(acceptances)
        temps, files = spool_files(backend.spool_dir)
        assert temps == [] and len(files) == 1
        assert files[0].read_bytes() == b"".join(contents)  # no padding left in the file
        rows = blob_rows(backend)
        offset = 0
        for (path, file_offset, size, no_data, line_form), content in zip(rows, contents,
                                                                           strict=True):
            assert (path, file_offset, size, no_data) == (
                files[0].relative_to(backend.spool_dir).as_posix(), offset, len(content), True)
            assert line_form is not None  # found when written, as for inline content
            offset += len(content)
        for acceptance, content in zip(acceptances, contents, strict=True):
            msg = await store.get_message(acceptance.queue_id)
            assert msg is not None
            assert await store.read_blob(msg.blob_id) == content
            async with store.open_blob(msg.blob_id) as blob:
                assert blob.size == len(content)
                assert await blob.read_head(100) == content[:100]
                assert await blob.read_head(10 * len(content)) == content  # not past its end
                assert await read_all(blob) == content


async def test_a_message_larger_than_a_read_chunk_streams_from_its_window(
        backend: Backend) -> None:
    contents = bodies(3, READ_CHUNK + 5_000)
    async with backend.open(inline_max=4 * READ_CHUNK) as store:
        acceptances = [accepting(c) for c in contents]
        await store.accept_many(acceptances)
        assert len(spool_files(backend.spool_dir)[1]) == 1
        for acceptance, content in zip(acceptances, contents, strict=True):
            msg = await store.get_message(acceptance.queue_id)
            assert msg is not None
            async with store.open_blob(msg.blob_id) as blob:
                chunks = [chunk async for chunk in blob.chunks()]
            assert len(chunks) > 1 and b"".join(chunks) == content


async def test_the_file_goes_with_the_last_message_naming_it(backend: Backend) -> None:
    contents = bodies(30, 3_000)
    async with backend.open(inline_max=INLINE_MAX) as store:
        acceptances = [accepting(c) for c in contents]
        await store.accept_many(acceptances)
        (file,) = spool_files(backend.spool_dir)[1]
        last = acceptances.pop()
        msg = await store.get_message(last.queue_id)
        assert msg is not None
        async with store.open_blob(msg.blob_id) as blob:
            for acceptance in acceptances:
                assert await store.delete_message(acceptance.queue_id)
                assert file.exists()  # another row still names it
            assert await store.delete_message(last.queue_id)
            assert not file.exists()
            assert await read_all(blob) == contents[-1]  # an open reader keeps its content
        assert blob_rows(backend) == []


async def test_few_or_small_messages_stay_in_the_database(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        await store.accept_many([accepting(c) for c in bodies(5, 1_000)])  # under BATCH_FILE_MIN
        await store.accept_many([accepting(body_of(60_000))])  # one message is not a batch
        assert spool_files(backend.spool_dir) == ([], [])
        assert all(path is None and not no_data for path, _, _, no_data, _ in blob_rows(backend))


async def test_a_large_message_keeps_its_own_file_beside_the_batch(backend: Backend) -> None:
    small = bodies(30, 3_000)
    large = body_of(INLINE_MAX + 1)
    async with backend.open(inline_max=INLINE_MAX) as store:
        acceptances = [accepting(c) for c in small[:10]] + [accepting(large)] + [
            accepting(c) for c in small[10:]]
        await store.accept_many(acceptances)
        files = spool_files(backend.spool_dir)[1]
        assert sorted(f.stat().st_size for f in files) == sorted(
            [len(large), sum(map(len, small))])
        for acceptance in acceptances:
            msg = await store.get_message(acceptance.queue_id)
            assert msg is not None
            assert await store.read_blob(msg.blob_id) == acceptance.content
        shared = [r for r in blob_rows(backend) if r[1] is not None]
        assert len(shared) == 30 and [r[1] for r in blob_rows(backend)].count(None) == 1


async def test_a_refused_batch_leaves_no_file(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        taken = accepting(body_of(1_000))
        await store.accept(taken)
        batch = [accepting(c) for c in bodies(30, 3_000)]
        batch.append(accepting(body_of(2_000), queue_id=taken.queue_id))  # already accepted
        with pytest.raises(AlreadyExists):
            await store.accept_many(batch)
        assert spool_files(backend.spool_dir) == ([], [])
        assert len(blob_rows(backend)) == 1
        assert await store.get_message(batch[0].queue_id) is None


async def test_the_sweep_keeps_a_named_batch_file_and_removes_an_orphan(
        backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        await store.accept_many([accepting(c) for c in bodies(30, 3_000)])
        (named,) = spool_files(backend.spool_dir)[1]
        orphan = named.parent / f"{new_queue_id()}.0123456789abcdef.eml"  # a crash's leftover
        orphan.write_bytes(b"".join(bodies(3, 100)))
        old = time.time() - 7200
        for path in (named, orphan):
            os.utime(path, (old, old))
        assert await store.sweep_spool() == 1
        assert spool_files(backend.spool_dir)[1] == [named]


async def test_the_migration_goes_down_only_without_shared_files_and_keeps_autoincrement(
        backend: Backend) -> None:
    from alembic import command

    url = backend.new_database()
    async with backend.open(url, inline_max=INLINE_MAX) as store:
        batch = [accepting(c) for c in bodies(30, 3_000)]
        await store.accept_many(batch)
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            with pytest.raises(RuntimeError, match="30 blobs live in shared spool files"):
                command.downgrade(cfg, "0015")
        async with backend.open(url) as store:
            for acceptance in batch:
                assert await store.delete_message(acceptance.queue_id)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0015")
            if backend.name == "sqlite":
                (ddl,) = conn.execute(text(
                    "SELECT sql FROM sqlite_master WHERE name = 'blobs'")).scalars()
                assert "AUTOINCREMENT" in ddl and "file_offset" not in ddl
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
