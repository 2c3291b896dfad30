"""Message commands of the IMAP session against a real store: sequence numbers and UIDs, FETCH and
the implicit \\Seen (only read-write, reported in the same FETCH), STORE and its silent and
conditional forms, SEARCH and ESEARCH, COPY/MOVE with COPYUID, EXPUNGE and UID EXPUNGE, CLOSE
and UNSELECT, APPEND, and CONDSTORE's CHANGEDSINCE / UNCHANGEDSINCE / MODSEQ."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mailprime.proto.imap.types import (
    Append,
    AppendData,
    BodySection,
    Close,
    Copy,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchItem,
    Move,
    Noop,
    Search,
    SearchAll,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SeqRange,
    SequenceSet,
    State,
    Store,
    StoreMode,
    UidExpunge,
    Unselect,
)
from mailprime.services.imap.mailboxes import INBOX
from mailprime.services.imap.quota import QuotaLimits
from tests.services.test_imap_session_harness import MSG, Client, Env, env, run, wire


def seq(text: str) -> SequenceSet:
    """"1:3,5,7:*" as a SequenceSet."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        start = None if low == "*" else int(low)
        end = start if not high else (None if high == "*" else int(high))
        ranges.append(SeqRange(start, end))
    return SequenceSet(tuple(ranges))


FLAGS = (FetchItem.FLAGS,)
UID = (FetchItem.UID,)


async def selected(e: Env, count: int = 3, mailbox: str = INBOX) -> Client:
    for n in range(count):
        await e.deliver(MSG.replace(b"hello", f"hello {n + 1}".encode()), mailbox)
    client = e.client()
    await client.login()
    await client.select(mailbox)
    return client


def test_sequence_numbers_and_uids_after_an_expunge(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 4)
            await client.ok(Store(seq("2"), StoreMode.ADD, True, frozenset({"\\Deleted"})))
            assert await client.text(Expunge()) == "* 2 EXPUNGE\r\na4 OK EXPUNGE completed\r\n"
            assert await client.text(Fetch(seq("1:*"), UID)) == (
                "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 4)\r\na5 OK FETCH completed\r\n")
            assert await client.text(Fetch(seq("3:4"), (FetchItem.UID, *FLAGS), uid=True)) == (
                "* 2 FETCH (UID 3 FLAGS ())\r\n* 3 FETCH (UID 4 FLAGS ())\r\na6 OK FETCH completed\r\n")
            assert await client.text(Fetch(seq("2,99"), UID, uid=True)) == "a7 OK FETCH completed\r\n"
            assert await client.text(Fetch(seq("4"), UID)) == \
                "a8 BAD Message sequence number beyond the last message (3)\r\n"

    run(scenario())


def test_fetch_body_sets_seen_but_peek_and_examine_do_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 2)
            header = BodySection(peek=True)
            first = MSG.replace(b"hello", b"hello 1").decode()
            assert await client.text(Fetch(seq("1"), (header,))) == \
                f"* 1 FETCH (BODY[] {{{len(first)}}}\r\n{first})\r\na3 OK FETCH completed\r\n"
            assert await client.text(Fetch(seq("1"), FLAGS)) == \
                "* 1 FETCH (FLAGS ())\r\na4 OK FETCH completed\r\n"
            read = await client.text(Fetch(seq("1"), (BodySection(),)))
            assert read.startswith("* 1 FETCH (BODY[] {") and read.endswith(
                " FLAGS (\\Seen))\r\na5 OK FETCH completed\r\n")
            # Already \Seen: no FLAGS added the second time.
            again = await client.text(Fetch(seq("1"), (BodySection(),)))
            assert "FLAGS" not in again
            examiner = e.client()
            await examiner.login()
            await examiner.ok(Examine(INBOX))
            text = await examiner.text(Fetch(seq("2"), (FetchItem.RFC822,)))
            assert "FLAGS" not in text
            assert await examiner.text(Fetch(seq("2"), FLAGS)) == \
                "* 2 FETCH (FLAGS ())\r\na4 OK FETCH completed\r\n"
            assert (await examiner.text(Store(seq("2"), StoreMode.ADD, False, frozenset({"\\Seen"})))
                    ).startswith("a5 NO [CANNOT] STORE is not allowed: the mailbox is read-only")
            assert (await examiner.text(Expunge())).startswith("a6 NO [CANNOT]")

    run(scenario())


