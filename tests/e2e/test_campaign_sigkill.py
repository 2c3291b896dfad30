"""Issue 5's crash proof: a campaign whose sending process is killed with SIGKILL, several times
mid-dispatch, and restarted on the same data gives every eligible contact exactly one message.

The sender (a.test) is a `mailprime serve` process in its own process group, so the kill is a
real one: no `finally`, no graceful drain, whatever transaction was open is lost. Its
`[marketing] dispatch_lease_seconds = 5` (the minimum) lets a restarted process take the
campaign over soon after the dead one's lease runs out. The receiver (mx.b.test) is another
`mailprime serve` process whose catch-all files everything into one mailbox.

The test watches the sender's send rows (and which of the pending ones the queue already holds)
through its store and kills the process group three times, aiming at the three moments of
marketing.dispatch's exactly-once protocol: a batch's rows just written pending, its accepts
half done, all accepted but the rows not yet settled. The campaign's rate spreads a batch's
accepts over a second or so; still, the windows are short (the last one a few milliseconds), so
each aim is a best effort with a fallback (any batch in flight), and the test prints where each
kill landed. The worker is delivering meanwhile. After the third restart the test waits
until the campaign is sent and every recipient delivered.

What "exactly once" can mean here. The campaign's claim is one *message* per contact: one queue
message at the sender (its send row's queue id), so one distinct Message-ID at the receiver.
SMTP delivery itself is at-least-once: a kill between the receiver's 250 and the sender's
commit of the outcome makes the restarted worker deliver the same queued message again — the
same Message-ID twice. Those redeliveries are counted and printed, not failed; two *different*
messages for one contact would be a double send, and fail.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailprime.domain.campaigns import CampaignStatus, SendRecord, SendStatus
from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import CampaignId
from mailprime.domain.mail import RecipientStatus
from mailprime.marketing.campaigns import start_campaign
from mailprime.storage.ports import Store
from tests.marketing.campaign_fixtures import BASE_URL, Seeded, seed
from tests.support.campaign_nodes import (
    mailbox_contents,
    node_store,
    provision_catch_all,
    received,
    write_node_config,
)
from tests.support.dns_server import DnsTestServer
from tests.support.instance import free_port
from tests.support.serve import serving

pytestmark = pytest.mark.slow  # two server processes, killed and restarted

SINK = "sink@b.test"
CONTACTS = 3000
BATCH = 200  # contacts per dispatch batch: several batches between two kills
# Messages a minute (150/s), a little under what dispatch does unhindered: the token bucket
# (one second's worth of burst, less than a batch) spreads a batch's accepts over more than a
# second, so that "accepts half done" lasts long enough to be seen. Unhindered, a batch's
# accepts share one or two group commits and the queue goes from none to all of them at once.
RATE = 9_000
DEADLINE = 120.0  # seconds any one phase may take: a bound, not a measure

SENDER_EXTRA = f"""
[http]
public_url = "{BASE_URL}"

