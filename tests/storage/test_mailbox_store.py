"""The MailboxStore contract (IMAP/POP3 data model), on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.errors import AlreadyExists, NotFound
from mailprime.domain.ids import AccountId, MailboxId, new_queue_id
from mailprime.domain.mail import Acceptance, FlagMode, LocalDelivery
from mailprime.storage.ports import LineForm, ListedMessage
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


async def test_message_contents_reads_a_uid_range_in_one_call(backend: Backend) -> None:
    async with backend.open(inline_max=1024) as store:
        account, inbox = await _inbox(store)
        big = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
        small, spooled, gone, blank, last = [
            await store.append_message(inbox, content) for content in (MSG, big, MSG, b"", MSG)]
        await store.expunge(inbox, [gone.uid], only_deleted=False)
        other = await store.create_mailbox(account, "Other")
        copied = await store.copy_messages(inbox, [small.uid], other.id)
        # Inline content in full; spooled content only named (its blob: stream it); gone uids
        # absent.
        assert await store.message_contents(inbox, small.uid, blank.uid) == {
            small.uid: MSG, spooled.uid: spooled.blob_id, blank.uid: b""}
        async with store.open_blob(spooled.blob_id) as blob:
            assert b"".join([c async for c in blob.chunks()]) == big
        assert await store.message_contents(inbox, last.uid, last.uid + 10) == {last.uid: MSG}
        assert await store.message_contents(inbox, gone.uid, gone.uid) == {}
        assert await store.message_contents(inbox, last.uid, small.uid) == {}  # an empty range
        # Scoped to the mailbox: the same uid elsewhere is another message.
        [(_, copy_uid)] = copied.uid_pairs
        assert await store.message_contents(other.id, 1, 100) == {copy_uid: MSG}


async def test_message_listing_is_messages_without_the_rest_of_the_row(backend: Backend) -> None:
    async with backend.open(inline_max=1024) as store:
        _, inbox = await _inbox(store)
        assert await store.message_listing(inbox) == []
        for content, flags in ((MSG, {SEEN}), (b"x" * 5000, set()), (b"", {SEEN, FLAGGED})):
            await store.append_message(inbox, content, flags=frozenset(flags))
        await store.expunge(inbox, [1], only_deleted=False)
        full = await store.messages(inbox)
        assert await store.message_listing(inbox) == [
            ListedMessage(m.uid, m.size, m.flags) for m in full]
        assert [(m.uid, m.size) for m in full] == [(2, 5000), (3, 0)]


async def test_the_line_form_is_found_where_content_is_stored(backend: Backend) -> None:
    """Append and accept find what the content needs before it goes out as a multi-line body;
    a copy shares it with its content; a spooled message's form is not known."""
    forms = {
        MSG: LineForm.AS_STORED,
        b"": LineForm.AS_STORED,
        b"no line end": LineForm.AS_STORED,
        b"a lone CR\r ends no line\r\n": LineForm.AS_STORED,
        b"Subject: x\r\n\r\n.dot\r\n": LineForm.DOT_LINES,
        b".first\r\n": LineForm.DOT_LINES,
        b"Subject: x\r\n\r\nbare\n": LineForm.BARE_LF,
        b"Subject: x\n\n.both\n": LineForm.BARE_LF,
        b"Subject: big\r\n\r\n" + b"x" * 5000: None,
    }
    async with backend.open(inline_max=1024) as store:
        account, inbox = await _inbox(store)
        for content in forms:
            await store.append_message(inbox, content)
        for content in forms:
            await store.accept(Acceptance(queue_id=new_queue_id(), content=content, sender="",
                                          local=(LocalDelivery(account, "bob@example.com", "INBOX"),)))
        listed = await store.message_listing(inbox)
        read = await store.message_wire_contents(inbox, listed[0].uid, listed[-1].uid)
        wire = [read[m.uid] for m in listed]
        assert [w.line_form for w in wire] == [*forms.values(), *forms.values()]
        dots = [w.dot_lines for w in wire[:len(forms)]]
        assert dots == [None, None, None, None, (14,), (0,), None, None, None]
        assert [w.content for w in wire[:4]] == list(forms)[:4]  # the content comes with them
        assert await store.message_wire_contents(inbox, listed[-1].uid, listed[0].uid) == {}
        other = await store.create_mailbox(account, "Other")
        await store.copy_messages(inbox, [m.uid for m in listed], other.id)
        copied = await store.message_wire_contents(other.id, 1, 10_000)
        assert [(w.line_form, w.dot_lines) for w in copied.values()] == [
            (w.line_form, w.dot_lines) for w in wire]