def test_store_modes_silent_and_keywords(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 3)
            work = frozenset({"\\Flagged", "$Work"})
            added = await client.text(Store(seq("1:2"), StoreMode.ADD, False, work))
            assert added == (
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n"
                "* 1 FETCH (FLAGS ($Work \\Flagged))\r\n* 2 FETCH (FLAGS ($Work \\Flagged))\r\n"
                "a3 OK STORE completed\r\n")
            assert await client.text(Store(seq("2"), StoreMode.REMOVE, False, frozenset({"$Work"}))) == (
                "* 2 FETCH (FLAGS (\\Flagged))\r\na4 OK STORE completed\r\n")
            assert await client.text(Store(seq("3"), StoreMode.REPLACE, True, frozenset({"\\Answered"}))) == \
                "a5 OK STORE completed\r\n"
            by_uid = await client.text(Store(seq("3"), StoreMode.ADD, False, frozenset({"\\Seen"}), uid=True))
            assert by_uid == (
                "* 3 FETCH (FLAGS (\\Answered \\Seen) UID 3)\r\na6 OK STORE completed\r\n")

    run(scenario())


def test_search_and_esearch(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 4)
            await client.ok(Store(seq("2,4"), StoreMode.ADD, True, frozenset({"\\Seen"})))
            assert await client.text(Search(SearchFlag("\\Seen", False))) == \
                "* SEARCH 1 3\r\na4 OK SEARCH completed\r\n"
            assert await client.text(Search(SearchHeader("SUBJECT", "hello 3"), uid=True)) == \
                "* SEARCH 3\r\na5 OK SEARCH completed\r\n"
            assert await client.text(Search(SearchAll(), return_options=("MIN", "MAX", "COUNT"))) == \
                '* ESEARCH (TAG "a6") MIN 1 MAX 4 COUNT 4\r\na6 OK SEARCH completed\r\n'
            assert await client.text(Search(SearchFlag("\\Seen"), uid=True, return_options=())) == \
                '* ESEARCH (TAG "a7") UID ALL 2,4\r\na7 OK SEARCH completed\r\n'
            assert await client.text(Search(SearchHeader("SUBJECT", "nothing"))) == \
                "* SEARCH\r\na8 OK SEARCH completed\r\n"
            await client.ok(Enable(("IMAP4REV2",)))
            # RFC 9051 6.4.4: an IMAP4rev2 client gets ESEARCH for a plain SEARCH.
            assert await client.text(Search(SearchFlag("\\Seen"))) == \
                '* ESEARCH (TAG "a10") ALL 2,4\r\na10 OK SEARCH completed\r\n'

    run(scenario())


def test_copy_and_move_report_copyuid(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 4)
            archive = await e.store.get_mailbox(e.alice.id, "Archive")
            trash = await e.store.get_mailbox(e.alice.id, "Trash")
            assert archive is not None and trash is not None
            assert await client.text(Copy(seq("2:3"), "Archive")) == \
                f"a3 OK [COPYUID {archive.uidvalidity} 2:3 1:2] COPY completed\r\n"
            assert await client.text(Copy(seq("1"), "Nowhere")) == \
                "a4 NO [TRYCREATE] Destination mailbox does not exist\r\n"
            assert await client.text(Move(seq("1,3"), "Trash")) == (
                f"* OK [COPYUID {trash.uidvalidity} 1,3 1:2] Moved\r\n"
                "* 1 EXPUNGE\r\n* 2 EXPUNGE\r\na5 OK MOVE completed\r\n")
            assert await client.text(Move(seq("4"), "Trash", uid=True)) == (
                f"* OK [COPYUID {trash.uidvalidity} 4 3] Moved\r\n* 2 EXPUNGE\r\na6 OK MOVE completed\r\n")
            assert await client.text(Fetch(seq("1:*"), UID)) == \
                "* 1 FETCH (UID 2)\r\na7 OK FETCH completed\r\n"
            assert (await client.text(Move(seq("1"), INBOX))).startswith("a8 NO [CANNOT]")
            moved = await e.store.messages(trash.id)
            assert [m.uid for m in moved] == [1, 2, 3]

    run(scenario())


def test_uid_expunge_close_and_unselect(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 4)
            await client.ok(Store(seq("1:4"), StoreMode.ADD, True, frozenset({"\\Deleted"})))
            assert await client.text(UidExpunge(seq("2:3"))) == \
                "* 2 EXPUNGE\r\n* 2 EXPUNGE\r\na4 OK UID EXPUNGE completed\r\n"
            assert await client.text(Unselect()) == "a5 OK UNSELECT completed\r\n"
            assert len(await e.store.messages(await e.inbox_id())) == 2  # UNSELECT expunges nothing
            await client.select()
            assert await client.text(Close()) == "a7 OK CLOSE completed\r\n"  # silently expunges
            assert await e.store.messages(await e.inbox_id()) == []
            assert client.state is State.AUTHENTICATED

    run(scenario())