[marketing]
dispatch_lease_seconds = 5
dispatch_poll_seconds = 0.1
dispatch_batch = {BATCH}
"""


@dataclass(frozen=True)
class Progress:
    rows: int  # send rows written
    pending: int  # of which pending: a batch between its record and its settle
    accepted: int  # of the pending ones, those whose message the queue already holds


# Where each kill should land: from `rows` send rows on, at the first poll that sees `wanted`;
# a best effort (the windows are short, the polling is not), so from `last` rows on any batch
# in flight will do. `last` stays a batch short of the end: the campaign must not finish first.
@dataclass(frozen=True)
class KillPoint:
    rows: int
    last: int
    what: str
    wanted: Callable[[Progress], bool]

    def due(self, p: Progress) -> bool:
        return p.rows >= self.rows and (self.wanted(p) or (p.rows >= self.last
                                                            and p.pending > 0))


KILL_POINTS = (
    KillPoint(500, 900, "rows just written", lambda p: p.pending > 0),
    KillPoint(1000, 1600, "accepts half done", lambda p: 0 < p.accepted < p.pending),
    KillPoint(1800, CONTACTS - 2 * BATCH, "all accepted, not settled",
              lambda p: 0 < p.accepted == p.pending),
)


async def progress(store: Store, campaign_id: CampaignId) -> Progress:
    c = await store.campaign_counters(campaign_id)
    pending = await store.pending_sends(campaign_id, limit=CONTACTS)
    accepted = await store.accepted_queue_ids([r.queue_id for r in pending if r.queue_id])
    return Progress(c.pending + c.queued + c.skipped + c.failed, len(pending), len(accepted))


async def wait_until(what: str, check: Callable[[], Awaitable[bool]],
                     interval: float = 0.02) -> None:
    """Polls `check` (bounded by DEADLINE): the processes give no other signal."""
    end = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}")
        await asyncio.sleep(interval)


async def seed_sender(store: Store, dns: DnsTestServer) -> tuple[Seeded, CampaignId]:
    seeded = await seed(store, confirmed=CONTACTS, excluded_each=10, rate=RATE)
    for name, record in seeded.dkim_records.items():
        dns.zone.add_txt(name, record)
    campaign, problems = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                              now=SystemClock().now())
    assert campaign.status is CampaignStatus.SENDING, problems
    return seeded, campaign.id


async def finished(store: Store, campaign_id: CampaignId) -> bool:
    """Sent, and every queued recipient delivered (none pending)."""
    campaign = await store.get_campaign(campaign_id)
    if campaign is None or campaign.status is not CampaignStatus.SENT:
        return False
    queue = await store.list_queue(100_000)
    return all(r.status is not RecipientStatus.PENDING for _m, rs in queue for r in rs)


async def scenario(tmp: Path, dns: DnsTestServer) -> tuple[Seeded, Path, list[str]]:
    b_mx = free_port()
    b_config = write_node_config(tmp / "b", hostname="mx.b.test", mx_port=b_mx, dns=dns.address)
    await provision_catch_all(b_config, "b.test", SINK)
    a_config = write_node_config(tmp / "a", hostname="mail.a.test", mx_port=free_port(),
                                 dns=dns.address, delivery_mx_port=b_mx, extra=SENDER_EXTRA)
    kills: list[str] = []  # where each kill landed, for the report
    async with node_store(a_config) as store:
        seeded, campaign_id = await seed_sender(store, dns)
        with serving(b_config):
            for point in KILL_POINTS:
                with serving(a_config, new_session=True) as proc:
                    seen: list[Progress] = []

                    async def now(point: KillPoint = point, seen: list[Progress] = seen) -> bool:
                        p = await progress(store, campaign_id)
                        assert p.rows < CONTACTS, f"the campaign finished before {point}"
                        seen.append(p)
                        return point.due(p)

                    await wait_until(f"{point.rows} send rows", now)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                at = seen[-1]
                kills.append(f"{at.rows} rows, {at.pending} pending, {at.accepted} of them "
                             f"accepted ({point.what}: "
                             f"{'hit' if point.wanted(at) else 'missed, fell back'})")
            with serving(a_config):

                async def done() -> bool:
                    return await finished(store, campaign_id)

                await wait_until("the campaign sent and its queue drained", done, 0.5)

        # The sender's side: one send row and one queue message per eligible contact.
        counters = await store.campaign_counters(campaign_id)
        assert (counters.queued, counters.pending, counters.skipped, counters.failed) == (
            CONTACTS, 0, 0, 0)
        sends: list[SendRecord] = []
        for _page in range(CONTACTS // 1000 + 2):  # keyset pages, bounded
            page = await store.list_sends(campaign_id, limit=1000,
                                          after=sends[-1].contact_id if sends else None)
            if not page:
                break
            sends.extend(page)
        assert all(s.status is SendStatus.QUEUED for s in sends)
        assert sorted(s.email for s in sends) == sorted(seeded.confirmed)
        queue_ids = {s.queue_id for s in sends}
        assert len(queue_ids) == CONTACTS
        per_address: dict[str, list[str]] = defaultdict(list)
        for message, recipients in await store.list_queue(100_000):
            for r in recipients:
                per_address[r.address].append(message.id)
                assert r.status is RecipientStatus.DELIVERED, (r.address, r.status, r.last_reply)
        assert set(per_address) == set(seeded.confirmed)
        doubles = {a: ids for a, ids in per_address.items() if len(ids) != 1}
        assert not doubles, f"more than one queue message for: {list(doubles.items())[:5]}"
        assert {ids[0] for ids in per_address.values()} == queue_ids
    return seeded, b_config, kills


@pytest.mark.timeout(300)
def test_sigkill_mid_campaign_and_restart_gives_every_contact_exactly_one_message(
        tmp_path: Path, dns_server: DnsTestServer) -> None:
    dns_server.zone.add_mx("b.test", 10, "mx.b.test")
    dns_server.zone.add_a("mx.b.test", "127.0.0.1")
    started = time.monotonic()
    seeded, b_config, kills = asyncio.run(scenario(tmp_path, dns_server))

    # The receiver's side: one distinct message (Message-ID) per eligible contact, none for
    # anybody else; the same message delivered again after a kill is counted, not failed.
    ids_by_rcpt: dict[str, set[str]] = defaultdict(set)
    copies = 0
    for content in asyncio.run(mailbox_contents(b_config, SINK)):
        got = received(content)
        assert got.message_id, got.to
        ids_by_rcpt[got.to].add(got.message_id)
        copies += 1
    assert set(ids_by_rcpt) == set(seeded.confirmed), (
        f"missing: {sorted(set(seeded.confirmed) - set(ids_by_rcpt))[:10]}, "
        f"unexpected: {sorted(set(ids_by_rcpt) - set(seeded.confirmed))[:10]}")
    double_sends = {a: ids for a, ids in ids_by_rcpt.items() if len(ids) > 1}
    assert not double_sends, f"two different messages for: {list(double_sends.items())[:5]}"
    redeliveries = copies - len(ids_by_rcpt)
    print("kills:", *kills, sep="\n  ")
    print(f"{copies} messages received, {redeliveries} redelivery(ies) of a same Message-ID; "
          f"{time.monotonic() - started:.1f} s")
