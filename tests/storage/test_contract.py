"""The storage contract: one suite, run on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from mailprime.domain.errors import AlreadyExists, InvalidAddress, NotFound, StorageError
from mailprime.domain.ids import AccountId, QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DsnNotify,
    DsnRet,
    EnvelopeRecipient,
    EventKind,
    LocalDelivery,
    Priority,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.storage.sql import SqlStore, open_store
from mailprime.storage.sql.migrate import HEAD_REVISION, alembic_config
from mailprime.storage.sql.schema import blobs, metadata
from mailprime.storage.sql.urls import parse_database_url

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def remote(queue_id: QueueId, *addresses: str, content: bytes = MSG,
           priority: Priority = Priority.NORMAL) -> Acceptance:
    return Acceptance(queue_id=queue_id, content=content, sender="sender@example.org",
                      remote=tuple(EnvelopeRecipient(a) for a in addresses), priority=priority)


def local(account: AccountId, mailbox: str = "INBOX", content: bytes = MSG) -> Acceptance:
    return Acceptance(queue_id=new_queue_id(), content=content, sender="sender@example.org",
                      local=(LocalDelivery(account, "bob@example.com", mailbox),))


def sync_engine(url: str):  # type: ignore[no-untyped-def]
    return create_engine(parse_database_url(url).url, poolclass=NullPool)


# ---- schema and migrations ------------------------------------------------------------------


async def test_migrations_are_idempotent_and_match_the_schema(backend: Backend) -> None:
    url = backend.new_database()
    # Two workers starting at once on an empty database: the schema is created exactly once.
    first, second = await asyncio.gather(backend.open_raw(url), backend.open_raw(url))
    await first.close()
    await second.close()
    async with backend.open(url) as store:
        assert await store.list_domains() == []
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            assert ctx.get_current_revision() == HEAD_REVISION
            assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION
            assert compare_metadata(ctx, metadata) == []  # migrations build exactly schema.py
    finally:
        engine.dispose()


# ---- accept ---------------------------------------------------------------------------------


async def test_accept_files_locally_and_queues_remotely(backend: Backend) -> None:
    async with backend.open(max_queue_lifetime=timedelta(days=2)) as store:
        acct = await store.add_account("bob@example.com", "hash")
        qid = new_queue_id()
        await store.accept(Acceptance(
            queue_id=qid, content=MSG, sender="sender@example.org",
            local=(LocalDelivery(acct.id, "bob@example.com"),
                   LocalDelivery(acct.id, "bob@example.com", "Lists/News")),
            remote=(EnvelopeRecipient("x@Remote.EXAMPLE", frozenset({DsnNotify.SUCCESS, DsnNotify.DELAY}),
                                      "rfc822;x@remote.example"),
                    EnvelopeRecipient("y@other.example")),
            priority=Priority.TRANSACTIONAL, dsn_ret=DsnRet.HDRS, dsn_envid="env-1", smtputf8=True,
            source="submission", client="[127.0.0.1]"))
        now = backend.clock.now()

        inbox = await store.list_messages(acct.id, "inbox")  # INBOX is case-insensitive
        assert [(m.uid, m.size, m.flags, m.internal_date) for m in inbox] == [(1, len(MSG), frozenset(), now)]
        assert await store.read_blob(inbox[0].blob_id) == MSG
        news = await store.get_mailbox(acct.id, "Lists/News")  # created on first delivery
        assert news is not None and news.uidnext == 2 and news.special_use is None
        assert [m.uid for m in await store.list_messages(acct.id, "Lists/News")] == [1]
        box = await store.get_mailbox(acct.id, "INBOX")
        assert box is not None and box.uidnext == 2

        msg = await store.get_message(qid)
        assert msg is not None
        assert (msg.sender, msg.size, msg.priority, msg.dsn_ret, msg.dsn_envid, msg.smtputf8) == (
            "sender@example.org", len(MSG), Priority.TRANSACTIONAL, DsnRet.HDRS, "env-1", True)
        assert msg.created_at == now and msg.expires_at == now + timedelta(days=2)
        assert msg.blob_id == inbox[0].blob_id  # one copy of the content
        rcpts = await store.get_recipients(qid)
        assert [(r.address, r.domain, r.status, r.attempts, r.next_attempt_at) for r in rcpts] == [
            ("x@Remote.EXAMPLE", "remote.example", RecipientStatus.PENDING, 0, now),
            ("y@other.example", "other.example", RecipientStatus.PENDING, 0, now)]
        assert rcpts[0].notify == {DsnNotify.SUCCESS, DsnNotify.DELAY}
        assert rcpts[0].orcpt == "rfc822;x@remote.example"

        evts = await store.list_events(qid)
        assert [(e.kind, e.recipient) for e in evts] == [
            (EventKind.STORED, "bob@example.com"), (EventKind.STORED, "bob@example.com"),
            (EventKind.QUEUED, "x@Remote.EXAMPLE"), (EventKind.QUEUED, "y@other.example")]
        assert dict(evts[0].attrs)["mailbox"] == "INBOX" and dict(evts[0].attrs)["uid"] == "1"
        assert dict(evts[2].attrs)["source"] == "submission"
        assert all(e.at == now and e.at.tzinfo is not None for e in evts)


async def test_uids_are_unique_ascending_and_gapless_under_concurrency(backend: Backend) -> None:
    async with backend.open() as store:
        acct = await store.add_account("bob@example.com", "hash")
        await asyncio.gather(*(store.accept(local(acct.id)) for _ in range(50)))
        uids = [m.uid for m in await store.list_messages(acct.id, "INBOX")]
        assert uids == list(range(1, 51))
        box = await store.get_mailbox(acct.id, "INBOX")
        assert box is not None and box.uidnext == 51
        # Group commit: 50 concurrent acceptances did not need 50 commits.
        assert store.stats.accepted == 50
        assert store.stats.commits < store.stats.accepted
        assert store.stats.largest_batch > 1


async def test_group_commit_batches_queue_acceptances(backend: Backend) -> None:
    async with backend.open() as store:
        before = store.stats.commits
        qids = [new_queue_id() for _ in range(100)]
        await asyncio.gather(*(store.accept(remote(q, f"r{i}@example.net")) for i, q in enumerate(qids)))
        assert store.stats.accepted == 100
        assert store.stats.commits - before < 100
        assert len(await store.list_queue()) == 100


async def test_one_bad_acceptance_fails_alone(backend: Backend) -> None:
    async with backend.open() as store:
        acct = await store.add_account("bob@example.com", "hash")
        dup = new_queue_id()
        await store.accept(remote(dup, "a@example.net"))
        good = [local(acct.id) for _ in range(20)]
        bad = [remote(dup, "b@example.net"),  # queue id already taken
               local(AccountId(999_999))]  # no such account
        results = await asyncio.gather(*(store.accept(a) for a in [*good[:10], *bad, *good[10:]]),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert [type(e) for e in errors] == [AlreadyExists, StorageError]
        assert [m.uid for m in await store.list_messages(acct.id, "INBOX")] == list(range(1, 21))
        assert [r.address for r in await store.get_recipients(dup)] == ["a@example.net"]
        assert store.stats.failed >= 2


async def test_large_message_goes_to_the_spool_durably(backend: Backend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:  # records what was fsynced, then really fsyncs it
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    async with backend.open(inline_max=1024) as store:
        monkeypatch.setattr(os, "fsync", spy)
        big = b"Subject: big\r\n\r\n" + os.urandom(200_000).hex().encode()
        small = b"Subject: small\r\n\r\nhi\r\n"
        qid_big, qid_small = new_queue_id(), new_queue_id()
        await store.accept(remote(qid_big, "r@example.net", content=big))
        await store.accept(remote(qid_small, "r@example.net", content=small))
        monkeypatch.undo()

        files = list(backend.spool_dir.rglob("*.eml"))
        assert len(files) == 1 and files[0].read_bytes() == big
        assert str(files[0]) in synced and str(files[0].parent) in synced  # the file and its directory
        msg_big, msg_small = await store.get_message(qid_big), await store.get_message(qid_small)
        assert msg_big is not None and msg_small is not None
        assert await store.read_blob(msg_big.blob_id) == big
        assert await store.read_blob(msg_small.blob_id) == small

        # A stray file (an accept that never committed) is swept once old; referenced ones stay.
        stray = files[0].parent / "stray.0000.eml"
        stray.write_bytes(b"garbage")
        assert await store.sweep_spool() == 0  # too young to be sure it is garbage
        os.utime(stray, (time.time() - 7200, time.time() - 7200))
        os.utime(files[0], (time.time() - 7200, time.time() - 7200))
        assert await store.sweep_spool() == 1
        assert not stray.exists() and files[0].exists()

        assert await store.delete_message(qid_big)
        assert not files[0].exists()  # content nobody references is removed with its row
        with pytest.raises(NotFound):
            await store.read_blob(msg_big.blob_id)


_FOLDERS = st.sampled_from(["INBOX", "inbox", "Sent", "Lists/a b", "Ünïcödé"])
_REMOTES = st.sampled_from(["x@A.example", "y@b.EXAMPLE", "z@b.example"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.binary(max_size=2500), st.lists(_FOLDERS, max_size=3),
                          st.lists(_REMOTES, max_size=3)).filter(lambda t: bool(t[1] or t[2])),
                min_size=1, max_size=8))
def test_random_acceptances_keep_their_invariants(
        backend: Backend, batch: list[tuple[bytes, list[str], list[str]]]) -> None:
    """Concurrent acceptances of any content, to any folders and domains: content reads back
    (inline or spooled), and every mailbox's UIDs stay 1..n without gaps."""

    async def body() -> None:
        async with backend.open(inline_max=1000) as store:
            acct = (await store.get_account("bob@example.com")
                    or await store.add_account("bob@example.com", "h"))
            accs = [Acceptance(queue_id=new_queue_id(), content=content, sender="",
                               local=tuple(LocalDelivery(acct.id, "bob@example.com", f) for f in folders),
                               remote=tuple(EnvelopeRecipient(a) for a in remotes))
                    for content, folders, remotes in batch]
            await asyncio.gather(*(store.accept(a) for a in accs))
            for a in accs:
                if a.remote:
                    msg = await store.get_message(a.queue_id)
                    assert msg is not None and await store.read_blob(msg.blob_id) == a.content
                    assert [r.domain for r in await store.get_recipients(a.queue_id)] == [
                        r.address.partition("@")[2].lower() for r in a.remote]
            for box in await store.list_mailboxes(acct.id):
                msgs = await store.list_messages(acct.id, box.name)
                assert [m.uid for m in msgs] == list(range(1, box.uidnext))
                for m in msgs[-3:]:
                    assert len(await store.read_blob(m.blob_id)) == m.size

    asyncio.run(body())


