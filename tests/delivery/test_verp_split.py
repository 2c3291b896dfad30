"""The worker with VERP and the synchronous bounce policy, on a real SQLite store: one
transaction per recipient with its own signed sender, the events record_outcomes appends carry
the classification, and failures reach the suppression list (hard at once, soft once per
message, throttling never)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
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

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        data = b"".join([chunk async for chunk in content.chunks()])
        self.calls.append((job.message.wire_sender, [r.address for r in job.recipients], data))
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
    worker = DeliveryWorker(
        store, transport, schedule=RetrySchedule(60, 2.0, 3600, 86400), clock=clock,
        injector=DsnSink(), config=WorkerConfig(hostname="mail.a.test", owner="node:1"),
        verp=VerpSplitter(codec, store, bounce_domain=bounce_domain) if verp else None,
        bounces=SyncBounces(policy))
    try:
        yield Rig(store, transport, worker, codec, clock)
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
