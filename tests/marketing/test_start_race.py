"""A start's pre-flight checks the campaign it was given; a change (PATCH) landing while the
pre-flight runs (a spam scorer can take seconds) must not be started unchecked: the start is
refused and the campaign stays a draft with the change (marketing.campaigns.start_campaign)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from mailprime.domain.campaigns import CampaignStatus, IllegalTransition
from mailprime.domain.clock import SystemClock
from mailprime.domain.templates import TemplateFields
from mailprime.marketing.campaigns import PreflightFailed, draft_of, start_campaign, update_campaign
from mailprime.marketing.preflight import SpamVerdict
from tests.marketing.campaign_fixtures import BASE_URL, seed
from tests.marketing.test_dispatch import sqlite


class _ChangedWhileScoring:
    """The spam scorer (an external service): while it answers, the operator's change of the
    campaign lands."""

    def __init__(self, change: Callable[[], Awaitable[None]]) -> None:
        self.change = change

    async def score(self, message: bytes, *, sender: str, recipient: str) -> SpamVerdict:
        await self.change()
        return SpamVerdict(action="no action", score=0.0, required=15.0, symbols=())


@pytest.mark.parametrize("later", [False, True])
def test_a_change_during_the_preflight_refuses_the_start(tmp_path: Path, later: bool) -> None:
    backend = sqlite(tmp_path)

    async def main() -> None:
        async with backend.open() as store:
            seeded = await seed(store, confirmed=2, track=False)
            campaign = seeded.campaign

            async def patch() -> None:
                backend.clock.advance(1)  # the change is written at a later instant
                await update_campaign(store, campaign, replace(
                    draft_of(campaign), from_address="news@nokey.test"), base_url=BASE_URL)

            now = SystemClock().now()
            at = now + timedelta(days=1) if later else None
            with pytest.raises(IllegalTransition, match="changed during the pre-flight"):
                await start_campaign(store, campaign, base_url=BASE_URL, now=now, at=at,
                                     spam=_ChangedWhileScoring(patch))
            after = await store.get_campaign(campaign.id)
            assert after is not None
            assert (after.status, after.from_address) == (CampaignStatus.DRAFT,
                                                          "news@nokey.test")
            # Started again, the pre-flight sees the change (and refuses the unsigned From).
            with pytest.raises(PreflightFailed) as refused:
                await start_campaign(store, after, base_url=BASE_URL, now=now, at=at)
            assert "no active DKIM key for nokey.test" in str(refused.value)

    asyncio.run(main())


@pytest.mark.parametrize("later", [False, True])
def test_a_template_replaced_during_the_preflight_refuses_the_start(
        tmp_path: Path, later: bool) -> None:
    """The template is replaced while the pre-flight runs (the campaign is still a draft, so
    the store lets the replace through): the start is refused, never started with content the
    pre-flight did not check; started again, it checks the new content."""
    backend = sqlite(tmp_path)

    async def main() -> None:
        async with backend.open() as store:
            seeded = await seed(store, confirmed=2, track=False)
            campaign = seeded.campaign
            template = await store.get_template(campaign.template_id)
            assert template is not None

            async def replace_template() -> None:
                backend.clock.advance(1)
                await store.update_template(template.id, TemplateFields(
                    template.name, template.subject, "<p>no unsubscribe link</p>"))

            now = SystemClock().now()
            at = now + timedelta(days=1) if later else None
            with pytest.raises(IllegalTransition, match=r"template .* changed during"):
                await start_campaign(store, campaign, base_url=BASE_URL, now=now, at=at,
                                     spam=_ChangedWhileScoring(replace_template))
            after = await store.get_campaign(campaign.id)
            assert after is not None and after.status is CampaignStatus.DRAFT
            with pytest.raises(PreflightFailed):
                await start_campaign(store, after, base_url=BASE_URL, now=now, at=at)

    asyncio.run(main())
