"""A campaign cancelled after its dispatcher crashed mid-batch, on SQLite and PostgreSQL: the
move to cancelled settles the pending rows the crash left in the same write, by what really
happened (the queue id accepted -> queued, else failed "cancelled"), whether the operator's
cancel (`cancel_campaign`) or a bare store move makes it; the counters and the stats show no
pending row, and the runner finds nothing left to settle."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.campaigns import CampaignStatus, SendRecord, SendStatus
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient
from mailprime.marketing.campaigns import cancel_campaign
from tests.marketing.campaign_fixtures import seed
from tests.marketing.test_dispatch import queue_by_address, started
from tests.storage.conftest import Backend, backend, pg_databases, pg_session_url  # noqa: F401

if TYPE_CHECKING:
    from mailprime.domain.audience import Contact
    from mailprime.domain.campaigns import Campaign
    from mailprime.storage.sql import SqlStore


async def crashed_dispatcher_rows(store: SqlStore, now: datetime, campaign: Campaign
                                  ) -> tuple[list[Contact], list[QueueId]]:
    """What a dispatcher of another process leaves when it dies after writing a batch's rows:
    the campaign leased to it for 60 s from `now`, a pending send row per audience member."""
    assert await store.claim_campaign(campaign.id, "crashed", now, now + timedelta(seconds=60))
    page = list(await store.audience(campaign.list_ids, sending_domain="a.test"))
    queue_ids = [new_queue_id() for _ in page]
    await store.record_sends(campaign.id, [
        SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, q)
        for c, q in zip(page, queue_ids, strict=True)])
    return page, queue_ids


@pytest.mark.parametrize("via", ["cancel_campaign", "store move"])
def test_cancel_settles_a_crashed_runs_pending_rows_in_the_same_write(
        backend: Backend, via: str) -> None:  # noqa: F811
    async def main() -> None:
        async with backend.open() as store:
            seeded = await seed(store, confirmed=3, track=False)
            await started(store, seeded)
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None
            # A dispatcher held the campaign, wrote a batch's rows, accepted the first
            # message, then died before settling: its lease runs out.
            page, queue_ids = await crashed_dispatcher_rows(store, backend.clock.now(),
                                                            campaign)
            await store.accept(Acceptance(
                queue_id=queue_ids[0], content=b"Subject: x\r\n\r\nx\r\n",
                sender="news@a.test", remote=(EnvelopeRecipient(page[0].email),)))
            backend.clock.advance(61)

            if via == "cancel_campaign":
                cancelled = await cancel_campaign(store, campaign)
            else:
                cancelled = await store.set_campaign_status(campaign.id,
                                                            CampaignStatus.CANCELLED)
            assert cancelled.status is CampaignStatus.CANCELLED

            sends = {r.contact_id: r for r in await store.list_sends(campaign.id)}
            assert (sends[page[0].id].status, sends[page[0].id].queue_id) == (
                SendStatus.QUEUED, queue_ids[0])
            for contact in page[1:]:
                assert (sends[contact.id].status, sends[contact.id].reason) == (
                    SendStatus.FAILED, "cancelled")
            stats = await store.campaign_stats(campaign.id)
            assert (stats.counters.queued, stats.counters.pending, stats.counters.failed) == (
                1, 0, len(page) - 1)
            assert stats.failed_by_reason == {"cancelled": len(page) - 1}
            assert await store.cancelled_with_pending() == []  # nothing left for the runner
            assert await queue_by_address(store) == {page[0].email: 1}  # nothing sent since

    asyncio.run(main())