# ---- queue ----------------------------------------------------------------------------------


async def test_claim_groups_by_domain_in_priority_order(backend: Backend) -> None:
    async with backend.open() as store:
        bulk, urgent = new_queue_id(), new_queue_id()
        await store.accept(remote(bulk, "a@one.example", "b@two.example", "c@ONE.example",
                                  priority=Priority.BULK))
        await store.accept(remote(urgent, "d@one.example", priority=Priority.TRANSACTIONAL))
        now = backend.clock.now()
        jobs = await store.claim_due(now, 10, "w1", 60)
        assert [(j.message.id, j.domain, [r.address for r in j.recipients]) for j in jobs] == [
            (urgent, "one.example", ["d@one.example"]),
            (bulk, "one.example", ["a@one.example", "c@ONE.example"]),
            (bulk, "two.example", ["b@two.example"])]
        assert await store.claim_due(now, 10, "w2", 60) == []  # all leased


async def test_two_claimers_never_share_a_recipient(backend: Backend) -> None:
    async with backend.open() as first, backend.open() as second:
        for i in range(30):
            await first.accept(remote(new_queue_id(), f"a{i}@one.example", f"b{i}@two.example",
                                      f"c{i}@two.example"))
        now = backend.clock.now()

        async def claimer(store: SqlStore, owner: str) -> list[int]:
            got: list[int] = []
            for _ in range(100):  # bounded: 60 jobs in batches of 7 need far fewer rounds
                jobs = await store.claim_due(now, 7, owner, 300)
                if not jobs:
                    break
                got.extend(r.id for j in jobs for r in j.recipients)
            return got

        a, b = await asyncio.gather(claimer(first, "w1"), claimer(second, "w2"))
        assert not set(a) & set(b)
        assert len(a) + len(b) == len(set(a) | set(b)) == 90
        if backend.name == "postgresql":  # SQLite's write lock may let one claimer take it all
            assert a and b


