"""The POP3 maildrop service against a real SQLite store, session by session, without sockets:
the login check and its log line, the INBOX snapshot and unique ids, streaming RETR/TOP from the
blob store (inline and spooled), messages expunged meanwhile by another session, UPDATE (only
the marked UIDs, \\Seen on what was retrieved), and two sessions on one mailbox. The sink stands
in for the network driver: it collects what the session streams."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from mailprime.domain.ids import MailboxId
from mailprime.domain.mail import FlagMode
from mailprime.proto.pop3.multiline import encode_whole
from mailprime.proto.pop3.types import LoginAccepted, MessageInfo, Reply
from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.directory_cache import CachedDirectory
from mailprime.services.mail_auth import LoginFailure, check_login
from mailprime.services.passwords import hash_password
from mailprime.services.pop3 import Pop3Config, Pop3Service, Pop3Session
from mailprime.services.pop3_readahead import MAX_MESSAGES, MAX_OCTETS
from mailprime.storage.ports import LineForm
from mailprime.storage.sql import SqlStore, open_store
from mailprime.storage.sql.schema import accounts, blobs

INLINE_MAX = 4096
ALICE = "alice@example.com"
PASSWORD = "alice-password"
SMALL = b"Subject: small\r\n\r\nHello.\r\n"
BIG = b"Subject: big\r\n\r\n" + b"0123456789" * 30_000 + b"\r\n"  # spooled (> INLINE_MAX)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@dataclass
class Sink:
    """Collects the pieces a session streams; `stop_after` pieces, it says "enough" (as the
    driver does once TOP has its lines)."""

    pieces: list[bytes] = field(default_factory=list)
    stop_after: int | None = None
    encoded: list[bytes] = field(default_factory=list)  # what write_encoded got, joined

    async def write(self, chunk: bytes) -> bool:
        self.pieces.append(chunk)
        return self.stop_after is None or len(self.pieces) < self.stop_after

    async def write_encoded(self, body: Sequence[bytes | memoryview]) -> None:
        self.encoded.append(b"".join(body))

    @property
    def content(self) -> bytes:
        """The message as streamed (TOP, or a spooled message), before the driver encodes it."""
        return b"".join(self.pieces)

    @property
    def sent(self) -> bytes:
        """A RETR's response body as the client gets it (terminator included): the response
        the session made whole, or the streamed message as the driver encodes it."""
        return b"".join(self.encoded) if self.encoded else encode_whole(self.content)


@dataclass
class World:
    store: SqlStore
    service: Pop3Service
    inbox: MailboxId
    db_url: str

    def session(self, port: int = 40000) -> Pop3Session:
        return self.service.new_session(PeerInfo("127.0.0.1", port, "pop3"), tls=True)

    async def login(self, port: int = 40000) -> tuple[Pop3Session, LoginAccepted]:
        session = self.session(port)
        answer = await session.on_login("USER", "", ALICE, PASSWORD)
        assert isinstance(answer, LoginAccepted), answer
        return session, answer

    async def uids(self) -> list[int]:
        return [m.uid for m in await self.store.messages(self.inbox)]


@asynccontextmanager
async def world(tmp: Path, contents: tuple[bytes, ...] = (SMALL, BIG, SMALL), *,
                inline_max: int = INLINE_MAX, seen: bool = False) -> AsyncIterator[World]:
    db_url = f"sqlite:///{tmp / 'm.db'}"
    store = await open_store(db_url, spool_dir=tmp / "spool", inline_max=inline_max)
    try:
        await store.add_domain("example.com")
        account = await store.add_account(ALICE, hash_password(PASSWORD))
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        flags = frozenset({"\\Seen"}) if seen else frozenset()
        for content in contents:
            await store.append_message(inbox.id, content, flags=flags)
        service = Pop3Service(store, CachedDirectory(store, ttl=0), Pop3Config("pop.example.com"))
        yield World(store, service, inbox.id, db_url)
    finally:
        await store.close()


def test_login_snapshots_inbox_with_stable_unique_ids(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            _, first = await w.login()
            status = await w.store.mailbox_status(w.inbox)
            validity = status.mailbox.uidvalidity
            assert first.maildrop == (MessageInfo(len(SMALL), f"{validity}.1"),
                                      MessageInfo(len(BIG), f"{validity}.2"),
                                      MessageInfo(len(SMALL), f"{validity}.3"))
            await w.store.expunge(w.inbox, [1], only_deleted=False)
            await w.store.append_message(w.inbox, b"Subject: new\r\n\r\nx\r\n")
            _, second = await w.login(40001)
            # Message numbers move; unique ids stay with their message and are never reused.
            assert [m.uidl for m in second.maildrop] == [f"{validity}.2", f"{validity}.3",
                                                          f"{validity}.4"]

    run(main())


def test_refused_logins_say_auth_and_log_why_without_the_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            failed = Reply.negative("Authentication failed", "AUTH")
            assert await w.session().on_login("USER", "", ALICE, "wrong-guess") == failed
            assert await w.session().on_login("PLAIN", "", "nobody@example.com", PASSWORD) == failed
            assert await w.session().on_login("PLAIN", "bob@example.com", ALICE, PASSWORD) == failed
            engine = create_engine(w.db_url)
            with engine.begin() as conn:
                conn.execute(update(accounts).values(disabled=True))
            engine.dispose()
            assert await w.session().on_login("USER", "", ALICE, PASSWORD) == failed

    with caplog.at_level(logging.INFO, logger="mailprime.pop3d"):
        run(main())
    text = caplog.text
    for reason in ("password mismatch", "unknown user", "authorization identity differs",
                   "account disabled"):
        assert f"reason=\"{reason}\"" in text, text
    assert "wrong-guess" not in text and PASSWORD not in text


def test_check_login_accepts_an_authzid_naming_the_same_account(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, ()) as w:
            assert (await check_login(w.store, ALICE.upper(), ALICE, PASSWORD)).ok
            refused = await check_login(w.store, "", ALICE, "")
            assert refused.failure is LoginFailure.BAD_PASSWORD

    run(main())


def test_retrieve_streams_inline_and_spooled_content_unchanged(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            session, _ = await w.login()
            small, big = Sink(), Sink()
            assert await session.on_retrieve(1, None, small) is None
            assert await session.on_retrieve(2, None, big) is None
            assert small.sent == encode_whole(SMALL) and not small.pieces  # whole, from memory
            assert big.content == BIG
            assert len(big.pieces) > 1 and max(map(len, big.pieces)) <= 128 * 1024  # streamed

    run(main())


def test_retrieve_stops_reading_when_the_sink_has_enough(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            session, _ = await w.login()
            sink = Sink(stop_after=1)
            assert await session.on_retrieve(2, 0, sink) is None
            assert len(sink.pieces) == 1
            assert session.counts.tops == 1 and session.counts.retrieved == 0

    run(main())


def test_a_message_expunged_meanwhile_is_reported_removed(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            session, _ = await w.login()
            await w.store.store_flags(w.inbox, [2], FlagMode.ADD, frozenset({"\\Deleted"}))
            assert await w.store.expunge(w.inbox) == [2]  # as an IMAP EXPUNGE would
            removed = await session.on_retrieve(2, None, Sink())
            assert removed == Reply.negative("Message was removed by another session")
            sink = Sink()
            assert await session.on_retrieve(3, None, sink) is None
            assert sink.sent == encode_whole(SMALL)
            # QUIT deleting the removed one and another: only what still exists goes.
            assert await session.on_update([2, 3]) == Reply.positive(
                "pop.example.com POP3 server signing off (1 messages left)")
            assert session.counts.deleted == 1
            assert await w.uids() == [1]

    run(main())


def test_update_expunges_the_marked_uids_and_marks_retrieved_ones_seen(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            session, _ = await w.login()
            await session.on_retrieve(1, None, Sink())  # RETR 1, kept
            await session.on_retrieve(2, None, Sink())  # RETR 2, deleted
            await session.on_retrieve(3, 1, Sink())  # TOP 3: not read in full, stays unseen
            assert await session.on_update([2]) == Reply.positive(
                "pop.example.com POP3 server signing off (2 messages left)")
            flags = {m.uid: m.flags for m in await w.store.messages(w.inbox)}
            assert flags == {1: frozenset({"\\Seen"}), 3: frozenset()}
            await session.on_close()
            assert session.counts.retrieved == 2 and session.counts.deleted == 1
            assert session.counts.octets == len(SMALL) + len(BIG)

    run(main())


def test_update_with_nothing_marked_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            before = await w.store.mailbox_status(w.inbox)
            session, _ = await w.login()
            assert await session.on_update([]) == Reply.positive(
                "pop.example.com POP3 server signing off (3 messages left)")
            after = await w.store.mailbox_status(w.inbox)
            assert after.mailbox.highestmodseq == before.mailbox.highestmodseq
            session, _ = await w.login()
            assert (await session.on_update([1, 2, 3])).text.endswith("(maildrop empty)")
            assert await w.uids() == []

    run(main())


def test_two_sessions_on_one_mailbox(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            (a, _), (b, _) = await asyncio.gather(w.login(40001), w.login(40002))
            sinks = [Sink(), Sink()]
            await asyncio.gather(a.on_retrieve(2, None, sinks[0]), b.on_retrieve(2, None, sinks[1]))
            assert sinks[0].content == sinks[1].content == BIG
            results = await asyncio.gather(a.on_update([1]), b.on_update([1, 3]))
            assert all(r.ok for r in results)
            assert a.counts.deleted + b.counts.deleted == 2  # message 1 is removed once
            assert await w.uids() == [2]

    run(main())


def test_a_failed_update_says_some_messages_were_not_removed(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            session, _ = await w.login()
            await w.store.close()  # the database is gone when QUIT comes
            assert await session.on_update([1]) == Reply.negative(
                "Some deleted messages not removed", "SYS/TEMP")

    run(main())


def test_session_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            session, _ = await w.login()
            await session.on_retrieve(1, None, Sink())
            await session.on_update([1])
            await session.on_close()
            dropped = w.session(40009)
            await dropped.on_close()

    with caplog.at_level(logging.INFO, logger="mailprime.pop3d"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "status=disconnect" in r.getMessage()]
    assert len(lines) == 2
    assert (f"listener=pop3, client=[127.0.0.1]:40000, tls=yes, user={ALICE}, retr=1, top=0, "
            f"octets={len(SMALL)}, deleted=1, quit=yes, duration_s=") in lines[0]
    assert "user=" not in lines[1] and "retr=0" in lines[1] and "quit=no" in lines[1]
    assert PASSWORD not in caplog.text


# Read-ahead: the next messages' content comes in one storage read ------------------------------


def mixed(count: int) -> tuple[bytes, ...]:
    """Messages of mixed kinds: small and empty ones, dot lines and bare LFs (stored as they
    are), and every seventh beyond INLINE_MAX (spooled)."""
    out = []
    for i in range(count):
        if i % 7 == 3:
            out.append(b"Subject: big %d\r\n\r\n" % i + b".dot\r\n" * (INLINE_MAX // 5))
        elif i % 11 == 5:
            out.append(b"")
        else:
            out.append(b"Subject: m %d\r\n\r\n.line\nbare lf\r\n" % i + b"x" * (i * 13))
    return tuple(out)


def buffered(session: Pop3Session) -> tuple[int, ...]:
    assert session.maildrop is not None
    return session.maildrop.readahead.buffered


def test_read_ahead_serves_every_message_in_any_order(tmp_path: Path) -> None:
    contents = mixed(100)

    async def main() -> None:
        async with world(tmp_path, contents) as w:
            session, _ = await w.login()
            order = [*range(1, 101), *range(100, 0, -1), *random.Random(7).sample(range(1, 101), 100),
                     5, 5, 5, 99, 1, 100]
            for number in order:
                sink = Sink()
                assert await session.on_retrieve(number, None, sink) is None
                assert sink.sent == encode_whole(contents[number - 1]), number
            sink = Sink(stop_after=1)
            assert await session.on_retrieve(4, 0, sink) is None  # TOP of a spooled one
            assert sink.content.startswith(b"Subject: big 3\r\n")
            assert session.counts.retrieved == len(order)

    run(main())


def test_every_line_form_and_an_unknown_one_give_the_same_response(tmp_path: Path) -> None:
    """The store's line form picks the cheapest encoding (as stored, slices around the dots
    it found, or a full pass); content stored before the store kept it (NULL) is checked here."""
    contents = (b"Subject: as stored\r\n\r\nx\r\n", b"Subject: dots\r\n\r\n.a\r\n..b\r\n",
                b".first\r\nno end", b"Subject: bare\n\n.lf\n", b"", *mixed(20))

    async def retrieve_all(w: World) -> list[bytes]:
        session, _ = await w.login()
        sent = []
        for number in range(1, len(contents) + 1):
            sink = Sink()
            assert await session.on_retrieve(number, None, sink) is None
            session.on_idle()
            sent.append(sink.sent)
        return sent

    async def main() -> None:
        async with world(tmp_path, contents) as w:
            read = await w.store.message_wire_contents(w.inbox, 1, len(contents))
            assert {c.line_form for c in read.values()} == {*LineForm, None}  # None: spooled
            assert read[2].dot_lines == (17, 21)  # "Subject: dots" ... where to stuff
            expected = [encode_whole(c) for c in contents]
            assert await retrieve_all(w) == expected
            engine = create_engine(w.db_url)
            try:
                with engine.begin() as conn:  # as rows written before migration 0008 read
                    conn.execute(update(blobs).values(line_form=None, dot_lines=None))
            finally:
                engine.dispose()
            read = await w.store.message_wire_contents(w.inbox, 1, len(contents))
            assert {c.line_form for c in read.values()} == {None}
            assert await retrieve_all(w) == expected

    run(main())


def test_read_ahead_reads_bounded_batches(tmp_path: Path) -> None:
    small = tuple(b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(100))
    large = tuple(b"Subject: %d\r\n\r\n" % i + b"y" * 400_000 + b"\r\n" for i in range(12))

    async def main() -> None:
        async with world(tmp_path / "small", small) as w:
            session, _ = await w.login()
            await session.on_retrieve(1, None, Sink())
            assert buffered(session) == tuple(range(2, MAX_MESSAGES + 1))  # count-bound
            await session.on_retrieve(70, None, Sink())  # out of order: a new batch from 70
            assert buffered(session) == tuple(range(71, 101))  # the end of the maildrop
        async with world(tmp_path / "large", large, inline_max=1_000_000) as w:
            session, _ = await w.login()
            await session.on_retrieve(3, None, Sink())
            per_batch = MAX_OCTETS // len(large[0])
            assert buffered(session) == tuple(range(4, 3 + per_batch))  # octet-bound

    run(main())


def test_an_expunge_after_the_read_ahead_is_seen_at_once_in_this_process(tmp_path: Path) -> None:
    contents = tuple(b"Subject: %d\r\n\r\nx\r\n" % i for i in range(10))

    async def main() -> None:
        async with world(tmp_path, contents) as w:
            session, _ = await w.login()
            assert await session.on_retrieve(1, None, Sink()) is None
            assert 2 in buffered(session)
            assert await w.store.expunge(w.inbox, [2], only_deleted=False) == [2]  # as IMAP would
            assert await session.on_retrieve(2, None, Sink()) == Reply.negative(
                "Message was removed by another session")
            sink = Sink()
            assert await session.on_retrieve(3, None, sink) is None
            assert sink.sent == encode_whole(contents[2])

    run(main())


def test_an_expunge_by_another_process_is_seen_at_the_next_read(tmp_path: Path) -> None:
    """Another worker process's expunge cannot move this process's change mark: a message
    already read ahead is still sent (read while it existed), one read later is refused."""
    contents = tuple(b"Subject: %d\r\n\r\nx\r\n" % i for i in range(80))

    async def main() -> None:
        async with world(tmp_path, contents) as w:
            session, _ = await w.login()
            assert await session.on_retrieve(1, None, Sink()) is None
            other = await open_store(w.db_url, spool_dir=tmp_path / "spool", inline_max=INLINE_MAX)
            try:
                assert await other.expunge(w.inbox, [10, 70], only_deleted=False) == [10, 70]
            finally:
                await other.close()
            sink = Sink()
            assert await session.on_retrieve(10, None, sink) is None
            assert sink.sent == encode_whole(contents[9])
            assert await session.on_retrieve(70, None, Sink()) == Reply.negative(
                "Message was removed by another session")

    run(main())


def test_update_writes_no_flags_when_every_retrieved_message_was_seen(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, seen=True) as w:
            before = await w.store.mailbox_status(w.inbox)
            session, _ = await w.login()
            for number in (1, 2, 3):
                assert await session.on_retrieve(number, None, Sink()) is None
            assert (await session.on_update([])).ok
            after = await w.store.mailbox_status(w.inbox)
            assert after.mailbox.highestmodseq == before.mailbox.highestmodseq

    run(main())


# Encode-ahead: RETR n+1 is encoded while the client reads RETR n -------------------------------


def test_the_next_message_is_encoded_while_the_client_reads(tmp_path: Path) -> None:
    contents = mixed(30)

    async def main() -> None:
        async with world(tmp_path, contents) as w:
            session, _ = await w.login()
            assert session.maildrop is not None
            readahead = session.maildrop.readahead
            ahead = 0
            for number in range(1, 31):
                sink = Sink()
                ahead += readahead.encoded_ahead == number
                assert await session.on_retrieve(number, None, sink) is None
                assert readahead.encoded_ahead is None  # used, or dropped
                session.on_idle()  # what the driver does before it reads the next command
                if len(contents[number - 1]) > INLINE_MAX:  # spooled: streamed from its file
                    assert sink.content == contents[number - 1] and not sink.encoded
                else:  # in memory already: its whole response in one go
                    assert sink.encoded == [encode_whole(contents[number - 1])] and not sink.pieces
            # All but the first and the spooled ones (streamed, never encoded ahead); 30 messages
            # fit one read-ahead batch (the first message of the next would be read, not ahead).
            spooled = sum(1 for c in contents if len(c) > INLINE_MAX)
            assert ahead == 30 - 1 - spooled

    run(main())


def test_a_message_encoded_ahead_is_used_only_for_its_own_retr(tmp_path: Path) -> None:
    contents = tuple(b"Subject: %d\r\n\r\n.x\r\n" % i for i in range(10))

    async def main() -> None:
        async with world(tmp_path, contents) as w:
            session, _ = await w.login()
            assert session.maildrop is not None
            readahead = session.maildrop.readahead
            await session.on_retrieve(1, None, Sink())
            session.on_idle()
            assert readahead.encoded_ahead == 2
            top = Sink()
            assert await session.on_retrieve(2, 0, top) is None  # TOP: streamed and cut
            assert top.content == contents[1] and not top.encoded
            for number in (2, 5):  # read again after the TOP; then not the message encoded
                sink = Sink()
                assert await session.on_retrieve(number, None, sink) is None
                assert sink.encoded == [encode_whole(contents[number - 1])]
                assert readahead.encoded_ahead is None
                session.on_idle()
            assert readahead.encoded_ahead == 6
            await session.on_retrieve(6, None, Sink())
            session.on_idle()
            assert readahead.encoded_ahead == 7
            assert await w.store.expunge(w.inbox, [7], only_deleted=False) == [7]
            assert await session.on_retrieve(7, None, Sink()) == Reply.negative(
                "Message was removed by another session")
    run(main())
