"""The worker with VERP and the synchronous bounce policy, on a real SQLite store: one
transaction per recipient with its own signed sender, each recipient's outcome written as soon as
its transaction ends (a stop half-way sends nobody twice), a split job that never outlives its
lease, the events record_outcomes appends carry the classification, and failures reach the
suppression list (hard at once, soft once per message, throttling never)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailprime.delivery.bounce_policy import SyncBounces, counts_as_soft_bounce, is_throttle
from mailprime.delivery.schedule import RetrySchedule
from mailprime.delivery.verp_split import VerpSplitter
from mailprime.delivery.worker import DeliveryWorker, WorkerConfig
from mailprime.domain.deliverability import SuppressionReason
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    EnvelopeRecipient,
    Event,
    EventKind,
    Priority,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.message.bounce_reason import classify_reply
from mailprime.message.verp import VerpCodec
from mailprime.services.suppression import SuppressionConfig, SuppressionPolicy
from mailprime.storage.ports import BlobReader
from mailprime.storage.sql import SqlStore, open_store
from tests.storage.conftest import FixedClock

SECRET = bytes(range(32))


@dataclass
class ScriptedTransport:
    """A Transport (the port) that answers each recipient from a table and records every call:
    the sender, the recipients and the content it streamed."""

    replies: dict[str, str] = field(default_factory=dict)
    crash_for: str = ""
    calls: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    hang_for: str = ""  # the transaction of this recipient never ends (until cancelled)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)  # set when it has started
    before_each: Callable[[], Awaitable[None]] | None = None

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        data = b"".join([chunk async for chunk in content.chunks()])
        self.calls.append((job.message.wire_sender, [r.address for r in job.recipients], data))
        if self.before_each is not None:
            await self.before_each()
        if any(r.address == self.hang_for for r in job.recipients):
            self.hanging.set()
            await asyncio.Event().wait()
        out = []
        for r in job.recipients:
            if r.address == self.crash_for:
                raise RuntimeError("boom")
            reply = self.replies.get(r.address, "250 2.0.0 Ok")
            status = (RecipientStatus.DELIVERED if reply[0] == "2" else
                      RecipientStatus.BOUNCED if reply[0] == "5" else RecipientStatus.PENDING)
            out.append(RecipientOutcome(r.id, status, reply, remote_host="mx.b.test[192.0.2.1]:25"))
        return out

    async def close(self) -> None:
        return None


class DsnSink:
    """The MailInjector port: keeps the DSNs the notifier would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Sequence[str]]] = []

    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "") -> QueueId | None:
        self.sent.append((sender, recipients))
        return None


@dataclass
class Rig:
    store: SqlStore
    transport: ScriptedTransport
    worker: DeliveryWorker
    codec: VerpCodec
    clock: FixedClock
    dsns: DsnSink
    restart: Callable[[ScriptedTransport], DeliveryWorker]  # a new process on the same queue

    async def accept(self, sender: str, recipients: list[str]) -> QueueId:
        qid = new_queue_id()
        await self.store.accept(Acceptance(
            queue_id=qid, content=b"Subject: s\r\n\r\nbody\r\n", sender=sender,
            remote=tuple(EnvelopeRecipient(r) for r in recipients)))
        return qid

    async def send(self, sender: str, recipients: list[str]) -> QueueId:
        qid = new_queue_id()
        await self.store.accept(Acceptance(
            queue_id=qid, content=b"Subject: s\r\n\r\nbody\r\n", sender=sender,
            remote=tuple(EnvelopeRecipient(r) for r in recipients)))
        await self.worker.run_until_idle()
        return qid

    async def events(self, qid: QueueId, kind: EventKind) -> dict[str, Event]:
        return {e.recipient or "": e for e in await self.store.list_events(qid) if e.kind is kind}


@asynccontextmanager
async def rig(tmp: Path, transport: ScriptedTransport, *, verp: bool = True,
              bounce_domain: str = "", soft_limit: int = 2) -> AsyncIterator[Rig]:
    clock = FixedClock()
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024, clock=clock)
    await store.add_domain("a.test")
    codec = VerpCodec([SECRET])
    policy = SuppressionPolicy(store, clock, SuppressionConfig(soft_bounce_limit=soft_limit))
    dsns = DsnSink()

    def worker_for(transport: ScriptedTransport, owner: str = "node:1") -> DeliveryWorker:
        return DeliveryWorker(
            store, transport, schedule=RetrySchedule(60, 2.0, 3600, 86400), clock=clock,
            injector=dsns, config=WorkerConfig(hostname="mail.a.test", owner=owner),
            verp=VerpSplitter(codec, store, bounce_domain=bounce_domain) if verp else None,
            bounces=SyncBounces(policy))

    try:
        yield Rig(store, transport, worker_for(transport), codec, clock, dsns,
                  lambda t: worker_for(t, "node:2"))
    finally:
        await store.close()