async def test_expired_lease_makes_a_job_claimable_again(backend: Backend) -> None:
    async with backend.open() as store:
        await store.accept(remote(new_queue_id(), "a@one.example"))
        t0 = backend.clock.now()
        [job] = await store.claim_due(t0, 5, "w1", 60)
        assert await store.next_due_at() == t0 + timedelta(seconds=60)  # not due while leased
        assert await store.claim_due(t0 + timedelta(seconds=30), 5, "w2", 60) == []
        [again] = await store.claim_due(t0 + timedelta(seconds=61), 5, "w2", 60)
        assert [r.id for r in again.recipients] == [r.id for r in job.recipients]
        await store.release_leases("w2")
        assert await store.next_due_at() == t0
        assert len(await store.claim_due(t0, 5, "w3", 60)) == 1


async def test_record_outcomes(backend: Backend) -> None:
    async with backend.open() as store:
        qid = new_queue_id()
        await store.accept(remote(qid, "ok@d.example", "later@d.example", "no@d.example", "old@d.example",
                                  "untouched@d.example"))
        t0 = backend.clock.now()
        [job] = await store.claim_due(t0, 5, "w1", 60)
        ids = {r.address: r.id for r in job.recipients}
        retry_at = t0 + timedelta(seconds=300)
        await store.record_outcomes(job, [
            RecipientOutcome(ids["ok@d.example"], RecipientStatus.DELIVERED, "250 2.0.0 ok", "mx.d.example"),
            RecipientOutcome(ids["later@d.example"], RecipientStatus.PENDING, "451 4.7.1 try later",
                             "mx.d.example", retry_at),
            RecipientOutcome(ids["no@d.example"], RecipientStatus.BOUNCED, "550 5.1.1 no such user",
                             "mx.d.example"),
            RecipientOutcome(ids["old@d.example"], RecipientStatus.EXPIRED, "expired"),
        ], t0)
        by_addr = {r.address: r for r in await store.get_recipients(qid)}
        assert {a: (r.status, r.attempts) for a, r in by_addr.items()} == {
            "ok@d.example": (RecipientStatus.DELIVERED, 1),
            "later@d.example": (RecipientStatus.PENDING, 1),
            "no@d.example": (RecipientStatus.BOUNCED, 1),
            "old@d.example": (RecipientStatus.EXPIRED, 1),
            "untouched@d.example": (RecipientStatus.PENDING, 0)}
        assert by_addr["later@d.example"].next_attempt_at == retry_at
        assert by_addr["no@d.example"].last_reply == "550 5.1.1 no such user"

        evts = [e for e in await store.list_events(qid) if e.kind is not EventKind.QUEUED]
        assert [(e.kind, e.recipient) for e in evts] == [
            (EventKind.DELIVERED, "ok@d.example"), (EventKind.DEFERRED, "later@d.example"),
            (EventKind.BOUNCED, "no@d.example"), (EventKind.EXPIRED, "old@d.example")]
        assert dict(evts[2].attrs) == {"reply": "550 5.1.1 no such user", "remote_host": "mx.d.example",
                                       "domain": "d.example"}
        assert evts[2].detail == "550 5.1.1 no such user"

        # The lease is gone for every recipient of the job: the untouched one is due right away,
        # the deferred one when its retry time comes.
        [job2] = await store.claim_due(t0, 5, "w2", 60)
        assert [r.address for r in job2.recipients] == ["untouched@d.example"]
        await store.record_outcomes(job2, [RecipientOutcome(job2.recipients[0].id,
                                                            RecipientStatus.DELIVERED, "250 ok")], t0)
        assert await store.next_due_at() == retry_at
        assert await store.finished_message_ids(10) == []
        [job3] = await store.claim_due(retry_at, 5, "w1", 60)
        await store.record_outcomes(job3, [RecipientOutcome(job3.recipients[0].id,
                                                            RecipientStatus.DELIVERED, "250 ok")], retry_at)
        assert await store.next_due_at() is None
        assert await store.finished_message_ids(10) == [qid]


