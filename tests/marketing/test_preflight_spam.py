"""The pre-flight's spam score from a real rspamd (tests/support/rspamd.py: a Subject with
REJECT-ME scores "reject", JUNK-ME "add header", anything else "no action"), through the same
adapter the CLI uses: reject refuses the start, add header warns, a clean message adds nothing,
and rspamd down is a warning, not a refusal. The scanned message is the campaign's real sample
message (RFC 8058 fields included); it is built without a scorer too (a value no message can
carry is an error), and a change to a scheduled campaign is scored like its start."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from mailprime.adapters.spam_preflight import RspamdPreflight
from mailprime.domain.audience import ContactInput, ImportMode
from mailprime.domain.campaigns import CampaignStatus, IllegalTransition
from mailprime.domain.clock import SystemClock
from mailprime.marketing.campaigns import (
    PreflightFailed,
    draft_of,
    start_campaign,
    update_campaign,
)
from mailprime.marketing.preflight import Severity, SpamVerdict, preflight
from mailprime.net.http_client import HttpClient
from mailprime.services.rspamd import RspamdClient
from tests.marketing.campaign_fixtures import BASE_URL, IMPORT, seed
from tests.storage.conftest import Backend
from tests.support.postfix import free_port
from tests.support.rspamd import rspamd_server, rspamd_unavailable


def sqlite(tmp_path: Path) -> Backend:
    return Backend("sqlite", f"sqlite:///{tmp_path / 'mail.db'}", tmp_path / "spool", lambda: "")


class Recording(RspamdPreflight):
    """The real adapter, keeping what it sent (to check it was the whole message)."""

    def __init__(self, client: RspamdClient) -> None:
        super().__init__(client, "mail.a.test")
        self.sent: list[bytes] = []

    async def score(self, message: bytes, *, sender: str, recipient: str) -> SpamVerdict:
        self.sent.append(message)
        return await super().score(message, sender=sender, recipient=recipient)


@pytest.mark.skipif(rspamd_unavailable() is not None, reason=str(rspamd_unavailable()))
def test_rspamd_verdicts_become_preflight_problems(tmp_path: Path) -> None:
    async def main(url: str) -> None:
        scorer = Recording(RspamdClient(HttpClient(), url, timeout=5.0))
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=3)
            campaign = seeded.campaign
            clean = await preflight(store, campaign, base_url=BASE_URL, spam=scorer)
            assert not [p for p in clean if p.code == "spam-score"]
            sample = scorer.sent[-1]
            assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in sample
            assert b"multipart/alternative" in sample and b"user00000@b.test" in sample

            junk = replace(campaign, subject="JUNK-ME offers")
            warned = [p for p in await preflight(store, junk, base_url=BASE_URL, spam=scorer)
                      if p.code == "spam-score"]
            assert [p.severity for p in warned] == [Severity.WARNING]
            assert "add header" in warned[0].message and "8.0" in warned[0].message

            rejected = replace(campaign, subject="REJECT-ME now")
            with pytest.raises(PreflightFailed) as refused:
                await start_campaign(store, rejected, base_url=BASE_URL,
                                     now=SystemClock().now(), spam=scorer)
            assert any(p.code == "spam-score" and p.severity is Severity.ERROR
                       for p in refused.value.problems)
            assert "spam filter" in str(refused.value)
            moved, problems = await start_campaign(store, campaign, base_url=BASE_URL,
                                                   now=SystemClock().now(), spam=scorer)
            assert moved.status is CampaignStatus.SENDING
            assert not [p for p in problems if p.code == "spam-score"]

    with rspamd_server(tmp_path / "rspamd") as url:
        asyncio.run(main(url))


def test_unreachable_rspamd_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    async def main() -> None:
        down = RspamdPreflight(RspamdClient(HttpClient(), f"http://127.0.0.1:{free_port()}",
                                            timeout=2.0), "mail.a.test")
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=2)
            moved, problems = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                                   now=SystemClock().now(), spam=down)
            assert moved.status is CampaignStatus.SENDING
            spam = [p for p in problems if p.code == "spam-score"]
            assert [p.severity for p in spam] == [Severity.WARNING]
            assert "could not be checked" in spam[0].message

    asyncio.run(main())


def test_a_value_no_message_can_carry_is_a_preflight_error(tmp_path: Path) -> None:
    """The sample message is built whether or not a spam scorer is set: a From name with a
    control character (the builder refuses it: every message of the campaign would fail) is
    an error, code "header"; the same in the sample contact's own name only warns (that
    contact fails alone when sent)."""

    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=2, excluded_each=0)
            campaign = seeded.campaign
            assert not [p for p in await preflight(store, campaign, base_url=BASE_URL)
                        if p.code == "header"]
            bad = replace(campaign, from_name="News\x01")
            found = [p for p in await preflight(store, bad, base_url=BASE_URL)
                     if p.code == "header"]
            assert [p.severity for p in found] == [Severity.ERROR]
            assert "U+0001" in found[0].message
            with pytest.raises(PreflightFailed, match="U\\+0001"):
                await start_campaign(store, bad, base_url=BASE_URL, now=SystemClock().now())
            sample = seeded.confirmed[0]
            await store.upsert_contacts([ContactInput(sample, "Odd\x02Name")],
                                        mode=ImportMode.UPSERT, evidence=IMPORT)
            warned = [p for p in await preflight(store, campaign, base_url=BASE_URL)
                      if p.code == "header"]
            assert [p.severity for p in warned] == [Severity.WARNING]
            assert sample in warned[0].message and "U+0002" in warned[0].message

    asyncio.run(main())


def test_a_change_is_checked_for_the_status_it_is_written_in(tmp_path: Path) -> None:
    """A draft's change needs no pre-flight, a scheduled campaign's does: a change checked
    for a draft that was scheduled meanwhile is refused by the store's write, not written
    without the pre-flight."""

    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=1, excluded_each=0)
            read_as_draft = seeded.campaign
            later = SystemClock().now() + timedelta(days=1)
            await start_campaign(store, read_as_draft, base_url=BASE_URL,
                                 now=SystemClock().now(), at=later)
            unsigned = replace(draft_of(read_as_draft), from_address="news@c.test")
            with pytest.raises(IllegalTransition, match="became scheduled"):
                await update_campaign(store, read_as_draft, unsigned, base_url=BASE_URL)
            now = await store.get_campaign(read_as_draft.id)
            assert now is not None and now.from_address == "news@a.test"
            with pytest.raises(PreflightFailed, match="DKIM"):
                await update_campaign(store, now, unsigned, base_url=BASE_URL)

    asyncio.run(main())


@pytest.mark.skipif(rspamd_unavailable() is not None, reason=str(rspamd_unavailable()))
def test_a_scheduled_campaigns_change_is_spam_scored_like_its_start(tmp_path: Path) -> None:
    async def main(url: str) -> None:
        scorer = Recording(RspamdClient(HttpClient(), url, timeout=5.0))
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=2, excluded_each=0)
            later = SystemClock().now() + timedelta(days=1)
            scheduled, _ = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                                now=SystemClock().now(), at=later, spam=scorer)
            assert scheduled.status is CampaignStatus.SCHEDULED
            rejected = replace(draft_of(scheduled), subject="REJECT-ME now")
            with pytest.raises(PreflightFailed, match="spam filter"):
                await update_campaign(store, scheduled, rejected, base_url=BASE_URL,
                                      spam=scorer)
            assert b"REJECT-ME now" in scorer.sent[-1]
            kept = await store.get_campaign(scheduled.id)
            assert kept is not None and kept.subject == scheduled.subject

    with rspamd_server(tmp_path / "rspamd") as url:
        asyncio.run(main(url))
