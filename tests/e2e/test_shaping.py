"""Traffic shaping end to end: the delivery worker and the SMTP transport, over real sockets, to
a scripted receiving server on loopback found through the real DNS server, on a real SQLite
queue. Time (the queue's clock and the shaper's monotonic clock) is a fake the test moves, so
pauses, pacing, recovery and the next UTC day are reached without waiting."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailprime.adapters.smtp_dialer import SmtpDialer
from mailprime.delivery.connection_pool import ConnectionPool
from mailprime.delivery.ip_pools import IpPool, PoolSelector, WarmupCounter, WarmupSchedule
from mailprime.delivery.provider_groups import ProviderRule, ProviderTable
from mailprime.delivery.router import Router
from mailprime.delivery.schedule import RetrySchedule
from mailprime.delivery.shaping import AdaptivePolicy, GroupLimits, Shaper
from mailprime.delivery.smtp_transport import Shaping, SmtpTransport
from mailprime.delivery.worker import DeliveryWorker, WorkerConfig
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    EnvelopeRecipient,
    EventKind,
    Priority,
    QueueRecipient,
    RecipientStatus,
)
from mailprime.net.dns import DnsResolver
from mailprime.storage.sql import open_store
from mailprime.storage.sql.store import SqlStore
from tests.support.dns_server import DnsTestServer
from tests.support.scripted_smtp import Script, scripted_smtp
from tests.support.scripted_smtp import ScriptedSmtpServer as RcptScriptedServer
from tests.support.scripted_smtp_server import ScriptedSmtpServer

pytestmark = pytest.mark.slow  # real sockets

DEFAULTS = GroupLimits(connections=10, messages_per_connection=100, messages_per_minute=0.0)


class FakeTime:
    """The worker's and the store's Clock, and the shaper's monotonic clock, moved together."""

    def __init__(self) -> None:
        self.wall = datetime.now(UTC)  # the queue stamps accepted mail with it
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


class NoInjector:
    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "") -> QueueId | None:
        raise AssertionError("no DSN expected")


@dataclass
class Rig:
    store: SqlStore
    worker: DeliveryWorker
    transport: SmtpTransport
    shaper: Shaper
    time: FakeTime

    async def send(self, sender: str, recipient: str, priority: Priority = Priority.NORMAL) -> QueueId:
        qid = new_queue_id()
        await self.store.accept(Acceptance(
            queue_id=qid, content=f"From: {sender}\r\nSubject: hi\r\n\r\nhello\r\n".encode(),
            sender=sender, remote=(EnvelopeRecipient(recipient),), priority=priority))
        return qid

    async def recipient(self, qid: QueueId) -> QueueRecipient:
        (rcpt,) = await self.store.get_recipients(qid)
        return rcpt

    async def statuses(self, qids: Sequence[QueueId]) -> list[RecipientStatus]:
        return [(await self.recipient(q)).status for q in qids]

    async def deferrals(self, qid: QueueId) -> list[str]:
        return [e.detail for e in await self.store.list_events(qid) if e.kind is EventKind.DEFERRED]


@asynccontextmanager
async def rig(tmp_path: Path, dns: DnsTestServer, server: ScriptedSmtpServer | RcptScriptedServer, *,
              rules: Sequence[ProviderRule] = (), policy: AdaptivePolicy | None = None,
              pools: Sequence[IpPool] = (), default_pool: str = "",
              warmup: dict[str, WarmupSchedule] | None = None) -> AsyncIterator[Rig]:
    fake = FakeTime()
    store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", spool_dir=tmp_path / "spool",
                             inline_max=64 * 1024, clock=fake)
    table = ProviderTable(rules, DEFAULTS)
    shaper = Shaper(table.limits, policy or AdaptivePolicy(hold_seconds=0.0),
                    monotonic=fake.monotonic)
    shaping = Shaping(table, shaper)
    if pools:
        shaping = Shaping(table, shaper, PoolSelector(pools, default_pool),
                          WarmupCounter(store, warmup or {}, fake, monotonic=fake.monotonic))
    dialer = SmtpDialer(helo_name="mail.sender.test", ssl_context=None, require_tls=False,
                        connect_timeout=5.0, command_timeout=5.0)
    transport = SmtpTransport(Router(DnsResolver([dns.address], timeout=2.0)), dialer,
                              port=server.port, shaping=shaping, clock=fake,
                              pool=ConnectionPool(monotonic=fake.monotonic),
                              monotonic=fake.monotonic)
    worker = DeliveryWorker(
        store, transport, schedule=RetrySchedule(60, 2.0, 3600, 5 * 86400), clock=fake,
        injector=NoInjector(),
        config=WorkerConfig(hostname="mail.sender.test", concurrency=20, per_destination=0,
                            owner="node:1", delay_warning=30 * 86400))
    try:
        yield Rig(store, worker, transport, shaper, fake)
    finally:
        await worker.stop(0)
        await store.close()


