"""Streaming content through storage, on SQLite and PostgreSQL (fixtures in conftest.py): bodies
written piecewise to the spool (`new_spool_writer`), adopted by `accept`, read back in pieces
(`open_blob`); the 8-bit flag of queued content; temporary files never outliving their message."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from mailprime.domain.errors import AlreadyExists, NotFound, StorageError
from mailprime.domain.ids import AccountId, QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    EnvelopeRecipient,
    LocalDelivery,
    MessageContent,
    SpooledContent,
    prepend,
)
from mailprime.storage.ports import BlobReader
from mailprime.storage.sql import SqlStore
from mailprime.storage.sql.migrate import alembic_config
from mailprime.storage.sql.streams import FLUSH_SIZE, READ_CHUNK
from tests.storage.test_contract import sync_engine

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

INLINE_MAX = 64 * 1024
TRACE = b"Received: from client.test by mx.test; Thu, 2 Jan 2030 03:04:05 +0000\r\n"


def body_of(size: int, *, eight_bit: bool = False) -> bytes:
    """A message of `size` octets (at least 40) made of short CRLF lines."""
    line = (b"caf\xc3\xa9 " if eight_bit else b"cafe ") + b"0123456789" * 6 + b"\r\n"
    head = b"Subject: streamed\r\n\r\n"
    return (head + line * (size // len(line) + 1))[:size]


def accepting(content: MessageContent, account: AccountId | None = None,
              queue_id: QueueId | None = None) -> Acceptance:
    return Acceptance(queue_id=queue_id or new_queue_id(), content=content, sender="s@example.org",
                      local=(LocalDelivery(account, "bob@example.com"),) if account else (),
                      remote=(EnvelopeRecipient("r@example.net"),))


async def stream(store: SqlStore, data: bytes, piece: int = 65_536) -> MessageContent:
    writer = store.new_spool_writer()
    for start in range(0, len(data), piece):
        await writer.write(data[start:start + piece])
    assert writer.size == len(data)
    return await writer.finish()


async def read_all(blob: BlobReader) -> bytes:
    return b"".join([chunk async for chunk in blob.chunks()])


def spool_files(spool: Path) -> tuple[list[Path], list[Path]]:
    """(temporary files, adopted files)."""
    return sorted(spool.glob("tmp/*.part")), sorted(spool.glob("??/*.eml"))


async def test_a_large_body_streams_to_the_spool_and_is_adopted_durably(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:  # records what was fsynced, then really fsyncs it
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    body = body_of(1_000_003, eight_bit=True)
    async with backend.open(inline_max=INLINE_MAX) as store:
        acct = await store.add_account("bob@example.com", "hash")
        monkeypatch.setattr(os, "fsync", spy)
        writer = store.new_spool_writer()
        await writer.write(body[:INLINE_MAX])
        assert spool_files(backend.spool_dir) == ([], [])  # at the limit: still in memory
        await writer.write(body[INLINE_MAX:INLINE_MAX + 1])
        (temp,), _ = spool_files(backend.spool_dir)  # one octet more: a locked temporary file
        for start in range(INLINE_MAX + 1, len(body), 50_000):
            await writer.write(body[start:start + 50_000])
        spooled = await writer.finish()
        assert isinstance(spooled, SpooledContent)
        assert (spooled.body_size, spooled.body_8bit, spooled.prefix) == (len(body), True, b"")
        assert str(temp) in synced  # fsynced when the body was complete
        assert temp.read_bytes() == body

        qid = new_queue_id()
        await store.accept(accepting(prepend(TRACE, spooled), acct.id, qid))
        monkeypatch.undo()
        await writer.discard()  # after the accept adopted the file: a no-op

        temps, (adopted,) = spool_files(backend.spool_dir)
        assert temps == [] and adopted.read_bytes() == body  # renamed, not copied
        assert str(adopted.parent) in synced  # the rename made durable before the commit
        full = TRACE + body
        msg = await store.get_message(qid)
        assert msg is not None and msg.size == len(full) and msg.body_8bit
        [stored] = await store.list_messages(acct.id, "INBOX")
        assert stored.blob_id == msg.blob_id and stored.size == len(full)
        assert await store.read_blob(msg.blob_id) == full

        async with store.open_blob(msg.blob_id) as blob:
            assert blob.size == len(full)
            pieces = [chunk async for chunk in blob.chunks()]
            assert b"".join(pieces) == full and max(map(len, pieces)) <= READ_CHUNK
            assert await read_all(blob) == full  # every pass starts from the beginning
            assert await blob.read_head(10) == full[:10]
            assert await blob.read_head(len(TRACE) + 5) == full[:len(TRACE) + 5]
            assert await blob.read_head(10**9) == full


async def test_a_small_body_never_touches_the_disk(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        body = body_of(INLINE_MAX - len(TRACE))  # with the trace it is just inline_max
        content = await stream(store, body, piece=1000)
        assert content == body  # bytes: kept in memory, stored inline
        qid = new_queue_id()
        await store.accept(accepting(prepend(TRACE, content), queue_id=qid))
        assert spool_files(backend.spool_dir) == ([], [])
        msg = await store.get_message(qid)
        assert msg is not None and not msg.body_8bit
        async with store.open_blob(msg.blob_id) as blob:
            assert blob.size == len(TRACE) + len(body)
            assert await read_all(blob) == TRACE + body
            assert await blob.read_head(7) == b"Receive"
        assert await stream(store, b"") == b""


async def test_the_8bit_flag_is_recorded_for_every_kind_of_content(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        cases = {
            "inline ascii": (body_of(500), False),
            "inline 8bit": (body_of(500, eight_bit=True), True),
            "spooled bytes 8bit": (body_of(200_000, eight_bit=True), True),
            "spooled bytes ascii": (body_of(200_000), False),
        }
        for name, (content, expected) in cases.items():
            qid = new_queue_id()
            await store.accept(accepting(content, queue_id=qid))
            msg = await store.get_message(qid)
            assert msg is not None and msg.body_8bit is expected, name
        # An ASCII body whose prefix (a trace header with an SMTPUTF8 name) has 8-bit octets.
        streamed = await stream(store, body_of(200_000))
        qid = new_queue_id()
        await store.accept(accepting(prepend("Received: from bücher.test\r\n".encode(), streamed),
                                     queue_id=qid))
        msg = await store.get_message(qid)
        assert msg is not None and msg.body_8bit
        assert len(await store.list_queue()) == 5


async def test_discarded_and_refused_bodies_leave_no_file(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        body = body_of(300_000)
        writer = store.new_spool_writer()
        await writer.write(body)
        assert len(spool_files(backend.spool_dir)[0]) == 1
        await writer.discard()  # aborted mid-body
        await writer.discard()  # and again: harmless
        assert spool_files(backend.spool_dir) == ([], [])
        with pytest.raises(StorageError):
            await writer.write(b"more")

        sealed = await stream(store, body)  # complete, then the session went away
        assert len(spool_files(backend.spool_dir)[0]) == 1
        writer = store.new_spool_writer()
        await writer.write(body)
        await writer.finish()
        await writer.discard()
        assert len(spool_files(backend.spool_dir)[0]) == 1  # only the first one is left

        dup = new_queue_id()
        await store.accept(accepting(b"Subject: first\r\n\r\nhi\r\n", queue_id=dup))
        with pytest.raises(AlreadyExists):  # the queue id is taken: refused, nothing written
            await store.accept(accepting(sealed, queue_id=dup))
        assert spool_files(backend.spool_dir) == ([], [])

        wrong_size = await stream(store, body)
        assert isinstance(wrong_size, SpooledContent)
        with pytest.raises(StorageError, match="expected"):
            await store.accept(accepting(SpooledContent(wrong_size.ticket, 5)))
        assert spool_files(backend.spool_dir) == ([], [])
        for ticket in ("../../etc/passwd", "tmp/../x.part", "tmp/abc.part"):
            with pytest.raises(StorageError, match="not a spool ticket"):
                await store.accept(accepting(SpooledContent(ticket, 5)))
        assert len(await store.list_queue()) == 1


async def test_a_reader_keeps_its_content_when_the_message_is_deleted(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        body = body_of(3 * READ_CHUNK + 17)
        qid = new_queue_id()
        await store.accept(accepting(await stream(store, body), queue_id=qid))
        msg = await store.get_message(qid)
        assert msg is not None
        async with store.open_blob(msg.blob_id) as blob:
            chunks = blob.chunks()
            first = await anext(chunks)
            assert await store.delete_message(qid)
            assert spool_files(backend.spool_dir) == ([], [])  # unlinked with its row
            rest = [chunk async for chunk in chunks]
            assert first + b"".join(rest) == body
        with pytest.raises(NotFound):
            async with store.open_blob(msg.blob_id):
                pass


async def test_the_sweep_removes_orphaned_temporary_files_but_never_a_live_one(
        backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        body = body_of(200_000)
        live = store.new_spool_writer()
        await live.write(body)  # a session still receiving: its file is locked
        sealed = await stream(store, body)  # complete, never accepted: unlocked
        assert isinstance(sealed, SpooledContent)
        stray = backend.spool_dir / "tmp" / ("0" * 32 + ".part")  # left by a crashed process
        stray.write_bytes(b"garbage")
        temps, _ = spool_files(backend.spool_dir)
        assert len(temps) == 3
        assert await store.sweep_spool() == 0  # all too young
        old = time.time() - 7200
        for path in temps:
            os.utime(path, (old, old))
        assert await store.sweep_spool() == 2
        (left,), _ = spool_files(backend.spool_dir)
        await live.write(b"and the rest\r\n")  # the live one was spared
        content = await live.finish()
        assert isinstance(content, SpooledContent) and left.name in content.ticket
        await store.accept(accepting(content))
        assert spool_files(backend.spool_dir)[0] == []


async def test_a_failing_spool_fails_the_write_and_cleans_up(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        (backend.spool_dir / "tmp").write_bytes(b"")  # a file where the directory should be
        writer = store.new_spool_writer()
        await writer.write(body_of(INLINE_MAX))
        with pytest.raises(StorageError, match="cannot create spool file"):
            await writer.write(b"x")
        with pytest.raises(StorageError):
            await writer.finish()  # the writer discarded itself


async def test_writes_after_close_fail_cleanly(backend: Backend) -> None:
    async with backend.open(inline_max=INLINE_MAX) as store:
        writer = store.new_spool_writer()
        await writer.write(body_of(FLUSH_SIZE * 2))
    assert len(spool_files(backend.spool_dir)[0]) == 1
    with pytest.raises(StorageError, match="closed"):
        await writer.write(body_of(FLUSH_SIZE))
    # The failed write discarded the file, without the store's (stopped) threads.
    assert spool_files(backend.spool_dir) == ([], [])
    await writer.discard()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=700), max_size=12), st.binary(max_size=100),
       st.sampled_from([0, 1, 300, 2000]))
def test_any_chunking_reads_back_the_same(backend: Backend, chunks: list[bytes], prefix: bytes,
                                         inline_max: int) -> None:
    async def body() -> None:
        async with backend.open(inline_max=inline_max) as store:
            writer = store.new_spool_writer()
            for chunk in chunks:
                await writer.write(chunk)
            content = prepend(prefix, await writer.finish())
            qid = new_queue_id()
            await store.accept(accepting(content, queue_id=qid))
            expected = prefix + b"".join(chunks)
            msg = await store.get_message(qid)
            assert msg is not None and msg.size == len(expected)
            assert msg.body_8bit is (not expected.isascii())
            assert await store.read_blob(msg.blob_id) == expected
            async with store.open_blob(msg.blob_id) as blob:
                assert blob.size == len(expected) and await read_all(blob) == expected
            assert spool_files(backend.spool_dir)[0] == []

    asyncio.run(body())


async def test_upgrading_from_0001_keeps_queued_mail(backend: Backend) -> None:
    from alembic import command

    url = backend.new_database()
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.execute(text(
                "INSERT INTO blobs (id, size, data, created_at) VALUES (1, 2, :d, :t)"),
                {"d": b"hi", "t": "2030-01-02 03:04:05"})
            conn.execute(text(
                "INSERT INTO queue_messages (id, sender, blob_id, size, priority, created_at,"
                " expires_at, smtputf8, source, client) VALUES ('old', '', 1, 2, 1, :t, :t,"
                " false, 'smtp', '')"), {"t": "2030-01-02 03:04:05"})
    finally:
        engine.dispose()
    async with backend.open(url) as store:
        msg = await store.get_message(QueueId("old"))
        assert msg is not None and msg.body_8bit is False
        assert await store.read_blob(msg.blob_id) == b"hi"