def test_each_recipient_gets_its_own_transaction_and_signed_sender(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, ScriptedTransport()) as r:
            qid = await r.send("alice@a.test", ["x@b.test", "y@b.test", "z@b.test"])
            ids = {rc.address: rc.id for rc in await r.store.get_recipients(qid)}
            assert [rcpts for _s, rcpts, _d in r.transport.calls] == [["x@b.test"], ["y@b.test"],
                                                                      ["z@b.test"]]
            for sender, (address,), data in r.transport.calls:
                assert sender.startswith("bounces+") and sender.endswith("@a.test")
                target = r.codec.decode(sender)
                assert target is not None and (target.queue_id, target.recipient_id) == (
                    qid, ids[address])
                assert data == b"Subject: s\r\n\r\nbody\r\n"  # streamed anew each time
            assert set(await r.events(qid, EventKind.DELIVERED)) == {"x@b.test", "y@b.test",
                                                                      "z@b.test"}
            assert r.worker.verp is not None and r.worker.verp.split_jobs == 1

    asyncio.run(scenario())


def test_configured_bounce_domain(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, ScriptedTransport(), bounce_domain="Bounce.A.test") as r:
            await r.send("alice@a.test", ["x@b.test"])
            ((sender, _r, _d),) = r.transport.calls
            assert sender.endswith("@bounce.a.test")

    asyncio.run(scenario())


def test_no_verp_for_null_sender_foreign_sender_or_when_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, ScriptedTransport()) as r:
            await r.send("", ["x@b.test", "y@b.test"])  # a DSN
            await r.send("someone@elsewhere.test", ["x@b.test", "y@b.test"])  # a forward
            assert [(s, rc) for s, rc, _d in r.transport.calls] == [
                ("", ["x@b.test", "y@b.test"]),
                ("someone@elsewhere.test", ["x@b.test", "y@b.test"])]
        async with rig(tmp_path / "off", ScriptedTransport(), verp=False) as r:
            await r.send("alice@a.test", ["x@b.test", "y@b.test"])
            assert [(s, rc) for s, rc, _d in r.transport.calls] == [
                ("alice@a.test", ["x@b.test", "y@b.test"])]

    asyncio.run(scenario())


def test_a_crash_for_one_recipient_defers_only_that_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, ScriptedTransport(crash_for="y@b.test")) as r:
            qid = await r.send("alice@a.test", ["x@b.test", "y@b.test", "z@b.test"])
            status = {rc.address: rc.status for rc in await r.store.get_recipients(qid)}
            assert status == {"x@b.test": RecipientStatus.DELIVERED,
                              "y@b.test": RecipientStatus.PENDING,
                              "z@b.test": RecipientStatus.DELIVERED}
            deferred = await r.events(qid, EventKind.DEFERRED)
            assert deferred["y@b.test"].detail == "451 4.3.0 local error: RuntimeError"
            assert await r.store.find_suppression("y@b.test") is None  # our fault, not theirs

    asyncio.run(scenario())


def test_a_stop_half_way_keeps_what_was_sent_and_sends_nobody_twice(tmp_path: Path) -> None:
    replies = {"gone@b.test": "550 5.1.1 <gone@b.test>: Recipient address rejected: User unknown"}

    async def scenario() -> None:
        async with rig(tmp_path, ScriptedTransport(replies, hang_for="y@b.test")) as r:
            qid = await r.accept("alice@a.test", ["x@b.test", "gone@b.test", "y@b.test",
                                                  "z@b.test"])
            running = asyncio.create_task(r.worker.run())
            await asyncio.wait_for(r.transport.hanging.wait(), 5)
            # Each finished transaction is written at once, releasing only its own lease: the
            # recipients still in the job stay leased (no other worker may take them).
            status = {rc.address: rc.status for rc in await r.store.get_recipients(qid)}
            assert status == {"x@b.test": RecipientStatus.DELIVERED,
                              "gone@b.test": RecipientStatus.BOUNCED,
                              "y@b.test": RecipientStatus.PENDING,
                              "z@b.test": RecipientStatus.PENDING}
            assert await r.store.claim_due(r.clock.now(), 10, "rival", 900) == []

            await r.worker.stop(grace=0)  # y's transaction is cancelled
            await asyncio.wait_for(running, 5)
            # What was written is reported once: the failed DSN for gone@, its suppression.
            assert r.dsns.sent == [("", ["alice@a.test"])]
            assert await r.store.find_suppression("gone@b.test") is not None

            again = ScriptedTransport(replies)
            await r.restart(again).run_until_idle()
            assert [rcpts for _s, rcpts, _d in again.calls] == [["y@b.test"], ["z@b.test"]]
            events = await r.store.list_events(qid)
            delivered = [e.recipient for e in events if e.kind is EventKind.DELIVERED]
            assert sorted(delivered) == ["x@b.test", "y@b.test", "z@b.test"]
            assert [e.recipient for e in events if e.kind is EventKind.BOUNCED] == ["gone@b.test"]
            assert r.dsns.sent == [("", ["alice@a.test"])]  # no second DSN after the restart

    asyncio.run(scenario())


