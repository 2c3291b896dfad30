"""The mailbox cache behind SELECT, against a real SQLite store: after any mix of appends, flag
changes, copies in and expunges (by this process or another store on the same database), a read
gives exactly the mailbox and messages storage has, reading only the changed rows when it can."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.errors import NotFound
from mailprime.domain.ids import MailboxId
from mailprime.domain.mail import FlagMode
from mailprime.services.imap.mailbox_cache import MailboxCache, MailboxMessages
from mailprime.storage.sql import SqlStore, open_store

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@asynccontextmanager
async def stores(tmp: Path) -> AsyncIterator[tuple[SqlStore, SqlStore, MailboxId, MailboxId]]:
    """Two stores on one database (as two worker processes), an INBOX and another mailbox."""
    url = f"sqlite:///{tmp / 'm.db'}"
    store = await open_store(url, spool_dir=tmp / "spool", inline_max=64 * 1024)
    other = await open_store(url, spool_dir=tmp / "spool", inline_max=64 * 1024)
    try:
        account = await store.add_account("bob@example.com", "x")
        inbox = await store.get_mailbox(account.id, "INBOX")
        archive = await store.get_mailbox(account.id, "Archive")
        assert inbox is not None and archive is not None
        yield store, other, inbox.id, archive.id
    finally:
        await other.close()
        await store.close()


async def assert_current(cache: MailboxCache, store: SqlStore, box: MailboxId) -> MailboxMessages:
    read = await cache.read(store, box)
    assert list(read.messages) == list(await store.messages(box))
    assert read.uids == tuple(m.uid for m in read.messages)
    assert read.mailbox == (await store.mailbox_status(box)).mailbox
    return read


def test_a_second_read_takes_only_the_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with stores(tmp_path) as (store, other, inbox, archive):
            for _ in range(5):
                await store.append_message(inbox, MSG)
            cache = MailboxCache()
            first = await assert_current(cache, store, inbox)
            assert (cache.full_reads, cache.delta_reads) == (1, 0)
            # Nothing changed: the same messages, no full read.
            again = await assert_current(cache, store, inbox)
            assert again.messages == first.messages and cache.full_reads == 1
            # Flags changed by another process, a message appended, one copied in: merged.
            await other.store_flags(inbox, [2, 4], FlagMode.ADD, frozenset({"\\Seen"}))
            await store.append_message(inbox, MSG, flags=frozenset({"$Work"}))
            copied = await store.append_message(archive, MSG)
            await other.copy_messages(archive, [copied.uid], inbox)
            read = await assert_current(cache, store, inbox)
            assert (cache.full_reads, cache.delta_reads) == (1, 2)
            assert [m.uid for m in read.messages] == [1, 2, 3, 4, 5, 6, 7]
            assert read.messages[0] is first.messages[0]  # unchanged rows are reused as they are
            # An expunge since the cached state: everything is read again.
            await other.expunge(inbox, [3], only_deleted=False)
            read = await assert_current(cache, store, inbox)
            assert cache.full_reads == 2 and 3 not in read.uids
    run(scenario())


def test_a_deleted_mailbox_is_not_found_and_the_bound_holds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with stores(tmp_path) as (store, _, inbox, archive):
            for _ in range(3):
                await store.append_message(inbox, MSG)
                await store.append_message(archive, MSG)
            cache = MailboxCache(max_messages=4)
            await assert_current(cache, store, inbox)
            assert len(cache) == 1
            await assert_current(cache, store, archive)  # 6 messages held > 4: the older goes
            assert len(cache) == 1
            await assert_current(cache, store, inbox)
            assert cache.full_reads == 3
            big = MailboxCache(max_messages=2)  # a mailbox larger than the bound is never kept
            await assert_current(big, store, inbox)
            assert len(big) == 0
            await store.create_mailbox((await store.list_accounts())[0].id, "Gone")
            gone = await store.get_mailbox((await store.list_accounts())[0].id, "Gone")
            assert gone is not None
            await cache.read(store, gone.id)
            assert len(cache) == 2
            await store.delete_mailbox((await store.list_accounts())[0].id, "Gone")
            with pytest.raises(NotFound):
                await cache.read(store, gone.id)
            assert len(cache) == 1  # its entry went with it
    run(scenario())


_OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from([(), ("\\Seen",), ("\\Seen", "$Work")])),
    st.tuples(st.just("flag"), st.lists(st.integers(1, 12), max_size=4), st.booleans()),
    st.tuples(st.just("expunge"), st.lists(st.integers(1, 12), min_size=1, max_size=3)),
    st.tuples(st.just("copy")),
    st.tuples(st.just("read")),
), max_size=14)


@settings(max_examples=25, deadline=None)
@given(_OPS)
def test_any_history_reads_what_storage_holds(ops: list[tuple[Any, ...]]) -> None:
    async def scenario(tmp: Path) -> None:
        async with stores(tmp) as (store, other, inbox, archive):
            source = await store.append_message(archive, MSG, flags=frozenset({"\\Flagged"}))
            cache = MailboxCache()
            for step, op in enumerate(ops):
                by = other if step % 2 else store  # every other change from "another process"
                if op[0] == "append":
                    await by.append_message(inbox, MSG, flags=frozenset(op[1]))
                elif op[0] == "flag":
                    mode = FlagMode.ADD if op[2] else FlagMode.REMOVE
                    await by.store_flags(inbox, op[1], mode, frozenset({"\\Seen", "$Later"}))
                elif op[0] == "expunge":
                    await by.expunge(inbox, op[1], only_deleted=False)
                elif op[0] == "copy":
                    await by.copy_messages(archive, [source.uid], inbox, move=False)
                else:
                    await assert_current(cache, store, inbox)
            await assert_current(cache, store, inbox)

    with tempfile.TemporaryDirectory() as tmp:
        run(scenario(Path(tmp)))
