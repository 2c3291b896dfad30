"""Issue 5's proof at size: a campaign to 10,000 confirmed contacts reaches a receiving MX on
loopback, DKIM-valid and personalised, and nobody else gets anything.

The sender (a.test) runs in this process: its campaign runner dispatches, its worker looks up
b.test's MX on the loopback DNS server and delivers, one VERP transaction per recipient. The
receiver (mx.b.test) is a `mailprime serve` process, so that the two sides use the machine's two
cores; its catch-all files every message into one mailbox, whose store is read back directly
once the receiver has stopped (no IMAP: 10,000 FETCHes would cost more than the campaign).

What is checked for every one of the 10,000 messages: exactly one per confirmed contact, none
for the suppressed, unsubscribed and unconfirmed members of the double opt-in list; the
receiver's own Authentication-Results says dkim=pass for both signatures (RSA and Ed25519);
subject and both body parts carry the contact's own name and city attribute. On 200 messages
drawn at random, dkimpy verifies both signatures independently of our verifier and the email
package decodes both bodies.

Speed: the checks read the receiver's store in ranges of UIDs and pick header fields without
the email package, so that checking costs a few seconds, not a minute.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from mailprime.domain.campaigns import CampaignStatus
from mailprime.domain.clock import SystemClock
from mailprime.marketing.campaigns import start_campaign
from mailprime.runtime import start_server
from tests.marketing.campaign_fixtures import BASE_URL, Seeded, seed
from tests.support.campaign_nodes import (
    mailbox_contents,
    provision_catch_all,
    received,
    write_node_config,
)
from tests.support.dkim_verifiers import dkimpy_verify
from tests.support.dns_server import DnsTestServer
from tests.support.instance import Provisioning, free_port, make_settings, provision
from tests.support.serve import serving

pytestmark = pytest.mark.slow  # starts servers, sends 10,000 messages

SINK = "sink@b.test"
CONTACTS = 10_000
EXCLUDED_EACH = 40  # unconfirmed, suppressed and unsubscribed members, each
SAMPLE = 200  # messages checked by independent tools too
DEADLINE = 300.0  # seconds each wait may take (sent, delivered): a bound, not a measure


def greeting(number: str) -> str:
    """The personalised line of the template's body, with the seed's name and city."""
    return f"Hello Name user{number} from City{number},"


def decoded_bodies(content: bytes) -> tuple[str, str]:
    """The text and HTML bodies, decoded by the email package (for the sample)."""
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], interval: float) -> None:
    """Polls `check` every `interval` seconds, at most DEADLINE seconds. The interval is long
    on purpose: the sender runs in this process, and every poll takes its time from it."""
    end = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}")
        await asyncio.sleep(interval)


async def send_campaign(tmp: Path, ca: trustme.CA, dns: DnsTestServer, mx_port: int) -> Seeded:
    """Seeds the audience on the sender, starts the campaign and returns once every message is
    delivered (the sender's events say so)."""
    settings = make_settings(tmp, ca, hostname="mail.a.test", nameservers=[dns.address],
                             mx_port=mx_port)
    settings.http.public_url = BASE_URL  # links must be https (RFC 8058); no listener needed
    settings.marketing.dispatch_poll_seconds = 0.1
    await provision(settings, Provisioning("a.test", {}))
    server = await start_server(settings)
    try:
        store = server.store
        started = time.monotonic()
        seeded = await seed(store, confirmed=CONTACTS, excluded_each=EXCLUDED_EACH)
        print(f"seeded {CONTACTS + 3 * EXCLUDED_EACH} contacts in "
              f"{time.monotonic() - started:.1f} s")
        for name, record in seeded.dkim_records.items():
            dns.zone.add_txt(name, record)
        campaign, problems = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                                  now=SystemClock().now())
        assert campaign.status is CampaignStatus.SENDING, problems
        started = time.monotonic()

        async def sent() -> bool:
            c = await store.get_campaign(campaign.id)
            return c is not None and c.status is CampaignStatus.SENT

        await wait_until("the campaign to be sent", sent, 0.25)
        dispatched = time.monotonic() - started

        async def delivered() -> bool:  # campaign_stats reads the events: a costly query
            return (await store.campaign_stats(campaign.id)).delivered >= CONTACTS

        await wait_until("every message delivered", delivered, 1.0)
        print(f"dispatched in {dispatched:.1f} s, delivered in "
              f"{time.monotonic() - started:.1f} s")
        assert (await store.campaign_stats(campaign.id)).delivered == CONTACTS
        counters = await store.campaign_counters(campaign.id)
        assert (counters.queued, counters.pending, counters.skipped, counters.failed) == (
            CONTACTS, 0, 0, 0)
        return seeded
    finally:
        await server.stop(grace=2.0)


@pytest.mark.timeout(900)  # ~75-110 s on 2 busy cores; the default 120 s is too close
def test_campaign_to_10000_contacts_arrives_once_each_dkim_valid_and_personalised(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    dns_server.zone.add_mx("b.test", 10, "mx.b.test")
    dns_server.zone.add_a("mx.b.test", "127.0.0.1")
    b_mx = free_port()
    b_config = write_node_config(tmp_path / "b", hostname="mx.b.test", mx_port=b_mx,
                                 dns=dns_server.address)
    asyncio.run(provision_catch_all(b_config, "b.test", SINK))
    with serving(b_config):
        seeded = asyncio.run(send_campaign(tmp_path / "a", ca, dns_server, b_mx))
    started = time.monotonic()
    contents = asyncio.run(mailbox_contents(b_config, SINK))

    by_rcpt: Counter[str] = Counter()
    for content in contents:
        got = received(content)
        by_rcpt[got.to] += 1
        number = got.to.split("@", 1)[0][4:]  # user01234@b.test: the seed's attributes follow it
        assert got.subject == f"News for Name user{number} in City{number}", got.subject
        # The greeting in both parts: its line is short and ASCII, so quoted-printable leaves
        # it as it is (the sample below decodes the parts properly).
        assert content.count(greeting(number).encode()) == 2, got.to
        # The receiver's verdict, one per signature (RSA-2048 and Ed25519).
        assert got.auth_results.count("dkim=pass header.d=a.test") == 2, got.auth_results
    assert len(contents) == CONTACTS
    assert set(by_rcpt) == set(seeded.confirmed), "a confirmed contact got nothing"
    assert set(by_rcpt.values()) == {1}, [a for a, n in by_rcpt.items() if n > 1][:10]
    assert not set(by_rcpt) & set(seeded.excluded)

    # Independent checks on a random sample (seeded: a failure can be replayed): dkimpy
    # verifies both signatures, and the email package decodes both bodies.
    for content in random.Random(5).sample(contents, SAMPLE):
        got = received(content)
        verdicts = [v.result for v in dkimpy_verify(content, seeded.dkim_records)]
        assert verdicts == ["pass", "pass"], (got.to, verdicts)
        text, html = decoded_bodies(content)
        hello = greeting(got.to.split("@", 1)[0][4:])
        assert hello in text and hello in html, got.to
    print(f"checked {len(contents)} messages in {time.monotonic() - started:.1f} s")
