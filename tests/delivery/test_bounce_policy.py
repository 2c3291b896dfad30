"""The synchronous bounce policy with the real worker, store (SQLite) and suppression policy: a
soft bounce counts once per message and recipient, whatever other replies (our own shaping
deferrals above all) come between two of them, and the soft-bounce counts are purged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from mailprime.delivery import bounce_policy
from mailprime.delivery.bounce_policy import SyncBounces
from mailprime.delivery.schedule import RetrySchedule
from mailprime.delivery.worker import DeliveryWorker, WorkerConfig
from mailprime.domain.deliverability import SuppressionReason
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    EnvelopeRecipient,
    EventKind,
    Priority,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.services import suppression
from mailprime.services.suppression import SuppressionConfig, SuppressionPolicy
from mailprime.storage.ports import BlobReader
from mailprime.storage.sql import SqlStore, open_store
from tests.storage.conftest import FixedClock

FULL = "452 4.2.2 <full@b.test>: Mailbox full"
# What delivery.smtp_transport answers for a paused provider group, with no SMTP attempt.
PAUSED = "451 4.7.0 throttled by mx.b.test, resuming at 2030-01-02T05:00:00Z"


@dataclass
class SequenceTransport:
    """A Transport (the port) answering each attempt with the next reply of a list."""

    replies: list[str]
    attempts: int = 0
    calls: list[str] = field(default_factory=list)

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        reply = self.replies[min(self.attempts, len(self.replies) - 1)]
        self.attempts += 1
        self.calls.append(reply)
        status = RecipientStatus.DELIVERED if reply[0] == "2" else RecipientStatus.PENDING
        return [RecipientOutcome(r.id, status, reply) for r in job.recipients]

    async def close(self) -> None:
        return None


class NoDsns:
    """The MailInjector port; deferrals send no DSN in these tests."""

    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "") -> QueueId | None:
        return None


@dataclass
class Rig:
    store: SqlStore
    clock: FixedClock
    transport: SequenceTransport
    worker: DeliveryWorker

    async def send(self, recipient: str) -> QueueId:
        qid = new_queue_id()
        await self.store.accept(Acceptance(queue_id=qid, content=b"Subject: s\r\n\r\nbody\r\n",
                                           sender="alice@a.test",
                                           remote=(EnvelopeRecipient(recipient),)))
        await self.worker.run_until_idle()
        return qid

    async def retry(self) -> None:
        self.clock.advance(7200)  # past the first retry interval
        await self.worker.run_until_idle()


@asynccontextmanager
async def rig(tmp: Path, replies: list[str], *, soft_limit: int = 2) -> AsyncIterator[Rig]:
    clock = FixedClock()
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024, clock=clock)
    await store.add_domain("a.test")
    policy = SuppressionPolicy(store, clock, SuppressionConfig(soft_bounce_limit=soft_limit))
    transport = SequenceTransport(replies)
    worker = DeliveryWorker(store, transport, schedule=RetrySchedule(60, 2.0, 3600, 86400),
                            clock=clock, injector=NoDsns(),
                            config=WorkerConfig(hostname="mail.a.test", owner="node:1"),
                            bounces=SyncBounces(policy))
    try:
        yield Rig(store, clock, transport, worker)
    finally:
        await store.close()


def test_the_countable_attr_is_the_same_pair_in_both_layers() -> None:
    # delivery and services may not import each other: each spells it; they must agree.
    assert bounce_policy.COUNTABLE == suppression.COUNTABLE


def test_a_shaping_deferral_between_two_soft_bounces_does_not_make_the_second_count(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, [FULL, PAUSED, FULL, FULL]) as r:
            qid = await r.send("full@b.test")
            for _ in range(3):
                await r.retry()
            assert r.transport.calls == [FULL, PAUSED, FULL, FULL]
            deferred = [e for e in await r.store.list_events(qid) if e.kind is EventKind.DEFERRED]
            assert [dict(e.attrs).get("countable") for e in deferred] == ["yes", None, "yes", "yes"]
            assert dict(deferred[1].attrs)["throttle"] == "yes"
            # Limit 2: one message is one soft bounce, however often it was deferred for it.
            assert await r.store.find_suppression("full@b.test") is None
            # A second message is the second soft bounce.
            r.transport.attempts = 0
            r.transport.replies = [FULL]
            await r.send("full@b.test")
            soft = await r.store.find_suppression("full@b.test")
            assert soft is not None and soft.reason is SuppressionReason.SOFT_BOUNCES

    asyncio.run(scenario())


def test_throttling_alone_never_counts(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, [PAUSED], soft_limit=1) as r:
            await r.send("slow@b.test")
            await r.retry()
            await r.send("slow@b.test")
            assert await r.store.find_suppression("slow@b.test") is None

    asyncio.run(scenario())


def test_old_soft_bounce_counts_are_purged_at_most_hourly(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, [FULL], soft_limit=50) as r:
            window = timedelta(days=7)  # SuppressionConfig's default soft_bounce_days
            wide = r.clock.now() - 10 * window  # a look-up window that would count everything

            async def count(address: str) -> int:  # notes one more, returns the total
                return await r.store.record_soft_bounce(address, "", r.clock.now(), wide)

            await r.send("old@b.test")  # counted; this process's first purge ran (nothing)
            r.clock.advance((window + timedelta(minutes=30)).total_seconds())
            await r.send("a@b.test")  # an hour and more since the last purge: old@'s row goes
            assert await count("old@b.test") == 1
            # A row that leaves the window 5 minutes from now stays until the next hourly purge.
            await r.store.record_soft_bounce("edge@b.test", "", r.clock.now() - window
                                             + timedelta(minutes=5), wide)
            r.clock.advance(20 * 60)
            await r.send("b@b.test")  # 20 minutes after the last purge: none now
            assert await count("edge@b.test") == 2
            r.clock.advance(3600)
            await r.send("c@b.test")  # purged again: edge@'s first row is outside the window
            assert await count("edge@b.test") == 2  # its second (20 minutes ago) and this one

    asyncio.run(scenario())