def test_append_stores_flags_and_date_and_reports_exists(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path, inline_max=1024) as e:
            client = await selected(e, 1)
            when = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
            big = b"Subject: big\r\n\r\n" + b"y" * 200_000 + b"\r\n"  # spooled: > inline_max
            text = await wire(await client.append(INBOX, big, flags=frozenset({"\\Seen", "\\Recent"}),
                                                  date=when))
            box = await e.store.get_mailbox(e.alice.id, INBOX)
            assert box is not None
            assert text == ("+ Ready for literal data\r\n* 2 EXISTS\r\n* 0 RECENT\r\n"
                            f"a3 OK [APPENDUID {box.uidvalidity} 2] APPEND completed\r\n")
            stored = (await e.store.messages(box.id))[-1]
            assert stored.flags == frozenset({"\\Seen"}) and stored.internal_date == when
            assert await e.store.read_blob(stored.blob_id) == big
            assert await wire(await client.append("Nope", b"x")) == \
                "a4 NO [TRYCREATE] Mailbox does not exist\r\n"
            fetched = await client.text(Fetch(seq("2"), (FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE)))
            assert fetched == ('* 2 FETCH (INTERNALDATE "26-Nov-2026 10:00:00 +0000" RFC822.SIZE '
                               f"{len(big)})\r\na5 OK FETCH completed\r\n")
            body = await client.text(Fetch(seq("2"), (BodySection(peek=True),)))
            assert body.endswith(big.decode() + ")\r\na6 OK FETCH completed\r\n")

    run(scenario())


def test_a_lost_append_leaves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path, inline_max=1024) as e:
            client = e.client()
            await client.login()
            await client.run(Append(INBOX, frozenset(), None, 100_000))
            await client.events(AppendData(b"z" * 50_000))
            await client.session.on_close(0, 0)
            assert await e.store.messages(await e.inbox_id()) == []
            assert not list((tmp_path / "spool").rglob("*.part"))

    run(scenario())


def test_condstore_changedsince_unchangedsince_and_modseq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 3)
            box = await e.store.get_mailbox(e.alice.id, INBOX)
            assert box is not None
            start = box.highestmodseq
            assert await client.text(Enable(("CONDSTORE",))) == \
                "* ENABLED CONDSTORE\r\na3 OK ENABLE completed\r\n"
            stored = await client.text(Store(seq("2"), StoreMode.ADD, False, frozenset({"\\Flagged"})))
            assert stored == \
                f"* 2 FETCH (FLAGS (\\Flagged) MODSEQ ({start + 1}))\r\na4 OK STORE completed\r\n"
            assert await client.text(Fetch(seq("1:*"), FLAGS, changed_since=start)) == \
                f"* 2 FETCH (MODSEQ ({start + 1}) FLAGS (\\Flagged))\r\na5 OK FETCH completed\r\n"
            # UNCHANGEDSINCE: message 2 changed after `start`, so it is refused (MODIFIED).
            conditional = await client.text(Store(seq("1:2"), StoreMode.ADD, True, frozenset({"\\Seen"}),
                                                  unchanged_since=start))
            assert conditional == (f"* 1 FETCH (MODSEQ ({start + 2}))\r\n"
                                   "a6 OK [MODIFIED 2] Conditional STORE failed for some messages\r\n")
            found = await client.text(Search(SearchModSeq(start + 1)))
            assert found == f"* SEARCH 1 2 (MODSEQ {start + 2})\r\na7 OK SEARCH completed\r\n"
            assert await client.text(Fetch(seq("3"), (FetchItem.MODSEQ,), uid=True)) == \
                f"* 3 FETCH (UID 3 MODSEQ ({start}))\r\na8 OK FETCH completed\r\n"

    run(scenario())


def test_noop_reports_nothing_when_nothing_changed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await selected(e, 2)
            assert await client.text(Noop()) == "a3 OK NOOP completed\r\n"
            assert await client.text(Fetch(seq("1"), FLAGS)) == \
                "* 1 FETCH (FLAGS ())\r\na4 OK FETCH completed\r\n"

    run(scenario())


def test_copy_over_quota_is_refused_but_move_is_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path, quota=QuotaLimits(messages=3)) as e:
            client = await selected(e, 2)
            assert await client.text(Copy(seq("1:2"), "Archive")) == \
                "a3 NO [OVERQUOTA] Quota exceeded (number of messages)\r\n"
            assert (await client.text(Copy(seq("1"), "Archive"))).startswith("a4 OK [COPYUID ")
            assert (await client.text(Move(seq("1:2"), "Trash"))).endswith("MOVE completed\r\n")

    run(scenario())
