"""The MailboxStore contract (IMAP/POP3 data model), on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.errors import AlreadyExists, NotFound
from mailprime.domain.ids import AccountId, MailboxId, new_queue_id
from mailprime.domain.mail import Acceptance, FlagMode, LocalDelivery
from mailprime.storage.sql import SqlStore

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
SEEN, DELETED, FLAGGED = "\\Seen", "\\Deleted", "\\Flagged"


async def _inbox(store: SqlStore, address: str = "bob@example.com") -> tuple[AccountId, MailboxId]:
    account = await store.add_account(address, "x")
    box = await store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return account.id, box.id


async def test_append_assigns_uids_and_modseqs(backend: Backend) -> None:
    async with backend.open() as store:
        _, inbox = await _inbox(store)
        before = await store.mailbox_status(inbox)
        first = await store.append_message(inbox, MSG, flags=frozenset({SEEN}))
        when = datetime(2020, 5, 6, 7, 8, 9, tzinfo=UTC)
        second = await store.append_message(inbox, MSG + b"more\r\n", internal_date=when)
        assert (first.uid, second.uid) == (1, 2)
        assert second.modseq > first.modseq > before.mailbox.highestmodseq
        assert second.internal_date == when
        status = await store.mailbox_status(inbox)
        assert (status.messages, status.unseen, status.deleted) == (2, 1, 0)
        assert status.size == len(MSG) * 2 + 6
        assert status.mailbox.uidnext == 3
        assert status.mailbox.highestmodseq == second.modseq
        assert await store.read_blob(second.blob_id) == MSG + b"more\r\n"
        listed = await store.messages(inbox)
        assert [m.uid for m in listed] == [1, 2]
        assert listed[0].flags == frozenset({SEEN})
        assert [m.uid for m in await store.messages(inbox, changed_since=first.modseq)] == [2]


async def test_large_append_goes_to_the_spool_and_streams_back(backend: Backend) -> None:
    async with backend.open(inline_max=1024) as store:
        _, inbox = await _inbox(store)
        big = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
        stored = await store.append_message(inbox, big)
        async with store.open_blob(stored.blob_id) as blob:
            assert b"".join([c async for c in blob.chunks()]) == big
        writer = store.new_spool_writer()
        await writer.write(big)
        spooled = await store.append_message(inbox, await writer.finish())
        assert await store.read_blob(spooled.blob_id) == big


async def test_smtp_delivery_raises_the_mailbox_modseq(backend: Backend) -> None:
    async with backend.open() as store:
        account, inbox = await _inbox(store)
        start = (await store.mailbox_status(inbox)).mailbox.highestmodseq
        await store.accept(Acceptance(queue_id=new_queue_id(), content=MSG, sender="a@example.org",
                                      local=(LocalDelivery(account, "bob@example.com", "INBOX"),)))
        status = await store.mailbox_status(inbox)
        assert status.mailbox.highestmodseq == start + 1
        [message] = await store.messages(inbox)
        assert message.modseq == start + 1


async def test_store_flags_modes_and_unchangedsince(backend: Backend) -> None:
    async with backend.open() as store:
        _, inbox = await _inbox(store)
        for _ in range(3):
            await store.append_message(inbox, MSG)
        added = await store.store_flags(inbox, [1, 2, 99], FlagMode.ADD, frozenset({SEEN, "$Work"}))
        assert [m.uid for m in added.changed] == [1, 2]
        assert added.changed[0].flags == frozenset({SEEN, "$Work"})
        same = await store.store_flags(inbox, [1], FlagMode.ADD, frozenset({SEEN}))
        assert same.changed == ()  # nothing changed: no new modseq
        removed = await store.store_flags(inbox, [1, 2, 3], FlagMode.REMOVE, frozenset({"$Work"}))
        assert [m.uid for m in removed.changed] == [1, 2]
        replaced = await store.store_flags(inbox, [3], FlagMode.REPLACE, frozenset({FLAGGED}))
        assert replaced.changed[0].flags == frozenset({FLAGGED})
        # RFC 7162 3.1.3: UID 3 changed after the given modseq, so it is refused; 1 is not.
        old = removed.changed[0].modseq
        guarded = await store.store_flags(inbox, [1, 3], FlagMode.ADD, frozenset({DELETED}),
                                          unchanged_since=old)
        assert guarded.modified == (3,)
        assert [m.uid for m in guarded.changed] == [1]
        status = await store.mailbox_status(inbox)
        assert (status.unseen, status.deleted) == (1, 1)


async def test_expunge_only_deleted_and_pop3_style(backend: Backend) -> None:
    async with backend.open() as store:
        _, inbox = await _inbox(store)
        for _ in range(4):
            await store.append_message(inbox, MSG)
        await store.store_flags(inbox, [2, 4], FlagMode.ADD, frozenset({DELETED}))
        before = await store.mailbox_status(inbox)
        assert await store.expunge(inbox, [1, 2, 3]) == [2]
        after = await store.mailbox_status(inbox)
        assert after.expunged_modseq == after.mailbox.highestmodseq > before.mailbox.highestmodseq
        assert await store.expunge(inbox) == [4]
        assert await store.expunge(inbox) == []
        assert await store.expunge(inbox, [1, 3, 77], only_deleted=False) == [1, 3]
        assert await store.messages(inbox) == []
        assert (await store.mailbox_status(inbox)).mailbox.uidnext == 5  # UIDs never reused


async def test_copy_and_move_keep_flags_and_dates_and_share_content(backend: Backend) -> None:
    async with backend.open() as store:
        account, inbox = await _inbox(store)
        archive = await store.get_mailbox(account, "Archive")
        assert archive is not None
        for _ in range(3):
            await store.append_message(inbox, MSG, flags=frozenset({SEEN}))
        copied = await store.copy_messages(inbox, [3, 1, 42], archive.id)
        assert copied.uidvalidity == archive.uidvalidity
        assert copied.uid_pairs == ((1, 1), (3, 2))
        moved = await store.copy_messages(inbox, [2], archive.id, move=True)
        assert moved.uid_pairs == ((2, 3),)
        assert [m.uid for m in await store.messages(inbox)] == [1, 3]
        in_archive = await store.messages(archive.id)
        assert [m.flags for m in in_archive] == [frozenset({SEEN})] * 3
        src = {m.uid: m for m in await store.messages(inbox)}
        assert in_archive[0].blob_id == src[1].blob_id
        # Expunging the original keeps the copy readable (the content is shared).
        await store.expunge(inbox, [1], only_deleted=False)
        assert await store.read_blob(in_archive[0].blob_id) == MSG
        usage = await store.account_usage(account)
        assert (usage.messages, usage.storage) == (4, 4 * len(MSG))


async def test_create_rename_delete_subscribe(backend: Backend) -> None:
    async with backend.open() as store:
        account, inbox = await _inbox(store)
        work = await store.create_mailbox(account, "Work")
        await store.create_mailbox(account, "Work/2026")
        with pytest.raises(AlreadyExists):
            await store.create_mailbox(account, "Work")
        await store.append_message(work.id, MSG)
        await store.rename_mailbox(account, "Work", "Jobs")
        names = {m.name for m in await store.list_mailboxes(account)}
        assert {"Jobs", "Jobs/2026"} <= names and "Work" not in names
        renamed = await store.get_mailbox(account, "Jobs")
        assert renamed is not None and renamed.uidvalidity == work.uidvalidity
        assert len(await store.messages(renamed.id)) == 1
        with pytest.raises(AlreadyExists):
            await store.rename_mailbox(account, "Jobs/2026", "Jobs")
        await store.set_subscribed(account, "Jobs", False)
        again = await store.get_mailbox(account, "Jobs")
        assert again is not None and not again.subscribed
        await store.delete_mailbox(account, "Jobs")
        assert await store.get_mailbox(account, "Jobs") is None
        with pytest.raises(NotFound):
            await store.delete_mailbox(account, "Jobs")
        # RFC 3501 6.3.5: renaming INBOX moves its messages and leaves it empty.
        await store.append_message(inbox, MSG)
        await store.rename_mailbox(account, "inbox", "Old mail")
        old = await store.get_mailbox(account, "Old mail")
        assert old is not None and len(await store.messages(old.id)) == 1
        assert await store.messages(inbox) == []


async def test_wait_for_change_wakes_at_once_and_times_out(backend: Backend) -> None:
    async with backend.open() as store:
        _, inbox = await _inbox(store)
        known = (await store.mailbox_status(inbox)).mailbox.highestmodseq
        # Nothing changes: returns the same value after the timeout.
        assert await store.wait_for_change(inbox, known, 0.05) == known
        waiter = asyncio.create_task(store.wait_for_change(inbox, known, 30))
        await asyncio.sleep(0)
        stored = await store.append_message(inbox, MSG)
        assert await asyncio.wait_for(waiter, 10) == stored.modseq
        # Already newer than known: at once.
        assert await store.wait_for_change(inbox, known, 30) == stored.modseq


async def test_ids_of_deleted_rows_are_never_reused(backend: Backend) -> None:
    """A session or cache holding an id must never find another account's data under it."""
    async with backend.open() as store:
        account, inbox = await _inbox(store)
        first = await store.append_message(inbox, MSG)
        await store.expunge(inbox, [first.uid], only_deleted=False)
        other = await store.add_account("eve@example.com", "x")
        box = await store.get_mailbox(other.id, "INBOX")
        assert box is not None
        second = await store.append_message(box.id, MSG)
        assert second.blob_id != first.blob_id
        # The same through the batched accept path.
        await store.accept(Acceptance(queue_id=new_queue_id(), content=MSG, sender="a@example.org",
                                      local=(LocalDelivery(other.id, "eve@example.com", "INBOX"),)))
        await store.expunge(box.id, None, only_deleted=False)
        third = await store.append_message(box.id, MSG)
        assert third.blob_id > second.blob_id
        # Mailboxes and accounts too.
        gone = await store.create_mailbox(account, "Temp")
        await store.delete_mailbox(account, "Temp")
        again = await store.create_mailbox(account, "Temp2")
        assert again.id != gone.id
        await store.remove_account("eve@example.com")
        newcomer = await store.add_account("mallory@example.com", "x")
        assert newcomer.id != other.id
