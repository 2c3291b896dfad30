"""A campaign cancelled after a crash: the pending rows the crash left are settled by what
really happened (accepted -> queued, else failed "cancelled"), by `cancel_campaign` at once
when no dispatcher holds the campaign, else by the runner's poll once its lease is gone. And a
storage failure during a run: retried at the next poll, never a pause."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from mailprime.domain.campaigns import CampaignStatus, SendStatus
from mailprime.marketing.campaigns import CampaignRunner, cancel_campaign
from tests.marketing.campaign_fixtures import seed
from tests.marketing.test_cancel_settles_at_once import crashed_dispatcher_rows
from tests.marketing.test_dispatch import (
    dispatcher,
    queue_by_address,
    run_until_killed,
    sqlite,
    started,
)


def test_cancel_after_a_crash_mid_batch_settles_every_pending_row(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=120, rate=60 * 20)  # sleeps between sends
            await started(store, seeded)
            await run_until_killed(store, seeded, at_send=55)  # accepts in flight
            before = await store.campaign_counters(seeded.campaign.id)
            assert before.pending > 0  # what the crash left
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None
            cancelled = await cancel_campaign(store, campaign)
            assert cancelled.status is CampaignStatus.CANCELLED
            after = await store.campaign_counters(seeded.campaign.id)
            queued = await queue_by_address(store)
            assert after.pending == 0
            assert after.queued == sum(queued.values()) == len(queued)  # each queued once
            assert after.queued + after.failed == before.queued + before.pending
            reasons = {r.reason for r in await store.list_sends(
                seeded.campaign.id, status=SendStatus.FAILED)}
            assert reasons <= {"cancelled"}

    asyncio.run(main())


def test_the_runner_settles_what_a_dispatcher_dying_after_the_cancel_left(
        tmp_path: Path) -> None:
    async def main() -> None:
        backend = sqlite(tmp_path)
        async with backend.open() as store:
            seeded = await seed(store, confirmed=3, track=False)
            await started(store, seeded)
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None
            # Another process's dispatcher holds the campaign, wrote its rows, then died.
            page, _ = await crashed_dispatcher_rows(store, backend.clock.now(), campaign)
            await cancel_campaign(store, campaign)
            assert (await store.campaign_counters(campaign.id)).pending == len(page)
            runner = CampaignRunner(store, lambda: dispatcher(store), clock=backend.clock)
            await runner.tick()
            assert (await store.campaign_counters(campaign.id)).pending == len(page)  # live
            backend.clock.advance(61)
            await runner.tick()
            counters = await store.campaign_counters(campaign.id)
            assert (counters.pending, counters.failed, counters.queued) == (0, len(page), 0)
            assert runner.running == frozenset()  # nothing dispatched for a cancelled one

    asyncio.run(main())


def test_a_storage_failure_during_a_run_is_retried_at_the_next_poll_not_paused(
        tmp_path: Path) -> None:
    """The database refuses the send rows for a while (a real SQLite trigger raising, as a full
    disk or a lost connection would): the campaign stays sending, nothing is queued twice, and
    the next poll after the trouble ends sends it to everyone once."""
    async def main() -> None:
        backend = sqlite(tmp_path)
        async with backend.open() as store:
            seeded = await seed(store, confirmed=5, track=False)
            await started(store, seeded)
            with sqlite3.connect(tmp_path / "mail.db") as db:
                db.execute("CREATE TRIGGER trouble BEFORE INSERT ON campaign_sends "
                           "BEGIN SELECT RAISE(ABORT, 'database trouble'); END")
            runner = CampaignRunner(store, lambda: dispatcher(store), clock=backend.clock)
            await runner.tick()
            await runner.wait_idle()
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None and campaign.status is CampaignStatus.SENDING
            assert not await queue_by_address(store)
            with sqlite3.connect(tmp_path / "mail.db") as db:
                db.execute("DROP TRIGGER trouble")
            await runner.tick()
            await runner.wait_idle()
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None and campaign.status is CampaignStatus.SENT
            got = await queue_by_address(store)
            assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}

    asyncio.run(main())
