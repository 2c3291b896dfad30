"""Submitted list mail when the consent gate cannot answer (services.inbound `_list_consent`):
a storage failure behind the real GateListConsent (a real SQLite store whose memberships table
has gone) is a temporary refusal, 451 4.3.0 as the accept path answers, the finished spool file
is deleted and the failure is logged; nothing is queued. Driven event by event through a real
submission InboundSession."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from mailprime.adapters.list_consent import GateListConsent
from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.clock import SystemClock
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import open_store

NEWS = "news@a.test"
MEMBER = "member@b.test"
INLINE_MAX = 1024  # the message below is larger: its body goes to a spool file


def message() -> bytes:
    head = (f"From: A News <{NEWS}>\r\nTo: readers@b.test\r\nSubject: April\r\n"
            "List-Id: A News <news-1.a.test>\r\n\r\n")
    return head.encode() + b"The news of the month, at some length.\r\n" * 200


async def submit(service: InboundService) -> Reply:
    sess = service.new_session(PeerInfo("192.0.2.7", 40000, "submission"), tls=True)
    await sess.on_helo("client.a.test", True)
    assert (await sess.on_auth("PLAIN", "", NEWS, "news-pw")).ok
    assert (await sess.on_mail(NEWS, MailParams())).code == 250
    assert (await sess.on_rcpt(MEMBER, RcptParams())).code == 250
    assert await sess.on_data_start() is None
    data = message()
    for start in range(0, len(data), 700):
        await sess.on_data_chunk(data[start:start + 700])
    try:
        return await sess.on_data_end()
    finally:
        await sess.on_close()


def test_a_gate_that_fails_is_a_temporary_refusal_and_leaves_no_spool_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "db.sqlite"
    spool = tmp_path / "spool"

    def spool_files() -> list[Path]:
        return [p for p in spool.rglob("*") if p.is_file()]

    async def main() -> None:
        store = await open_store(f"sqlite:///{db}", spool_dir=spool, inline_max=INLINE_MAX)
        try:
            await store.add_domain("a.test")
            await store.add_account(NEWS, hash_password("news-pw"))
            news = await store.create_list("News", opt_in=OptIn.DOUBLE)
            await store.upsert_contacts([ContactInput(MEMBER)], mode=ImportMode.UPSERT,
                                        list_id=news.id, status=MembershipStatus.CONFIRMED,
                                        evidence=ConsentEvidence(ConsentSource.IMPORT, "v1"))
            service = InboundService(store, InboundConfig("mail.a.test", "submission"),
                                     SystemClock(), list_consent=GateListConsent(store))
            sent = await submit(service)  # the gate answers: a member, queued
            assert sent.code == 250 and sent.text.startswith("Ok: queued as"), sent
            assert len(await store.list_queue()) == 1
            kept = spool_files()  # the queued message's content, adopted by its accept

            with sqlite3.connect(db) as conn:  # the gate's table goes: its reads fail
                conn.execute("ALTER TABLE memberships RENAME TO memberships_gone")
            refused = await submit(service)
            assert refused == Reply(451, "Local error in processing; try again later", "4.3.0")
            assert spool_files() == kept
            assert len(await store.list_queue()) == 1  # nothing more queued
        finally:
            await store.close()

    caplog.set_level(logging.INFO, logger="mailprime.smtpd")
    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "mailprime.smtpd"]
    assert any("status=\"not accepted\"" in line and "memberships" in line for line in lines), lines
