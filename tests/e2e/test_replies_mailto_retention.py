"""Replies, the List-Unsubscribe mailto and daily retention on a real instance (runtime's wiring,
sandbox delivery, a webhook receiver on loopback).

A campaign is sent for real (its messages captured in the sandbox mailbox); then, over SMTP to
the instance's MX as a mail client's server would: one contact replies to its message (In-Reply-To
its Message-ID) and the reply is filed and becomes a "replied" event and webhook; another sends
the message its List-Unsubscribe mailto describes (To and Subject taken from the header of the
message it got) and is unsubscribed, with nothing stored; a forged token changes nothing. A reply
to a message sent through the HTTP API maps back to that message's queue id. Retention: with a
short interval the server's own task deletes an event older than the retention period. A link
secret file that cannot be read stops the start with an error naming the [http] setting."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import trustme

from mailprime.config import Settings
from mailprime.domain.api_keys import new_api_key
from mailprime.domain.audience import MembershipStatus
from mailprime.domain.campaigns import CampaignStatus
from mailprime.domain.clock import SystemClock
from mailprime.domain.errors import ConfigError
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import Event, EventKind
from mailprime.marketing.campaigns import start_campaign
from mailprime.runtime import start_server
from mailprime.services.webhooks import SIGNATURE_HEADER, verify
from mailprime.storage.sql import open_store
from tests.marketing.campaign_fixtures import BASE_URL, seed
from tests.storage.conftest import FixedClock
from tests.support.instance import (
    Instance,
    Provisioning,
    make_settings,
    parse,
    provision,
    smtp_send,
    wait_for,
)
from tests.support.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow  # starts servers

POSTMASTER = "postmaster@a.test"  # the sandbox mailbox
NEWS = "news@a.test"  # the campaign's From, where replies land
SECRET = "whsec_test-secret"


@asynccontextmanager
async def instance(tmp: Path, ca: trustme.CA, **marketing: object) -> AsyncIterator[Instance]:
    settings = make_settings(tmp, ca, hostname="mail.a.test", sandbox=True, http=True)
    settings.http.public_url = BASE_URL  # links must be https (RFC 8058); not fetched here
    settings.marketing.dispatch_poll_seconds = 0.1
    settings.webhooks.poll_interval = 0.1
    for key, value in marketing.items():
        setattr(settings.marketing, key, value)
    accounts = {POSTMASTER: "pm-secret-123", NEWS: "news-secret-123"}
    await provision(settings, Provisioning("a.test", accounts))
    await before_start(settings)
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, accounts, "a.test")
    finally:
        await server.stop(grace=2.0)


async def before_start(settings: Settings) -> None:
    """An event written 400 days ago (the retention test looks for it to go)."""
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max,
                             clock=FixedClock(datetime.now(UTC) - timedelta(days=400)))
    try:
        await store.append(EventKind.DELIVERED, QueueId("0OLD"), "old@b.test", "long ago", ())
    finally:
        await store.close()


async def mx_send(inst: Instance, sender: str, to: str, message: bytes) -> str:
    """One message to the instance's MX (STARTTLS, no AUTH): the final reply's text."""
    result = await asyncio.to_thread(smtp_send, "127.0.0.1", inst.port("mx"),
                                     ctx=inst.client_tls(), sender=sender, recipients=[to],
                                     message=message)
    assert result.code == 250, result
    return result.text


def mail(frm: str, to: str, subject: str, extra: str = "") -> bytes:
    return (f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jun 2026 10:00:00 +0000\r\n{extra}\r\nHello.\r\n").encode()


def mailto_of(list_unsubscribe: str) -> tuple[str, str]:
    """(address, subject) of the mailto URI in a List-Unsubscribe value (RFC 2369, RFC 6068)."""
    match = re.search(r"<(mailto:[^>]+)>", list_unsubscribe)
    assert match is not None, list_unsubscribe
    uri = urlsplit(match.group(1))
    return unquote(uri.path), parse_qs(uri.query)["subject"][0]


async def kinds(inst: Instance, kind: EventKind) -> list[Event] | None:
    found = [e for e in await inst.events() if e.kind is kind]
    return found or None


def test_replies_and_mailto_unsubscribes_arrive_at_the_mx(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with instance(tmp_path, ca) as inst, webhook_receiver() as receiver:
            store = inst.server.store
            await store.add_webhook(receiver.url, SECRET, frozenset({"replied", "unsubscribed"}),
                                    active=True, description="", created_at=datetime.now(UTC))
            seeded = await seed(store, confirmed=2)
            campaign, problems = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                                      now=SystemClock().now())
            assert campaign.status is CampaignStatus.SENDING, problems
            captured = await inst.wait_mailbox(POSTMASTER, 2, name="Sandbox")
            by_to = {parse(c)["To"].addresses[0].addr_spec: parse(c) for _m, c in captured}
            replier, leaver = seeded.confirmed

            # A reply to the campaign message, as the contact's mail client writes it.
            original = by_to[replier]
            mid = str(original["Message-ID"])
            assert mid.startswith("<mp1.") and mid.endswith("@a.test>")
            text = await mx_send(inst, replier, NEWS, mail(
                replier, NEWS, f"Re: {original['Subject']}",
                f"Message-ID: <reply-1@b.test>\r\nIn-Reply-To: {mid}\r\nReferences: {mid}\r\n"))
            assert "queued as" in text
            (filed,) = await inst.wait_mailbox(NEWS, 1)
            assert b"In-Reply-To: " + mid.encode() in filed[1]  # delivered as usual
            (replied,) = await wait_for(lambda: kinds(inst, EventKind.REPLIED), 10.0, "replied")
            contact = await store.get_contact(replier)
            assert contact is not None
            send = await store.get_send(campaign.id, contact.id)
            assert send is not None and replied.queue_id == send.queue_id
            assert dict(replied.attrs)["contact_id"] == str(contact.id)

            # A forged token changes nothing; the real mailto unsubscribes; neither is stored.
            address, subject = mailto_of(str(by_to[leaver]["List-Unsubscribe"]))
            assert address == "unsubscribe@a.test" and subject.startswith("unsubscribe-")
            forged = subject[:-3] + ("AAA" if not subject.endswith("AAA") else "BBB")
            assert "queued as" not in await mx_send(inst, leaver, address,
                                                    mail(leaver, address, forged))
            leaving = await store.get_contact(leaver)
            assert leaving is not None
            list_id = campaign.list_ids[0]
            member = await store.get_membership(leaving.id, list_id)
            assert member is not None and member.status is MembershipStatus.CONFIRMED
            assert "queued as" not in await mx_send(inst, leaver, address,
                                                    mail(leaver, address, subject))
            member = await store.get_membership(leaving.id, list_id)
            assert member is not None and member.status is MembershipStatus.UNSUBSCRIBED
            (gone,) = await wait_for(lambda: kinds(inst, EventKind.UNSUBSCRIBED), 10.0, "unsub")
            assert (gone.recipient, dict(gone.attrs)["source"]) == (leaver, "mailto")

            # Both reach the webhook, signed, as "replied" and "unsubscribed".
            requests = await receiver.wait(2)
            payloads = {}
            for request in requests:
                assert verify(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body,
                              now=time.time())
                event = json.loads(request.body)
                payloads[event["type"]] = event
            assert set(payloads) == {"replied", "unsubscribed"}
            assert payloads["replied"]["queue_id"] == send.queue_id
            assert payloads["replied"]["recipient"] == replier
            assert payloads["replied"]["attrs"]["campaign_id"] == str(campaign.id)
            assert payloads["replied"]["attrs"]["from"] == replier

            # A reply to a message sent through the HTTP API names that message's queue id.
            made = new_api_key()
            await store.add_api_key("app", made.prefix, made.secret_hash,
                                    frozenset({"messages:send"}), datetime.now(UTC))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{inst.port('http')}",
                                         timeout=10) as client:
                sent = await client.post("/api/v1/messages", headers={
                    "Authorization": f"Bearer {made.text}"}, json={
                    "from": {"email": "app@a.test"}, "to": ["customer@b.test"],
                    "subject": "Your order", "text": "Shipped.\n"})
            assert sent.status_code == 202, sent.text
            api_mid, api_queue_id = sent.json()["message_id"], sent.json()["id"]
            assert api_mid.startswith("<mp1.")
            await mx_send(inst, "customer@b.test", NEWS, mail(
                "customer@b.test", NEWS, "Re: Your order", f"In-Reply-To: {api_mid}\r\n"))

            async def api_reply() -> Event | None:
                return next((e for e in await inst.events(api_queue_id)
                             if e.kind is EventKind.REPLIED), None)

            event = await wait_for(api_reply, 10.0, "the API message's reply")
            assert event.recipient == "customer@b.test"
            assert "campaign_id" not in dict(event.attrs)

    asyncio.run(scenario())


def test_the_server_runs_retention_on_its_own(tmp_path: Path, ca: trustme.CA,
                                              caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with instance(tmp_path, ca, retention_interval_hours=0.2 / 3600,
                            event_retention_days=30) as inst:
            store = inst.server.store
            await store.append(EventKind.DELIVERED, QueueId("0NEW"), "new@b.test", "now", ())

            async def old_gone() -> bool | None:
                left = [e.queue_id for e in await inst.events()]
                return True if "0OLD" not in left else None

            await wait_for(old_gone, 10.0, "the old event to be deleted")
            assert [e.queue_id for e in await inst.events()] == ["0NEW"]

    caplog.set_level(logging.INFO, logger="mailprime.retention")
    asyncio.run(scenario())
    done = [r.getMessage() for r in caplog.records if r.name == "mailprime.retention"]
    assert any("status=done, events=1, messages=0" in line for line in done), done


def test_a_bad_link_secret_file_stops_the_start(tmp_path: Path, ca: trustme.CA) -> None:
    settings = make_settings(tmp_path, ca, hostname="mail.a.test", sandbox=True, http=True)
    settings.http.public_url = BASE_URL

    async def scenario() -> None:
        await provision(settings, Provisioning("a.test", {POSTMASTER: "pm-secret-123"}))
        path = settings.http.secret_path(settings.data_path)
        path.write_text("not a hex key\n")
        with pytest.raises(ConfigError) as raised:
            await start_server(settings)
        assert raised.value.message.startswith(f"[http] token_secret_file: {path} line 1: ")

    asyncio.run(scenario())
