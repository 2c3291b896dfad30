"""A campaign end to end: instance A (a.test, sandbox off) sends a campaign of 300 confirmed
contacts at b.test; A's server-side runner dispatches it, its worker looks up b.test's MX on the
loopback DNS server and delivers (VERP, one transaction per recipient) to instance B, whose
catch-all alias files every message into one mailbox. Each confirmed contact gets exactly one
message with its own subject, DKIM-signed (B's own verifier says dkim=pass with the keys in the
DNS zone, and dkimpy agrees), with the RFC 8058 headers; suppressed, unsubscribed and
unconfirmed contacts get nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from mailprime.domain.campaigns import CampaignStatus
from mailprime.domain.clock import SystemClock
from mailprime.marketing.campaigns import start_campaign
from mailprime.runtime import start_server
from tests.marketing.campaign_fixtures import BASE_URL, seed
from tests.support.dkim_verifiers import dkimpy_verify
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    Provisioning,
    make_settings,
    parse,
    provision,
    running_instance,
    wait_for,
)

pytestmark = pytest.mark.slow  # starts servers

SINK = "sink@b.test"
CONTACTS = 300


@asynccontextmanager
async def sender(tmp: Path, ca: trustme.CA, dns: DnsTestServer, mx_port: int
                 ) -> AsyncIterator[Instance]:
    settings = make_settings(tmp, ca, hostname="mail.a.test", nameservers=[dns.address],
                             mx_port=mx_port)
    settings.http.public_url = BASE_URL  # links must be https (RFC 8058); no listener needed
    settings.marketing.dispatch_poll_seconds = 0.1
    await provision(settings, Provisioning("a.test", {"news@a.test": "news-secret"}))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, {}, "a.test")
    finally:
        await server.stop(grace=2.0)


def test_campaign_is_delivered_once_to_each_confirmed_contact_signed_and_personalised(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    dns_server.zone.add_mx("b.test", 10, "mx.b.test")
    dns_server.zone.add_a("mx.b.test", "127.0.0.1")

    async def scenario() -> None:
        async with (
            running_instance(tmp_path / "b", ca, domain="b.test", hostname="mx.b.test",
                             accounts={SINK: "sink-secret"},
                             aliases=[("@b.test", SINK)], nameservers=[dns_server.address]) as b,
            sender(tmp_path / "a", ca, dns_server, b.port("mx")) as a,
        ):
            store = a.server.store
            seeded = await seed(store, confirmed=CONTACTS)
            for name, record in seeded.dkim_records.items():
                dns_server.zone.add_txt(name, record)
            campaign, problems = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                                      now=SystemClock().now())
            assert campaign.status is CampaignStatus.SENDING, problems

            async def sent() -> bool | None:
                c = await store.get_campaign(campaign.id)
                return True if c is not None and c.status is CampaignStatus.SENT else None

            await wait_for(sent, 20.0, "the campaign to be sent")
            received = await b.wait_mailbox(SINK, CONTACTS, deadline=30.0)
            assert len(received) == CONTACTS
            by_rcpt: Counter[str] = Counter()
            for n, (_stored, content) in enumerate(received):
                msg = parse(content)
                to = msg["To"].addresses[0].addr_spec
                by_rcpt[to] += 1
                contact = await store.get_contact(to)
                assert contact is not None
                assert msg["Subject"] == (f"News for {contact.name} in "
                                          f"{contact.attributes['city']}")
                assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                assert msg["List-Unsubscribe"].startswith(f"<{BASE_URL}/u/")
                results = str(msg["Authentication-Results"])
                assert results.count("dkim=pass header.d=a.test") == 2, results
                if n < 10:  # and an independent verifier, on a sample
                    assert [v.result for v in dkimpy_verify(content, seeded.dkim_records)] == [
                        "pass", "pass"]
            assert set(by_rcpt) == set(seeded.confirmed) and set(by_rcpt.values()) == {1}
            assert not set(by_rcpt) & set(seeded.excluded)
            counters = await store.campaign_counters(campaign.id)
            assert (counters.queued, counters.pending, counters.skipped) == (CONTACTS, 0, 0)
            stats = await store.campaign_stats(campaign.id)
            assert stats.delivered == CONTACTS

    asyncio.run(scenario())