async def test_retry_now_and_delete(backend: Backend) -> None:
    async with backend.open() as store:
        q1, q2 = new_queue_id(), new_queue_id()
        await store.accept(remote(q1, "a@one.example"))
        backend.clock.advance(1)  # list_queue is oldest first
        await store.accept(remote(q2, "b@two.example", "c@two.example"))
        t0 = backend.clock.now()
        later = t0 + timedelta(hours=1)
        for job in await store.claim_due(t0, 10, "w1", 60):
            await store.record_outcomes(job, [RecipientOutcome(r.id, RecipientStatus.PENDING, "451 later",
                                                               next_attempt_at=later)
                                              for r in job.recipients], t0)
        assert await store.claim_due(t0, 10, "w1", 60) == []
        assert await store.retry_now(q1, t0) == 1
        assert [j.message.id for j in await store.claim_due(t0, 10, "w1", 60)] == [q1]
        assert await store.retry_now(None, t0) == 3  # q1's recipient is leased but still pending

        listed = await store.list_queue()
        assert [(m.id, [r.address for r in rs]) for m, rs in listed] == [
            (q1, ["a@one.example"]), (q2, ["b@two.example", "c@two.example"])]
        assert await store.delete_message(q2)
        assert await store.get_message(q2) is None and await store.get_recipients(q2) == []
        assert not await store.delete_message(q2)
        assert [e.kind for e in await store.list_events(q2)][-1] is EventKind.DELETED
        assert [m.id for m, _ in await store.list_queue()] == [q1]


