"""Open pixel, click redirect and one-click unsubscribe over a real socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailprime.domain.audience import ConsentAction, ConsentEvidence, ConsentSource, ContactInput
from mailprime.domain.audience import MembershipStatus as Status
from mailprime.domain.ids import CampaignId, QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient, EventKind
from mailprime.marketing.tokens import (
    CampaignRecipient,
    ClickToken,
    LinkToken,
    MessageRecipient,
    OpenToken,
    TrackToken,
    UnsubscribeToken,
)
from mailprime.web.tracking import PIXEL
from tests.web.conftest import LiveWeb, live_web

PERSON = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
MPP = {"User-Agent": "Mozilla/5.0"}
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


async def queued(web: LiveWeb, *addresses: str) -> tuple[QueueId, dict[str, int]]:
    qid = new_queue_id()
    await web.store.accept(Acceptance(
        queue_id=qid, content=b"Subject: x\r\n\r\nhi\r\n", sender="news@a.example",
        remote=tuple(EnvelopeRecipient(a) for a in addresses)))
    return qid, {r.address: r.id for r in await web.store.get_recipients(qid)}


async def events(web: LiveWeb, kind: EventKind) -> list[tuple[str | None, dict[str, str]]]:
    return [(e.recipient, dict(e.attrs)) for e in await web.store.list_events() if e.kind is kind]


def test_open_pixel_records_opens_and_flags_machines(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            contact = await web.store.add_contact(ContactInput("Bob@Example.com"))
            token = web.signer.sign(OpenToken(CampaignRecipient(CampaignId(9), contact.id)))
            opened_at = web.clock.now()
            seen = await web.client.get(f"/t/o/{token}.gif", headers=PERSON)
            assert seen.status_code == 200 and seen.content == PIXEL
            assert seen.headers["content-type"] == "image/gif"
            assert "no-store" in seen.headers["cache-control"]
            web.clock.advance(30)
            prefetch = await web.client.get(f"/t/o/{token}.gif", headers=MPP)
            assert prefetch.content == PIXEL
            person, machine = await events(web, EventKind.OPENED)
            assert person == ("bob@example.com", {"campaign_id": "9", "contact_id": str(contact.id),
                                                  "machine": "no"})
            assert machine[1]["machine"] == "yes" and machine[1]["machine_reason"] == "apple-mpp"
            # Only the person's open moved the contact's engagement.
            again = await web.store.get_contact_by_id(contact.id)
            assert again is not None and again.last_opened_at == opened_at
            assert again.last_clicked_at is None

            # A token altered by one character, or none of ours: the same pixel, nothing recorded.
            altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
            for bad in (altered, "garbage", "A" * 5000):
                got = await web.client.get(f"/t/o/{bad}.gif", headers=PERSON)
                assert got.status_code in (200, 422) and (got.status_code == 422 or
                                                          got.content == PIXEL)
            assert len(await events(web, EventKind.OPENED)) == 2

    asyncio.run(scenario())


def test_click_redirects_only_where_the_token_says(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, machine_networks=["127.0.0.0/8"]) as web:
            qid, ids = await queued(web, "carol@b.example")
            target = "https://shop.example.com/offer?id=7&utm_source=mail"
            token = web.signer.sign(ClickToken(
                MessageRecipient(qid, ids["carol@b.example"]), target))
            went = await web.client.get(f"/t/c/{token}", headers=PERSON)
            assert went.status_code == 302 and went.headers["location"] == target
            assert "no-store" in went.headers["cache-control"]
            # No way to make it go elsewhere: extra query, a forged token.
            extra = await web.client.get(f"/t/c/{token}?url=https://evil.example/", headers=PERSON)
            assert extra.headers["location"] == target
            forged = await web.client.get(f"/t/c/{token[:-3]}xyz", headers=PERSON)
            assert forged.status_code == 404 and "location" not in forged.headers
            assert forged.headers["content-type"] == "application/problem+json"
            opened_token = web.signer.sign(OpenToken(MessageRecipient(qid, ids["carol@b.example"])))
            assert (await web.client.get(f"/t/c/{opened_token}")).status_code == 404
            clicks = await events(web, EventKind.CLICKED)
            assert len(clicks) == 2
            recipient, attrs = clicks[0]
            assert recipient == "carol@b.example" and attrs["url"] == target
            # The test's own address is in the operator's scanner networks.
            assert attrs["machine"] == "yes" and attrs["machine_reason"] == "scanner"
            assert all(e.queue_id == qid for e in await web.store.list_events(qid)
                       if e.kind is EventKind.CLICKED)

    asyncio.run(scenario())


def test_pixel_and_two_part_click_of_a_recipient_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            contact = await web.store.add_contact(ContactInput("ivy@g.example"))
            sign = web.signer.sign
            recipient = sign(TrackToken(CampaignRecipient(CampaignId(4), contact.id)))
            target = "https://shop.example.com/p?id=7&utm_source=mail"
            link = sign(LinkToken(CampaignId(4), target))
            pixel = await web.client.get(f"/t/o/{recipient}.gif", headers=PERSON)
            assert pixel.status_code == 200 and pixel.content == PIXEL
            (opened,) = await events(web, EventKind.OPENED)
            assert opened == ("ivy@g.example", {"campaign_id": "4", "contact_id": str(contact.id),
                                                "machine": "no"})
            went = await web.client.get(f"/t/c/{link}/{recipient}", headers=PERSON)
            assert went.status_code == 302 and went.headers["location"] == target
            assert "no-store" in went.headers["cache-control"]
            extra = await web.client.get(f"/t/c/{link}/{recipient}?url=https://evil.example/",
                                         headers=PERSON)
            assert extra.headers["location"] == target
            (clicked, _) = await events(web, EventKind.CLICKED)
            assert clicked == ("ivy@g.example", {"campaign_id": "4", "contact_id": str(contact.id),
                                                 "machine": "no", "url": target})
            again = await web.client.get("/t/c/" + link + "/" + recipient)
            assert again.status_code == 302
            # Refused (404, nothing recorded): the halves swapped or of the wrong kind, a forged
            # half, another campaign's recipient token, a message send's, an open token.
            other_campaign = sign(TrackToken(CampaignRecipient(CampaignId(5), contact.id)))
            queued_send = sign(TrackToken(MessageRecipient(QueueId("0ZC1F4XKSNT6B7D8G9"), 1)))
            old_open = sign(OpenToken(CampaignRecipient(CampaignId(4), contact.id)))
            for bad in (f"{recipient}/{link}", f"{link}/{link}", f"{recipient}/{recipient}",
                        f"{link[:-3]}xyz/{recipient}", f"{link}/{recipient[:-3]}xyz",
                        f"{link}/{other_campaign}", f"{link}/{queued_send}", f"{link}/{old_open}"):
                refused = await web.client.get(f"/t/c/{bad}", headers=PERSON)
                assert refused.status_code == 404 and "location" not in refused.headers
            assert len(await events(web, EventKind.CLICKED)) == 3
            # A link token alone is no click, and a recipient token alone no redirect.
            assert (await web.client.get(f"/t/c/{link}")).status_code == 404
            assert (await web.client.get(f"/t/c/{recipient}")).status_code == 404
            # A link token is no pixel: the same GIF, nothing recorded.
            assert (await web.client.get(f"/t/o/{link}.gif")).content == PIXEL
            assert len(await events(web, EventKind.OPENED)) == 1

    asyncio.run(scenario())


def test_one_click_post_suppresses_at_once_and_is_idempotent(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, suppression_scope="domain") as web:
            qid, ids = await queued(web, "dave@c.example")
            token = web.signer.sign(UnsubscribeToken(
                MessageRecipient(qid, ids["dave@c.example"]), "dave@c.example", "a.example"))
            for _ in range(2):
                done = await web.client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click",
                                             headers=ONE_CLICK)
                assert done.status_code == 200 and "dave@c.example" in done.text
            entry = await web.store.find_suppression("dave@c.example", "a.example")
            assert entry is not None and entry.scope == "a.example"
            assert entry.reason.value == "unsubscribe" and entry.queue_id == qid
            assert await web.store.find_suppression("dave@c.example", "other.example") is None
            unsubscribed = await events(web, EventKind.UNSUBSCRIBED)
            assert len(unsubscribed) == 1 and unsubscribed[0][1]["how"] == "suppression"
            ledger = await web.store.consent_entries("dave@c.example")
            assert [(e.action, e.source) for e in ledger] == [
                (ConsentAction.WITHDRAWN, ConsentSource.ONE_CLICK)]
            # Without the RFC 8058 body nothing happens; a forged token is a 404.
            other = web.signer.sign(UnsubscribeToken(
                MessageRecipient(qid, ids["dave@c.example"]), "erin@c.example"))
            empty = await web.client.post(f"/u/{other}", content=b"", headers=ONE_CLICK)
            assert empty.status_code == 400
            forged = await web.client.post(f"/u/{other[:-2]}zz", content=b"List-Unsubscribe=One-Click",
                                           headers=ONE_CLICK)
            assert forged.status_code == 404
            assert await web.store.find_suppression("erin@c.example") is None

    asyncio.run(scenario())


def test_one_click_multipart_body_is_accepted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            token = web.signer.sign(UnsubscribeToken(
                MessageRecipient(QueueId("0ZC1F4XKSNT6B7D8G9"), 1), "frank@d.example"))
            done = await web.client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
            assert done.status_code == 200
            assert await web.store.find_suppression("frank@d.example") is not None

    asyncio.run(scenario())


def test_a_list_token_unsubscribes_from_that_list_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            contact = await web.store.add_contact(ContactInput("gina@e.example"))
            news = await web.store.create_list("news")
            await web.store.set_membership(contact.id, news.id, status=Status.CONFIRMED,
                                           evidence=ConsentEvidence(ConsentSource.FORM))
            token = web.signer.sign(UnsubscribeToken(
                CampaignRecipient(CampaignId(1), contact.id), "gina@e.example", "a.example",
                news.id))
            done = await web.client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click",
                                         headers=ONE_CLICK)
            assert done.status_code == 200
            membership = await web.store.get_membership(contact.id, news.id)
            assert membership is not None and membership.status is Status.UNSUBSCRIBED
            assert await web.store.find_suppression("gina@e.example") is None
            (event,) = await events(web, EventKind.UNSUBSCRIBED)
            assert event[1]["how"] == "list" and event[1]["list_id"] == str(news.id)
            ledger = [e.action for e in await web.store.consent_entries("gina@e.example")]
            assert ledger[-1] is ConsentAction.WITHDRAWN

    asyncio.run(scenario())


def test_get_shows_a_page_and_never_unsubscribes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            token = web.signer.sign(UnsubscribeToken(
                MessageRecipient(QueueId("0ZC1F4XKSNT6B7D8G9"), 1), "hugo<b>@f.example"))
            page = await web.client.get(f"/u/{token}")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert '<form method="post">' in page.text
            assert 'name="List-Unsubscribe" value="One-Click"' in page.text
            assert "hugo&lt;b&gt;@f.example" in page.text  # escaped
            assert "form-action 'self'" in page.headers["content-security-policy"]
            assert await web.store.find_suppression("hugo<b>@f.example") is None
            assert await events(web, EventKind.UNSUBSCRIBED) == []
            bad = await web.client.get("/u/nope")
            assert bad.status_code == 404 and "not valid" in bad.text

    asyncio.run(scenario())