async def test_local_change_mark_follows_this_process_commits_only(backend: Backend) -> None:
    async with backend.open() as store, backend.open() as elsewhere:
        _, inbox = await _inbox(store)
        assert store.local_change_mark(inbox) == 0
        first = await store.append_message(inbox, MSG)
        assert store.local_change_mark(inbox) == first.modseq
        await store.message_contents(inbox, first.uid, first.uid)  # reads move nothing
        await store.mailbox_status(inbox)
        assert store.local_change_mark(inbox) == first.modseq
        flagged = await store.store_flags(inbox, [first.uid], FlagMode.ADD, frozenset({SEEN}))
        assert store.local_change_mark(inbox) == flagged.changed[0].modseq
        await store.expunge(inbox, [first.uid], only_deleted=False)
        expunged = (await store.mailbox_status(inbox)).mailbox.highestmodseq
        assert store.local_change_mark(inbox) == expunged > flagged.changed[0].modseq
        # Another store (as another worker process) commits: this one's mark does not move.
        await elsewhere.append_message(inbox, MSG)
        assert store.local_change_mark(inbox) == expunged
        assert elsewhere.local_change_mark(inbox) > expunged


# -- IMAP's whole-mailbox reads (mailbox_snapshot) ----------------------------------------------


async def test_mailbox_snapshot_is_the_mailbox_and_its_messages_in_one_read(backend: Backend) -> None:
    async with backend.open(inline_max=1024) as store:
        _, inbox = await _inbox(store)
        empty = await store.mailbox_snapshot(inbox)
        assert (empty.messages, empty.expunged_modseq) == ([], 0)
        assert empty.mailbox == (await store.mailbox_status(inbox)).mailbox
        when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        for content, flags in ((MSG, {SEEN}), (b"x" * 5000, set()), (MSG, {SEEN, "$Work"}), (MSG, {SEEN})):
            await store.append_message(inbox, content, flags=frozenset(flags), internal_date=when)
        await store.append_message(inbox, MSG)  # the store's own clock: another date
        await store.expunge(inbox, [1], only_deleted=False)
        flagged = await store.store_flags(inbox, [4], FlagMode.ADD, frozenset({FLAGGED}))
        snapshot = await store.mailbox_snapshot(inbox)
        status = await store.mailbox_status(inbox)
        # The very values `messages` gives, dates (aware, UTC) and all, with the mailbox as
        # mailbox_status reads it.
        assert snapshot.messages == await store.messages(inbox)
        assert [m.uid for m in snapshot.messages] == [2, 3, 4, 5]
        assert snapshot.messages[0].internal_date == when
        assert all(m.internal_date.utcoffset() == UTC.utcoffset(None) for m in snapshot.messages)
        assert snapshot.mailbox == status.mailbox
        assert snapshot.expunged_modseq == status.expunged_modseq > 0
        # Messages with the same flags share one set; the flags are those stored.
        assert snapshot.messages[1].flags == frozenset({SEEN, "$Work"})
        assert snapshot.messages[2].flags == frozenset({SEEN, FLAGGED})
        # changed_since: only the rows changed after it, as `messages` does, same mailbox row.
        since = await store.mailbox_snapshot(inbox, changed_since=flagged.changed[0].modseq - 1)
        assert since.messages == await store.messages(inbox, changed_since=flagged.changed[0].modseq - 1)
        assert [m.uid for m in since.messages] == [4]
        assert since.mailbox == snapshot.mailbox
        latest = status.mailbox.highestmodseq
        assert (await store.mailbox_snapshot(inbox, changed_since=latest)).messages == []
        with pytest.raises(NotFound):
            await store.mailbox_snapshot(MailboxId(9999))


async def test_mailbox_snapshot_shares_one_frozenset_per_flag_string(backend: Backend) -> None:
    async with backend.open() as store:
        _, inbox = await _inbox(store)
        for _ in range(3):
            await store.append_message(inbox, MSG, flags=frozenset({SEEN}))
        first, second, third = (await store.mailbox_snapshot(inbox)).messages
        assert first.flags is second.flags is third.flags