# ---- directory ------------------------------------------------------------------------------


async def test_domains(backend: Backend) -> None:
    async with backend.open() as store:
        await store.add_domain("Example.COM")
        await store.add_domain("example.com")  # idempotent
        await store.add_domain("b.example")
        assert await store.list_domains() == ["b.example", "example.com"]
        assert await store.is_local_domain("EXAMPLE.com.")
        assert not await store.is_local_domain("other.example")
        assert not await store.is_local_domain("not a domain")
        await store.remove_domain("EXAMPLE.COM")
        assert await store.list_domains() == ["b.example"]


async def test_accounts_are_case_insensitive_in_the_local_part(backend: Backend) -> None:
    async with backend.open() as store:
        acct = await store.add_account("Alice@Example.COM", "h1")
        assert acct.address == "Alice@example.com" and acct.created_at.tzinfo is not None
        assert await store.get_account("alice@example.com") == acct
        assert await store.get_account("ALICE@EXAMPLE.COM") == acct
        assert await store.get_account_by_id(acct.id) == acct
        assert await store.get_account("nobody@example.com") is None
        assert await store.get_account("not-an-address") is None
        with pytest.raises(AlreadyExists):
            await store.add_account("aLiCe@example.com", "h2")
        with pytest.raises(InvalidAddress):
            await store.add_account("no-at-sign", "h2")

        boxes = await store.list_mailboxes(acct.id)
        assert [(b.name, b.special_use, b.uidnext) for b in boxes] == [
            ("INBOX", None, 1), ("Sent", "\\Sent", 1), ("Drafts", "\\Drafts", 1),
            ("Trash", "\\Trash", 1), ("Junk", "\\Junk", 1), ("Archive", "\\Archive", 1)]
        assert all(0 < b.uidvalidity < 2**32 for b in boxes)

        await store.set_password("ALICE@example.com", "h3")
        fetched = await store.get_account("alice@example.com")
        assert fetched is not None and fetched.password_hash == "h3"
        with pytest.raises(NotFound):
            await store.set_password("nobody@example.com", "x")

        await store.add_account("bob@example.com", "h")
        assert [a.address for a in await store.list_accounts()] == ["Alice@example.com", "bob@example.com"]
        await store.accept(local(acct.id))
        await store.remove_account("alice@EXAMPLE.com")
        assert await store.get_account("alice@example.com") is None
        assert await store.list_mailboxes(acct.id) == []
        with pytest.raises(NotFound):
            await store.remove_account("alice@example.com")