def mx(dns: DnsTestServer, host: str, *domains: str) -> None:
    for domain in domains:
        dns.zone.add_mx(domain, 10, host)
    dns.zone.add_a(host, "127.0.0.1")


def test_domains_on_one_mx_share_one_budget_and_connection(tmp_path: Path,
                                                           dns_server: DnsTestServer) -> None:
    mx(dns_server, "mx.shared.test", "x.test", "y.test")

    async def scenario() -> None:
        async with ScriptedSmtpServer() as server, rig(
                tmp_path, dns_server, server,
                rules=[ProviderRule("shared.test", connections=1, messages_per_connection=3)]) as r:
            qids = [await r.send("a@sender.test", f"u{n}@{'xy'[n % 2]}.test") for n in range(8)]
            await r.worker.run_until_idle()
            assert await r.statuses(qids) == [RecipientStatus.DELIVERED] * 8
            assert server.max_active == 1  # one budget for both domains
            assert [c.messages for c in server.connections] == [3, 3, 2]
            # One session carried mail for both domains (one transaction per message).
            assert any(c.domains == {"x.test", "y.test"} for c in server.connections)
            snap = r.shaper.snapshot("shared.test")
            assert (snap.admitted, snap.throttles) == (8, 0)
            assert r.transport.routes.lookups == 2  # one MX look-up per domain, then cached

    asyncio.run(scenario())


def test_concurrent_connections_never_exceed_the_group_cap(tmp_path: Path,
                                                           dns_server: DnsTestServer) -> None:
    mx(dns_server, "mx1.many.test", "many.test")

    async def scenario() -> None:
        async with ScriptedSmtpServer() as server, rig(
                tmp_path, dns_server, server,
                rules=[ProviderRule("many.test", connections=3, messages_per_connection=4)]) as r:
            qids = [await r.send("a@sender.test", f"u{n}@many.test") for n in range(20)]
            await r.worker.run_until_idle()
            assert await r.statuses(qids) == [RecipientStatus.DELIVERED] * 20
            assert 1 <= server.max_active <= 3
            assert r.transport.pool.peak["many.test"] == 3
            assert all(c.messages <= 4 for c in server.connections)
            assert sum(c.messages for c in server.connections) == 20

    asyncio.run(scenario())


