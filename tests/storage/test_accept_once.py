"""A queue id is accepted once (storage/sql/accept.py), on SQLite and PostgreSQL (see
conftest.py): a message for local mailboxes only (never queued, so the queue's primary key
says nothing) and a remote one delivered and gone from the queue are refused a second accept
with AlreadyExists, alone (not their group-commit batch-mates), in a batch, and on
PostgreSQL when two processes accept the same id at the same moment."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from mailprime.domain.errors import AlreadyExists, DomainError
from mailprime.domain.ids import new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient, EventKind, LocalDelivery
from mailprime.storage.sql.accept import AcceptRecord, AcceptWriter
from mailprime.storage.sql.engines import writer_engine
from mailprime.storage.sql.folders import UidValidityClock
from mailprime.storage.sql.urls import parse_database_url

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


async def test_a_local_only_message_is_not_filed_twice(backend: Backend) -> None:
    async with backend.open() as store:
        account = await store.add_account("desk@a.test", "x")
        local = Acceptance(queue_id=new_queue_id(), content=MSG, sender="s@example.org",
                           local=(LocalDelivery(account.id, "desk@a.test"),))
        await store.accept(local)
        with pytest.raises(AlreadyExists, match=f"message {local.queue_id} was accepted"):
            await store.accept(local)
        other = replace(local, queue_id=new_queue_id())
        with pytest.raises(AlreadyExists):  # all or none: `other` is not written either
            await store.accept_many([other, local])
        with pytest.raises(AlreadyExists, match="twice"):
            await store.accept_many([other, other])
        assert len(await store.list_messages(account.id, "INBOX")) == 1
        assert [e.kind for e in await store.list_events(local.queue_id)] == [EventKind.STORED]
        assert list(await store.list_events(other.queue_id)) == []
        # Refused alone: an accept committed with it in one group-commit batch goes in.
        fresh = replace(local, queue_id=new_queue_id())
        again, done = await asyncio.gather(store.accept(local), store.accept(fresh),
                                           return_exceptions=True)
        assert isinstance(again, AlreadyExists) and not isinstance(done, BaseException)
        assert len(await store.list_messages(account.id, "INBOX")) == 2


async def test_a_remote_message_gone_from_the_queue_is_not_accepted_again(
        backend: Backend) -> None:
    async with backend.open() as store:
        sent = Acceptance(queue_id=new_queue_id(), content=MSG, sender="s@example.org",
                          remote=(EnvelopeRecipient("a@one.example"),))
        await store.accept(sent)
        with pytest.raises(AlreadyExists):
            await store.accept(sent)
        assert await store.delete_message(sent.queue_id)  # as after its delivery
        with pytest.raises(AlreadyExists):
            await store.accept(sent)
        assert await store.list_queue() == []


async def test_two_processes_accepting_one_local_only_id_at_once(backend: Backend) -> None:
    """Each looks for an earlier accept before writing; neither sees the other's uncommitted
    rows. The second must wait for the first's commit and then see it, not file a copy."""
    if backend.name != "postgresql":
        pytest.skip("SQLite: one writer at a time (BEGIN IMMEDIATE), nothing interleaves")
    async with backend.open() as store:
        account = await store.add_account("desk@a.test", "x")
    local = Acceptance(queue_id=new_queue_id(), content=MSG, sender="s@example.org",
                       local=(LocalDelivery(account.id, "desk@a.test"),))
    db = parse_database_url(backend.url)
    write = AcceptWriter(dialect_name="postgresql", clock=backend.clock,
                         queue_lifetime=timedelta(days=1), uidvalidity=UidValidityClock())
    engines = [writer_engine(db), writer_engine(db)]
    watcher = create_engine(db.url, poolclass=NullPool)
    second: list[object] = []
    try:
        with engines[0].connect() as a, engines[1].connect() as b, watcher.connect() as watch:
            pid = b.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            b.rollback()
            first = a.begin()
            write(a, [AcceptRecord(local)])  # written, not committed yet

            def other_process() -> None:
                try:
                    with b.begin():
                        write(b, [AcceptRecord(local)])
                    second.append("accepted")
                except DomainError as exc:
                    second.append(exc)

            thread = threading.Thread(target=other_process)
            thread.start()
            # Commit only once the server says the other one waits for a lock: its look for
            # an earlier accept is then either behind it (the bug) or waits with it.
            for _ in range(3000):
                state = watch.execute(text("SELECT wait_event_type FROM pg_stat_activity "
                                           "WHERE pid = :pid"), {"pid": pid}).scalar()
                watch.rollback()
                if state == "Lock":
                    break
                time.sleep(0.005)
            else:
                pytest.fail("the second accept never waited for the first")
            first.commit()
            thread.join(timeout=60)
            assert not thread.is_alive()
    finally:
        for engine in (*engines, watcher):
            engine.dispose()
    assert len(second) == 1 and isinstance(second[0], AlreadyExists), second
    async with backend.open() as store:
        assert len(await store.list_messages(account.id, "INBOX")) == 1