async def test_aliases_exact_first_then_catch_all(backend: Backend) -> None:
    async with backend.open() as store:
        await store.add_alias("Sales@Example.com", "bob@example.com")
        await store.add_alias("sales@example.com", "carol@example.com")
        await store.add_alias("sales@example.com", "bob@example.com")  # idempotent
        await store.add_alias("@EXAMPLE.com", "catchall@example.com")
        assert await store.resolve_aliases("SALES@example.COM") == ["bob@example.com", "carol@example.com"]
        assert await store.resolve_aliases("anyone@example.com") == ["catchall@example.com"]
        assert await store.resolve_aliases("sales@other.example") == []
        assert await store.resolve_aliases("garbage") == []
        assert [(a.source, a.destination) for a in await store.list_aliases()] == [
            ("@example.com", "catchall@example.com"),
            ("sales@example.com", "bob@example.com"), ("sales@example.com", "carol@example.com")]
        await store.remove_alias("sales@example.com", "bob@example.com")
        assert await store.resolve_aliases("sales@example.com") == ["carol@example.com"]
        await store.remove_alias("SALES@example.com")
        assert await store.resolve_aliases("sales@example.com") == ["catchall@example.com"]


# ---- events ---------------------------------------------------------------------------------


async def test_event_log(backend: Backend) -> None:
    async with backend.open() as store:
        q1, q2 = new_queue_id(), new_queue_id()
        await store.append(EventKind.DSN_SENT, q1, "a@example.net", "dsn to sender",
                           (("dsn_queue_id", "X1"), ("action", "failed")))
        backend.clock.advance(5)
        await store.append(EventKind.DELIVERED, q2, None)
        all_events = await store.list_events()
        assert [(e.kind, e.queue_id) for e in all_events] == [(EventKind.DSN_SENT, q1),
                                                              (EventKind.DELIVERED, q2)]
        first = all_events[0]
        assert first.attrs == (("dsn_queue_id", "X1"), ("action", "failed"))
        assert first.detail == "dsn to sender" and first.recipient == "a@example.net"
        assert all_events[1].at - first.at == timedelta(seconds=5)
        assert all_events[0].id < all_events[1].id
        assert [e.queue_id for e in await store.list_events(q2)] == [q2]
        assert len(await store.list_events(limit=1)) == 1


# ---- durability and lifecycle ---------------------------------------------------------------


async def test_everything_survives_close_and_reopen(backend: Backend) -> None:
    async with backend.open(inline_max=100) as store:
        acct = await store.add_account("bob@example.com", "hash")
        big = MSG + b"x" * 1000
        await store.accept(local(acct.id, content=big))
        qid = new_queue_id()
        await store.accept(remote(qid, "r@example.net"))
    async with backend.open(inline_max=100) as store:
        [m] = await store.list_messages(acct.id, "INBOX")
        assert await store.read_blob(m.blob_id) == big
        assert [r.address for r in await store.get_recipients(qid)] == ["r@example.net"]
        await store.accept(local(acct.id))
        assert [m.uid for m in await store.list_messages(acct.id, "INBOX")] == [1, 2]
    with pytest.raises(StorageError):
        await store.accept(local(acct.id))  # closed
    with pytest.raises(StorageError):
        await store.list_domains()


