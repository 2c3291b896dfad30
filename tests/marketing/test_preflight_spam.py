"""The pre-flight's spam score from a real rspamd (tests/support/rspamd.py: a Subject with
REJECT-ME scores "reject", JUNK-ME "add header", anything else "no action"), through the same
adapter the CLI uses: reject refuses the start, add header warns, a clean message adds nothing,
and rspamd down is a warning, not a refusal. The scanned message is the campaign's real sample
message (RFC 8058 fields included)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from mailprime.adapters.spam_preflight import RspamdPreflight
from mailprime.domain.campaigns import CampaignStatus
from mailprime.domain.clock import SystemClock
from mailprime.marketing.campaigns import PreflightFailed, start_campaign
from mailprime.marketing.preflight import Severity, SpamVerdict, preflight
from mailprime.net.http_client import HttpClient
from mailprime.services.rspamd import RspamdClient
from tests.marketing.campaign_fixtures import BASE_URL, seed
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