def test_throttling_reply_pauses_slows_down_then_recovers(tmp_path: Path,
                                                          dns_server: DnsTestServer) -> None:
    mx(dns_server, "mx.slow.test", "slow.test")
    policy = AdaptivePolicy(hold_seconds=0.0, backoff_seconds=60.0, recovery_percent=50.0)

    async def scenario() -> None:
        async with ScriptedSmtpServer(throttle_messages=1) as server, rig(
                tmp_path, dns_server, server, policy=policy,
                rules=[ProviderRule("slow.test", connections=1, messages_per_minute=600.0)]) as r:
            qids = [await r.send("a@sender.test", f"u{n}@slow.test") for n in range(5)]
            start = r.time.wall
            await r.worker.run_until_idle()
            # The first MAIL got "421 4.7.0": the group is paused, its rate halved from the 5
            # actually sent in the last minute; the jobs waiting for its one connection are
            # deferred to the pause's end without an SMTP attempt.
            assert server.throttled == 1 and server.messages == []
            snap = r.shaper.snapshot("slow.test")
            # Halved from what the group admitted in the last minute: all 5, or fewer when the
            # 421 came back before the last jobs asked (a race the pause makes harmless).
            rate = snap.rate
            assert 1.0 <= rate <= 2.5 and rate == snap.sent_last_minute / 2
            assert (snap.state, snap.throttles, snap.paused_for) == ("paused", 1, 60.0)
            replies = {qid: await r.deferrals(qid) for qid in qids}
            (first,) = [q for q in qids if replies[q][0].startswith("421 4.7.0 Try again later")]
            resume = start + timedelta(seconds=60)
            for qid in qids:
                if qid != first:
                    assert replies[qid] == ["451 4.7.0 throttled by slow.test, resuming at "
                                            f"{resume:%Y-%m-%dT%H:%M:%SZ}"]
                    assert (await r.recipient(qid)).next_attempt_at == resume
            assert len(server.connections) == 1

            r.time.advance(60)  # the pause is over: one message now, the rest paced 24 s apart
            await r.worker.run_until_idle()
            assert len(server.messages) == 1
            waiting = [q for q in qids if (await r.recipient(q)).status is RecipientStatus.PENDING]
            assert len(waiting) == 4
            times = sorted([(await r.recipient(q)).next_attempt_at for q in waiting])
            gap = 60.0 / rate
            assert [(t - times[0]).total_seconds() for t in times] == [0.0, gap, 2 * gap, 3 * gap]
            for qid in waiting:
                assert f"rate limit of slow.test ({rate:g}/min) reached" in (await r.deferrals(qid))[-1]

            r.time.advance(60)  # a quiet minute after the pause: additive increase
            snap = r.shaper.snapshot("slow.test")
            assert (snap.state, snap.rate) == ("recovering", 2 * rate)  # + 50 % of the basis
            for _ in range(20):  # bounded: the rest go out at the (rising) pace
                if not any(s is RecipientStatus.PENDING for s in await r.statuses(qids)):
                    break
                r.time.advance(gap)
                await r.worker.run_until_idle()
            assert await r.statuses(qids) == [RecipientStatus.DELIVERED] * 5
            # Hours of quiet: each quiet minute adds one step (50 % of the basis, i.e. `rate`),
            # so 600/rate minutes bring any rate of the race (1 to 2.5/min) back to 600/min.
            r.time.advance(math.ceil(600.0 / rate) * 60)
            snap = r.shaper.snapshot("slow.test")
            assert (snap.state, snap.rate, snap.throttles) == ("open", 600.0, 1)

    asyncio.run(scenario())


def test_a_421_greeting_pauses_the_group(tmp_path: Path, dns_server: DnsTestServer) -> None:
    mx(dns_server, "mx.busy.test", "busy.test")

    async def scenario() -> None:
        async with ScriptedSmtpServer(throttle_greetings=1) as server, rig(
                tmp_path, dns_server, server) as r:
            qid = await r.send("a@sender.test", "u@busy.test")
            await r.worker.run_until_idle()
            assert (await r.deferrals(qid))[0].startswith("421 4.7.0 Too many connections")
            snap = r.shaper.snapshot("busy.test")
            # Halved from the one message let through in the last minute, to the floor of 1.
            assert (snap.state, snap.paused_for, snap.rate) == ("paused", 60.0, 1.0)
            later = await r.send("a@sender.test", "v@busy.test")
            await r.worker.run_until_idle()
            assert (await r.deferrals(later))[0].startswith("451 4.7.0 throttled by busy.test")
            assert len(server.connections) == 1  # no attempt while paused
            r.time.advance(60)  # resumed at 1 a minute: one now, the other a minute later
            await r.worker.run_until_idle()
            assert sorted(await r.statuses([qid, later])) == [RecipientStatus.DELIVERED,
                                                              RecipientStatus.PENDING]
            r.time.advance(60)
            await r.worker.run_until_idle()
            assert await r.statuses([qid, later]) == [RecipientStatus.DELIVERED] * 2

    asyncio.run(scenario())