_WORKER = """
import asyncio, sys
from pathlib import Path
from mailprime.domain.ids import AccountId, new_queue_id
from mailprime.domain.mail import Acceptance, LocalDelivery
from mailprime.storage.sql import open_store

async def main() -> None:
    store = await open_store(sys.argv[1], spool_dir=Path(sys.argv[2]), inline_max=65536)
    try:
        await asyncio.gather(*(store.accept(Acceptance(
            queue_id=new_queue_id(), content=b"hi\\r\\n", sender="",
            local=(LocalDelivery(AccountId(int(sys.argv[3])), "bob@example.com"),)))
            for _ in range(40)))
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_worker_processes_share_one_database(backend: Backend) -> None:
    async with backend.open() as store:
        acct = await store.add_account("bob@example.com", "hash")
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, backend.url, str(backend.spool_dir),
                                   str(acct.id)]) for _ in range(2)]
        codes = await asyncio.gather(*(asyncio.to_thread(p.wait, 60) for p in procs))
        assert codes == [0, 0]
        assert [m.uid for m in await store.list_messages(acct.id, "INBOX")] == list(range(1, 81))


async def test_throughput_with_twenty_acceptors(backend: Backend, record_property) -> None:  # type: ignore[no-untyped-def]
    """Not a timing assertion: records accepts/s (see `pytest -rA` / junit) for the report."""
    content = b"Subject: load\r\n\r\n" + b"x" * 10_240
    async with backend.open() as store:
        total, acceptors = 400, 20

        async def acceptor(n: int) -> None:
            for i in range(total // acceptors):
                await store.accept(remote(new_queue_id(), f"r{n}.{i}@example.net", content=content))

        started = time.perf_counter()
        await asyncio.gather(*(acceptor(n) for n in range(acceptors)))
        rate = total / (time.perf_counter() - started)
        record_property(f"{backend.name}_accepts_per_second", round(rate))
        print(f"{backend.name}: {rate:.0f} accepts/s, {store.stats}")
        assert store.stats.accepted == total
        assert len(await store.list_queue(limit=1000)) == total
        engine = sync_engine(backend.url)
        try:
            with engine.connect() as conn:
                assert len(conn.execute(select(blobs.c.id)).all()) == total
        finally:
            engine.dispose()


def test_database_urls() -> None:
    assert parse_database_url("sqlite:////var/lib/m.db").url.drivername == "sqlite+pysqlite"
    pg = parse_database_url("postgres://u:secret@db.example:5433/mail")
    assert pg.url.drivername == "postgresql+psycopg" and pg.backend == "postgresql"
    assert "secret" not in pg.render()
    for bad in ("mysql://x/y", "sqlite://", "sqlite:///:memory:", "nonsense"):
        with pytest.raises(Exception, match=r"storage\.url"):
            parse_database_url(bad)


def test_spool_paths_stay_inside_the_spool(tmp_path: Path) -> None:
    from mailprime.storage.sql.spool import Spool
    spool = Spool(tmp_path / "spool")
    spool.ensure_root()
    rel = spool.write("../../etc/passwd", b"data")
    assert ".." not in rel and spool.read(rel) == b"data"
    with pytest.raises(StorageError):
        spool.read("../../outside.eml")


def test_sqlite_connections_are_durable_and_lock_for_writing(tmp_path: Path) -> None:
    import sqlite3

    from mailprime.storage.sql.engines import reader_engine, writer_engine

    db = parse_database_url(f"sqlite:///{tmp_path / 'p.db'}")
    writer, reader = writer_engine(db), reader_engine(db, 2)
    try:
        for engine in (writer, reader):
            with engine.connect() as conn:
                pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                          for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
                assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                                  "busy_timeout": 30_000}
        with writer.begin():  # BEGIN IMMEDIATE: the write lock is ours before the first statement
            other = sqlite3.connect(tmp_path / "p.db", timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                with reader.begin() as conn:  # readers are never blocked (WAL)
                    assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            finally:
                other.close()
    finally:
        writer.dispose()
        reader.dispose()


def test_two_stores_opened_at_once_in_one_process_both_migrate(tmp_path: Path) -> None:
    """Regression: Alembic's context is process-global; concurrent in-process upgrades (e.g.
    two instances in one test, or a tool opening two databases) used to break each other."""
    async def main() -> None:
        stores = await asyncio.gather(*(
            open_store(f"sqlite:///{tmp_path / name}.db", spool_dir=tmp_path / f"{name}-spool",
                  inline_max=1024) for name in ("a", "b", "c")))
        for store in stores:
            await store.add_domain(f"{id(store)}.test")
            await store.close()

    asyncio.run(main())