def test_a_long_split_job_never_outlives_its_lease(tmp_path: Path) -> None:
    """Each transaction takes 300 s (the clock moves) against a 900 s lease: past half of it
    the job hands its untried recipients back, and the next claim leases them anew. A rival
    worker looking for due mail at the start of every transaction never finds any."""
    rival: list[list[str]] = []

    async def scenario() -> None:
        transport = ScriptedTransport()
        async with rig(tmp_path, transport) as r:
            async def slow_transaction() -> None:
                jobs = await r.store.claim_due(r.clock.now(), 10, "rival", 900)
                rival.extend([rc.address for rc in j.recipients] for j in jobs)
                r.clock.advance(300)

            transport.before_each = slow_transaction
            qid = await r.send("alice@a.test", ["w@b.test", "x@b.test", "y@b.test", "z@b.test"])
            assert [rcpts for _s, rcpts, _d in transport.calls] == [
                ["w@b.test"], ["x@b.test"], ["y@b.test"], ["z@b.test"]]
            assert rival == []
            assert r.worker.verp is not None and r.worker.verp.handed_back == 2
            assert r.worker.claimed_jobs == 2
            recipients = await r.store.get_recipients(qid)
            assert {rc.status for rc in recipients} == {RecipientStatus.DELIVERED}
            assert {rc.attempts for rc in recipients} == {1}  # handing back is not an attempt

    asyncio.run(scenario())


def test_failures_are_classified_in_the_one_event_and_suppress(tmp_path: Path) -> None:
    replies = {"gone@b.test": "550 5.1.1 <gone@b.test>: Recipient address rejected: User unknown",
               "full@b.test": "452 4.2.2 Mailbox full",
               "slow@b.test": "421 4.7.0 Try again later, closing connection",
               "spam@b.test": "550 5.7.1 Message rejected as spam"}

    async def scenario() -> None:
        async with rig(tmp_path, ScriptedTransport(replies)) as r:
            qid = await r.send("alice@a.test", list(replies))
            bounced = await r.events(qid, EventKind.BOUNCED)
            deferred = await r.events(qid, EventKind.DEFERRED)
            assert set(bounced) == {"gone@b.test", "spam@b.test"}
            assert set(deferred) == {"full@b.test", "slow@b.test"}
            gone = dict(bounced["gone@b.test"].attrs)
            assert gone == {"reply": replies["gone@b.test"], "remote_host": "mx.b.test[192.0.2.1]:25",
                            "domain": "b.test", "reason": "user_unknown", "class": "hard",
                            "status": "5.1.1", "source": "sync"}
            assert dict(deferred["slow@b.test"].attrs)["throttle"] == "yes"
            assert dict(bounced["spam@b.test"].attrs)["reason"] == "policy"
            # Exactly one outcome event per recipient: enriched, not duplicated.
            outcome_events = [e for e in await r.store.list_events(qid)
                              if e.kind in (EventKind.BOUNCED, EventKind.DEFERRED)]
            assert len(outcome_events) == 4

            hard = await r.store.find_suppression("gone@b.test")
            assert hard is not None and hard.reason is SuppressionReason.HARD_BOUNCE
            assert await r.store.find_suppression("spam@b.test") is None  # the sender's problem
            assert await r.store.find_suppression("slow@b.test") is None
            assert await r.store.find_suppression("full@b.test") is None  # 1 of 2
            assert set(await r.events(qid, EventKind.SUPPRESSED)) == {"gone@b.test"}

            # The retries of the same message do not count again; a second message does.
            r.clock.advance(7200)
            await r.worker.run_until_idle()
            (full,) = [rc for rc in await r.store.get_recipients(qid) if rc.address == "full@b.test"]
            assert full.attempts == 2
            assert await r.store.find_suppression("full@b.test") is None
            await r.send("alice@a.test", ["full@b.test"])
            soft = await r.store.find_suppression("full@b.test")
            assert soft is not None and soft.reason is SuppressionReason.SOFT_BOUNCES

    asyncio.run(scenario())


def test_which_replies_count_against_the_address() -> None:
    def counts(reply: str) -> bool:
        return counts_as_soft_bounce(reply, classify_reply(None, None, reply))

    assert counts("452 4.2.2 Mailbox full")
    assert counts("450 4.1.1 <x@b.test>: Recipient address rejected: unverified address")
    assert not counts("421 4.7.0 Try again later")  # the service closing: throttling
    assert not counts("451 4.7.1 Greylisted, please retry")  # policy deferral
    assert not counts("421 4.7.28 Our system has detected an unusual rate")
    assert not counts("451 4.4.1 connect to mx.b.test[192.0.2.1]:25: Connection refused")
    assert not counts("451 4.3.0 local error: RuntimeError")
    assert not counts("550 5.1.1 user unknown")  # hard: not a soft bounce at all
    reply = "421 4.7.0 Try again later"
    assert is_throttle(reply, classify_reply(None, None, reply))
