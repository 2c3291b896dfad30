"""Accept with a lease (the relay fast path): remote recipients written already leased to the
local worker and handed back as delivery jobs, on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from mailprime.domain.errors import AlreadyExists
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DsnNotify,
    DsnRet,
    EnvelopeRecipient,
    LocalDelivery,
    Priority,
    RecipientOutcome,
    RecipientStatus,
)

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def remote(queue_id: QueueId, *addresses: str) -> Acceptance:
    return Acceptance(queue_id=queue_id, content=MSG, sender="sender@example.org",
                      remote=tuple(EnvelopeRecipient(a) for a in addresses))


async def test_leased_accept_returns_the_jobs_a_claim_would(backend: Backend) -> None:
    async with backend.open(max_queue_lifetime=timedelta(days=2)) as store:
        qid = new_queue_id()
        result = await store.accept(Acceptance(
            queue_id=qid, content=MSG, sender="sender@example.org",
            remote=(EnvelopeRecipient("a@One.example", frozenset({DsnNotify.SUCCESS}),
                                      "rfc822;a@one.example"),
                    EnvelopeRecipient("b@two.example"), EnvelopeRecipient("c@one.EXAMPLE")),
            priority=Priority.TRANSACTIONAL, dsn_ret=DsnRet.HDRS, dsn_envid="env-1", smtputf8=True),
            lease_to="node:1", lease_seconds=60)
        t0 = backend.clock.now()
        assert [(j.domain, [r.address for r in j.recipients]) for j in result.jobs] == [
            ("one.example", ["a@One.example", "c@one.EXAMPLE"]), ("two.example", ["b@two.example"])]
        # Leased: nobody can claim them until the lease runs out, and the owner is known.
        assert await store.claim_due(t0, 10, "other", 60) == []
        assert list(await store.lease_owners()) == ["node:1"]
        assert await store.next_due_at() == t0 + timedelta(seconds=60)
        # Once it has run out, a claim returns exactly the jobs the accept handed out (the
        # values read back from the rows equal those built from what was written).
        claimed = await store.claim_due(t0 + timedelta(seconds=61), 10, "other", 60)
        assert sorted(claimed, key=lambda j: j.domain) == list(result.jobs)
        assert [r.id for j in result.jobs for r in j.recipients] != []
        assert {r.id for j in result.jobs for r in j.recipients} == {
            r.id for r in await store.get_recipients(qid)}


async def test_leased_job_is_delivered_like_a_claimed_one(backend: Backend) -> None:
    async with backend.open() as store:
        qid = new_queue_id()
        (job,) = (await store.accept(remote(qid, "a@one.example"), lease_to="w", lease_seconds=900)).jobs
        assert await store.read_blob(job.message.blob_id) == MSG
        now = backend.clock.advance(1)
        await store.record_outcomes(job, [RecipientOutcome(job.recipients[0].id, RecipientStatus.DELIVERED,
                                                           "250 ok")], now)
        (rcpt,) = await store.get_recipients(qid)
        assert (rcpt.status, rcpt.attempts) == (RecipientStatus.DELIVERED, 1)
        assert list(await store.lease_owners()) == []


async def test_released_lease_is_claimable_at_once(backend: Backend) -> None:
    # What reclaim_orphaned_leases does for a dead process's jobs, and stop() for a live one's.
    async with backend.open() as store:
        (job,) = (await store.accept(remote(new_queue_id(), "a@one.example"),
                                     lease_to="dead:1", lease_seconds=900)).jobs
        await store.release_leases("dead:1")
        (again,) = await store.claim_due(backend.clock.now(), 10, "w2", 60)
        assert again == job


async def test_unleased_and_local_accepts_return_no_jobs(backend: Backend) -> None:
    async with backend.open() as store:
        acct = await store.add_account("bob@example.com", "hash")
        plain = await store.accept(remote(new_queue_id(), "a@one.example"))
        local_only = await store.accept(Acceptance(
            queue_id=new_queue_id(), content=MSG, sender="s@example.org",
            local=(LocalDelivery(acct.id, "bob@example.com"),)), lease_to="w", lease_seconds=60)
        assert plain.jobs == () and local_only.jobs == ()
        assert list(await store.lease_owners()) == []
        assert len(await store.claim_due(backend.clock.now(), 10, "w", 60)) == 1


async def test_leased_and_plain_accepts_share_a_batch(backend: Backend) -> None:
    async with backend.open() as store:
        qids = [new_queue_id() for _ in range(60)]
        results = await asyncio.gather(*(
            store.accept(remote(q, f"r{i}@d{i % 3}.example", f"s{i}@d{i % 3}.example"),
                         lease_to="w" if i % 2 else None, lease_seconds=60)
            for i, q in enumerate(qids)))
        assert store.stats.commits < 60  # they were batched
        for i, (q, res) in enumerate(zip(qids, results, strict=True)):
            if i % 2:
                (job,) = res.jobs
                assert job.message.id == q
                assert [(r.id, r.address) for r in job.recipients] == [
                    (r.id, r.address) for r in await store.get_recipients(q)]
            else:
                assert res.jobs == ()
        claimed = await store.claim_due(backend.clock.now(), 100, "x", 60)
        assert sorted(j.message.id for j in claimed) == sorted(qids[0::2])


async def test_a_failed_batch_hands_out_only_committed_recipients(backend: Backend) -> None:
    async with backend.open() as store:
        dup = new_queue_id()
        await store.accept(remote(dup, "a@example.net"))
        good = [remote(new_queue_id(), f"g{i}@example.net") for i in range(10)]
        results = await asyncio.gather(
            *(store.accept(a, lease_to="w", lease_seconds=60) for a in [*good[:5], remote(dup, "b@x.example"),
                                                                          *good[5:]]),
            return_exceptions=True)
        assert sum(isinstance(r, AlreadyExists) for r in results) == 1
        for a, res in zip(good, [r for r in results if not isinstance(r, BaseException)], strict=True):
            (job,) = res.jobs
            assert [r.id for r in job.recipients] == [r.id for r in await store.get_recipients(a.queue_id)]
