"""The POP3 maildrop service against a real SQLite store, session by session, without sockets:
the login check and its log line, the INBOX snapshot and unique ids, streaming RETR/TOP from the
blob store (inline and spooled), messages expunged meanwhile by another session, UPDATE (only
the marked UIDs, \\Seen on what was retrieved), and two sessions on one mailbox. The sink stands
in for the network driver: it collects what the session streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from mailprime.domain.ids import MailboxId
from mailprime.domain.mail import FlagMode
from mailprime.proto.pop3.types import LoginAccepted, MessageInfo, Reply
from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.directory_cache import CachedDirectory
from mailprime.services.mail_auth import LoginFailure, check_login
from mailprime.services.passwords import hash_password
from mailprime.services.pop3 import Pop3Config, Pop3Service, Pop3Session
from mailprime.storage.sql import SqlStore, open_store
from mailprime.storage.sql.schema import accounts

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

    async def write(self, chunk: bytes) -> bool:
        self.pieces.append(chunk)
        return self.stop_after is None or len(self.pieces) < self.stop_after

    @property
    def content(self) -> bytes:
        return b"".join(self.pieces)


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
async def world(tmp: Path, contents: tuple[bytes, ...] = (SMALL, BIG, SMALL)) -> AsyncIterator[World]:
    db_url = f"sqlite:///{tmp / 'm.db'}"
    store = await open_store(db_url, spool_dir=tmp / "spool", inline_max=INLINE_MAX)
    try:
        await store.add_domain("example.com")
        account = await store.add_account(ALICE, hash_password(PASSWORD))
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        for content in contents:
            await store.append_message(inbox.id, content)
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
            assert small.content == SMALL
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
            assert sink.content == SMALL
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
