"""The worker's side of the relay fast path: it takes jobs leased at accept only while it has a
free slot, and runs them (through the slot and destination caps) with no claim."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from mailprime.delivery.schedule import RetrySchedule
from mailprime.delivery.worker import DeliveryWorker, WorkerConfig
from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    EnvelopeRecipient,
    Priority,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.storage.ports import BlobReader
from mailprime.storage.sql import open_store


class GatedTransport:
    """A Transport (a port) that holds every delivery until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.started: list[str] = []

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        self.started.append(job.message.id)
        self.entered.set()
        await self.gate.wait()
        return [RecipientOutcome(r.id, RecipientStatus.DELIVERED, "250 ok") for r in job.recipients]

    async def close(self) -> None:
        return None


class NoInjector:
    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "") -> QueueId | None:
        raise AssertionError("no DSN expected")


def test_worker_leases_at_accept_only_with_a_free_slot(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", spool_dir=tmp_path / "spool",
                                 inline_max=64 * 1024)
        transport = GatedTransport()
        worker = DeliveryWorker(store, transport, schedule=RetrySchedule(60, 2.0, 3600, 86400),
                                clock=SystemClock(), injector=NoInjector(),
                                config=WorkerConfig(hostname="h", concurrency=1, owner="node:1"))
        try:
            def acceptance() -> Acceptance:
                return Acceptance(queue_id=new_queue_id(), content=b"Subject: x\r\n\r\nx\r\n",
                                  sender="s@a.test", remote=(EnvelopeRecipient("r@b.test"),))

            assert worker.direct_lease_owner() == "node:1"
            first = await store.accept(acceptance(), lease_to="node:1", lease_seconds=60)
            worker.submit(first.jobs)
            await asyncio.wait_for(transport.entered.wait(), 10)  # it loads the content first
            assert transport.started == [first.jobs[0].message.id]
            # The one slot is busy: a new message is left to the queue, unleased.
            assert worker.direct_lease_owner() is None
            queued = acceptance()
            assert (await store.accept(queued)).jobs == ()
            transport.gate.set()
            await worker.run_until_idle()
            assert (worker.direct_jobs, worker.claimed_jobs) == (1, 1)
            assert worker.direct_lease_owner() == "node:1"
            for qid in (first.jobs[0].message.id, queued.queue_id):
                (rcpt,) = await store.get_recipients(qid)
                assert rcpt.status is RecipientStatus.DELIVERED
            assert list(await store.lease_owners()) == []
        finally:
            await worker.stop(0)
            await store.close()

    asyncio.run(scenario())