def test_greylisting_defers_the_recipient_not_the_provider(tmp_path: Path,
                                                           dns_server: DnsTestServer) -> None:
    """Postgrey's "450 4.7.1 ... Greylisted" at RCPT is about one (sender, recipient, client)
    triplet; with VERP every message is a new one. The group stays open: the other messages go
    out on the same connection, and the greylisted ones come back by the retry schedule."""
    mx(dns_server, "mx.grey.test", "grey.test")
    replies = {f"g{n}@grey.test": f"450 4.7.1 <g{n}@grey.test>: Recipient address rejected: "
                                  "Greylisted, see http://postgrey.schweikert.ch/help/grey.test.html"
               for n in range(3)}

    async def scenario() -> None:
        async with scripted_smtp(Script.by_recipient(replies)) as server, rig(
                tmp_path, dns_server, server, rules=[ProviderRule("grey.test", connections=1)]) as r:
            greylisted = [await r.send("a@sender.test", address) for address in replies]
            others = [await r.send("a@sender.test", f"u{n}@grey.test") for n in range(3)]
            await r.worker.run_until_idle()
            assert await r.statuses(others) == [RecipientStatus.DELIVERED] * 3
            assert await r.statuses(greylisted) == [RecipientStatus.PENDING] * 3
            for qid in greylisted:
                assert (await r.deferrals(qid))[0].startswith("450 4.7.1 <g"), qid
            snap = r.shaper.snapshot("grey.test")
            assert (snap.state, snap.throttles, snap.deferred) == ("open", 0, 0)
            assert server.connections == 1

            server.script = Script()  # the greylisting delay is over
            r.time.advance(60)  # the retry schedule's first interval
            await r.worker.run_until_idle()
            assert await r.statuses(greylisted) == [RecipientStatus.DELIVERED] * 3

    asyncio.run(scenario())


POOLS = [
    IpPool("tx", ("127.0.0.2",), sender_domains=frozenset({"shop.test"})),
    IpPool("bulk", ("127.0.0.3",), priorities=frozenset({Priority.BULK})),
    IpPool("main", ("127.0.0.4",)),
]


def test_the_pool_is_chosen_by_sending_domain_and_by_class(tmp_path: Path,
                                                           dns_server: DnsTestServer) -> None:
    mx(dns_server, "mx.dest.test", "dest.test")

    async def scenario() -> None:
        async with ScriptedSmtpServer() as server, rig(tmp_path, dns_server, server, pools=POOLS,
                                                       default_pool="main") as r:
            await r.send("orders@shop.test", "a@dest.test", Priority.BULK)
            await r.send("news@news.test", "b@dest.test", Priority.BULK)
            await r.send("hello@other.test", "c@dest.test")
            await r.send("receipts@shop.test", "d@dest.test")
            await r.worker.run_until_idle()
            peers = {m.sender: m.peer for m in server.messages}
            assert peers == {"orders@shop.test": "127.0.0.2", "news@news.test": "127.0.0.3",
                             "hello@other.test": "127.0.0.4", "receipts@shop.test": "127.0.0.2"}
            # Connections are per source address.
            assert {c.peer for c in server.connections} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
            await r.transport.close()  # counts reach the store at close
            assert await r.store.ip_usage(r.time.wall.date()) == {
                "127.0.0.2": 2, "127.0.0.3": 1, "127.0.0.4": 1}

    asyncio.run(scenario())


def test_warmup_cap_defers_the_rest_to_the_next_utc_day(tmp_path: Path,
                                                        dns_server: DnsTestServer) -> None:
    mx(dns_server, "mx.dest.test", "dest.test")

    async def scenario() -> None:
        async with ScriptedSmtpServer() as server:
            fake_today = datetime.now(UTC).date()
            schedule = WarmupSchedule(fake_today, caps=(2, 4))
            async with rig(tmp_path, dns_server, server, pools=[IpPool("main", ("127.0.0.2",))],
                           default_pool="main", warmup={"127.0.0.2": schedule}) as r:
                today = r.time.wall.date()
                qids = [await r.send("a@sender.test", f"u{n}@dest.test") for n in range(5)]
                await r.worker.run_until_idle()
                statuses = await r.statuses(qids)
                assert statuses.count(RecipientStatus.DELIVERED) == 2
                midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
                deferred = [q for q, s in zip(qids, statuses, strict=True)
                            if s is RecipientStatus.PENDING]
                for qid in deferred:
                    assert (await r.recipient(qid)).next_attempt_at == midnight
                    assert (await r.deferrals(qid)) == [
                        "451 4.7.0 warm-up caps of every address of pool main reached today, "
                        f"resuming at {midnight:%Y-%m-%dT%H:%M:%SZ}"]
                r.time.advance((midnight - r.time.wall).total_seconds())
                await r.worker.run_until_idle()  # day 2: cap 4, three waiting
                assert await r.statuses(qids) == [RecipientStatus.DELIVERED] * 5
                assert {m.peer for m in server.messages} == {"127.0.0.2"}
                await r.transport.close()
                assert await r.store.ip_usage(today) == {"127.0.0.2": 2}
                assert await r.store.ip_usage(today + timedelta(days=1)) == {"127.0.0.2": 3}

    asyncio.run(scenario())
