"""The inbound session's body handling, driven event by event against a real SQLite store: large
bodies go to the spool and are adopted on accept; aborted, dropped or failed bodies leave no
file behind; header checks on submission still see the header section of a spooled body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mailprime.domain.clock import SystemClock
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams
from mailprime.services.inbound import InboundConfig, InboundService, InboundSession
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import SqlStore, open_store

INLINE_MAX = 64 * 1024
BOB = "bob@example.com"
PASSWORD = "bob-password"


def body_of(size: int, head: bytes = b"Subject: big\r\n\r\n") -> bytes:
    line = b"0123456789" * 7 + b"\r\n"
    return (head + line * (size // len(line) + 1))[:size]


def files(spool: Path) -> tuple[int, int]:
    """(temporary files, adopted files) in the spool."""
    return len(list(spool.glob("tmp/*.part"))), len(list(spool.glob("??/*.eml")))


@asynccontextmanager
async def session(tmp: Path, role: str = "mx") -> AsyncIterator[tuple[SqlStore, InboundSession]]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool",
                             inline_max=INLINE_MAX)
    try:
        await store.add_domain("example.com")
        await store.add_account(BOB, hash_password(PASSWORD))
        service = InboundService(store, InboundConfig("mx.example.com", role), SystemClock())
        sess = service.new_session(PeerInfo("127.0.0.1", 40000, role), tls=False)
        await sess.on_helo("client.test", True)
        if role == "submission":
            assert (await sess.on_auth("PLAIN", "", BOB, PASSWORD)).ok
        assert (await sess.on_mail(BOB, MailParams())).code == 250
        assert (await sess.on_rcpt(BOB, RcptParams())).code == 250
        assert await sess.on_data_start() is None
        yield store, sess
    finally:
        await store.close()


async def send_chunks(sess: InboundSession, data: bytes, piece: int = 65_536) -> None:
    for start in range(0, len(data), piece):
        await sess.on_data_chunk(data[start:start + piece])


async def inbox(store: SqlStore) -> list[bytes]:
    account = await store.get_account(BOB)
    assert account is not None
    return [await store.read_blob(m.blob_id) for m in await store.list_messages(account.id, "INBOX")]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_a_large_body_is_spooled_and_adopted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (store, sess):
            body = body_of(5 * INLINE_MAX)
            await send_chunks(sess, body)
            assert files(tmp_path / "spool") == (1, 0)
            reply = await sess.on_data_end()
            assert reply.code == 250, reply
            assert files(tmp_path / "spool") == (0, 1)
            [stored] = await inbox(store)
            assert stored.startswith(b"Received: from client.test") and stored.endswith(body)
            assert stored.index(b"\r\n" + body[:20]) + 2 == len(stored) - len(body)

    run(scenario)


def test_an_aborted_body_leaves_no_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (store, sess):
            await send_chunks(sess, body_of(3 * INLINE_MAX))
            assert files(tmp_path / "spool") == (1, 0)
            await sess.on_data_abort("too big")
            assert files(tmp_path / "spool") == (0, 0)
            assert await inbox(store) == []

    run(scenario)


def test_a_connection_lost_mid_body_leaves_no_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (store, sess):
            await send_chunks(sess, body_of(3 * INLINE_MAX))
            await sess.on_close()
            assert files(tmp_path / "spool") == (0, 0)
            assert await inbox(store) == []

    run(scenario)


def test_a_failing_spool_is_answered_452(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path) as (store, sess):
            (tmp_path / "spool" / "tmp").write_bytes(b"")  # a file where the directory belongs
            await send_chunks(sess, body_of(3 * INLINE_MAX))
            reply = await sess.on_data_end()
            assert (reply.code, reply.enhanced) == (452, "4.3.1")
            assert await inbox(store) == []

    run(scenario)


def test_submission_adds_missing_headers_to_a_spooled_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(tmp_path, "submission") as (store, sess):
            body = body_of(4 * INLINE_MAX)
            await send_chunks(sess, body, piece=1000)
            assert (await sess.on_data_end()).code == 250
            dated = body_of(4 * INLINE_MAX, b"Subject: dated\r\nMessage-ID: <x@y>\r\n"
                                            b"Date: Thu, 2 Jan 2030 03:04:05 +0000\r\n\r\n")
            assert (await sess.on_mail(BOB, MailParams())).code == 250
            assert (await sess.on_rcpt(BOB, RcptParams())).code == 250
            await send_chunks(sess, dated)
            assert (await sess.on_data_end()).code == 250
            first, second = await inbox(store)
            head = first[:len(first) - len(body)]
            assert first.endswith(body) and b"\r\nMessage-ID: <" in head and b"\r\nDate: " in head
            head = second[:len(second) - len(dated)]
            assert second.endswith(dated) and b"Message-ID" not in head and b"Date:" not in head
            assert files(tmp_path / "spool") == (0, 2)

    run(scenario)
