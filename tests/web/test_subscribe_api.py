"""The public subscribe endpoint and the confirmation link, over a real socket (no API key):
form and JSON, single and double opt-in, honeypot, rate limit, answers that reveal nothing,
and the CONFIRM token (signed, canonical, expiring)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path

import pytest

from mailprime.domain.audience import (
    ConsentAction,
    ConsentEvidence,
    ConsentSource,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.ids import ContactId, ListId, QueueId, RecipientId
from mailprime.marketing.tokens import (
    ClickToken,
    ConfirmToken,
    MessageRecipient,
    TokenError,
    TokenSigner,
)
from mailprime.web.subscribe import CONFIRM_TTL, RateLimiter
from tests.web.conftest import LINK_KEY, LiveWeb, live_web

FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_confirm_tokens_round_trip_and_are_only_confirm_tokens() -> None:
    signer = TokenSigner([LINK_KEY])
    token = ConfirmToken(ContactId(7), (ListId(1), ListId(300)), 1_900_000_000)
    text = signer.sign(token)
    assert signer.verify(text, ConfirmToken) == token
    assert signer.verify(text, ClickToken) is None
    assert TokenSigner([b"y" * 32]).verify(text, ConfirmToken) is None
    for i in range(len(text)):  # any changed character is refused
        changed = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1:]
        assert signer.verify(changed, ConfirmToken) is None
    click = signer.sign(ClickToken(MessageRecipient(QueueId("Q1"), RecipientId(1)),
                                   "https://example.com/"))
    assert signer.verify(click, ConfirmToken) is None
    with pytest.raises(TokenError):
        signer.sign(ConfirmToken(ContactId(1), (), 1))
    with pytest.raises(TokenError):
        signer.sign(ConfirmToken(ContactId(1), tuple(ListId(i) for i in range(1, 30)), 1))


def test_rate_limiter_bursts_then_refills() -> None:
    limiter = RateLimiter(burst=3, seconds=10.0, max_tracked=2)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") == 10
    assert limiter.allow("a", 10.0) and not limiter.allow("a", 10.0)
    assert limiter.allow("b", 0.0) and limiter.allow("c", 0.0)
    assert limiter.allow("a", 10.0)  # "a" was forgotten (only 2 tracked): a full bucket again


async def _lists(web: LiveWeb) -> tuple[int, int]:
    double = await web.store.create_list("news", opt_in=OptIn.DOUBLE)
    single = await web.store.create_list("offers", opt_in=OptIn.SINGLE)
    await web.store.add_domain("a.test")
    return double.id, single.id


async def _queued(web: LiveWeb) -> list[bytes]:
    """Contents of the messages queued so far (the confirmation messages)."""
    out = []
    for message, _ in await web.store.list_queue():
        out.append(await web.store.read_blob(message.blob_id))
    return out


def _link(content: bytes) -> str:
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    part = msg.get_body(("plain",))
    assert part is not None
    text = part.get_content()
    return next(line for line in text.splitlines() if "/subscribe/confirm/" in line).strip()


def test_form_subscribe_sends_one_confirmation_and_the_link_confirms(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            double, _ = await _lists(web)
            answer = await web.client.post(
                "/subscribe", headers=FORM,
                content=f"email=Zoe%40example.net&name=Zoe&list={double}&list=offers"
                        f"&wording_version=v2&website=".encode())
            assert answer.status_code == 202, answer.text
            assert "check your inbox" in answer.text
            contact = await web.store.get_contact("zoe@example.net")
            assert contact is not None and contact.name == "Zoe"
            statuses = {lst.name: m.status for lst, m in
                        await web.store.contact_memberships(contact.id)}
            assert statuses == {"news": MembershipStatus.UNCONFIRMED,
                                "offers": MembershipStatus.CONFIRMED}
            (content,) = await _queued(web)
            assert b"Auto-Submitted: auto-generated" in content
            link = _link(content)
            path = link.split("//", 1)[1].split("/", 1)[1]
            page = await web.client.get("/" + path)
            assert page.status_code == 200 and '<form method="post">' in page.text
            # A GET alone confirms nothing (scanners fetch links).
            member = await web.store.get_membership(contact.id, ListId(double))
            assert member is not None and member.status is MembershipStatus.UNCONFIRMED
            done = await web.client.post("/" + path)
            assert done.status_code == 200 and "news" in done.text
            member = await web.store.get_membership(contact.id, ListId(double))
            assert member is not None and member.status is MembershipStatus.CONFIRMED
            again = await web.client.post("/" + path)
            assert again.status_code == 200
            ledger = [(e.purpose, e.action, e.source.value, e.wording_version, e.ip)
                      for e in await web.store.consent_entries("zoe@example.net")]
            assert ledger == [
                ("news", ConsentAction.GIVEN, "form", "v2", "127.0.0.1"),
                ("offers", ConsentAction.GIVEN, "form", "v2", "127.0.0.1"),
                ("offers", ConsentAction.CONFIRMED, "form", "v2", "127.0.0.1"),
                ("news", ConsentAction.CONFIRMED, "form", "", "127.0.0.1")]
            # Subscribing again once confirmed: same answer, no downgrade, no second message.
            repeat = await web.client.post("/subscribe", json={"email": "zoe@example.net",
                                                               "lists": ["news"]})
            assert repeat.status_code == 202 and repeat.json() == {"status": "pending"}
            member = await web.store.get_membership(contact.id, ListId(double))
            assert member is not None and member.status is MembershipStatus.CONFIRMED
            assert len(await _queued(web)) == 1

    asyncio.run(scenario())


def test_json_single_opt_in_honeypot_and_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            double, single = await _lists(web)
            ok = await web.client.post("/subscribe", json={"email": "sam@example.net",
                                                           "lists": [single]})
            assert ok.status_code == 200 and ok.json() == {"status": "subscribed"}
            ledger = await web.store.consent_entries("sam@example.net")
            assert [(e.action, e.source.value) for e in ledger] == [
                (ConsentAction.GIVEN, "api"), (ConsentAction.CONFIRMED, "api")]
            assert await _queued(web) == []
            bot = await web.client.post("/subscribe", json={
                "email": "bot@example.net", "lists": [double], "website": "http://spam"})
            assert bot.status_code == 202 and bot.json() == {"status": "pending"}
            assert await web.store.get_contact("bot@example.net") is None
            for body, field in (({"email": "nope", "lists": [double]}, "body.email"),
                                ({"email": "x@example.net", "lists": ["nosuch"]}, "body.lists.0"),
                                ({"email": "x@example.net", "lists": []}, "body.lists"),
                                ({"email": "x@example.net", "lists": [double], "name": "a\nb"},
                                 "body.name")):
                refused = await web.client.post("/subscribe", json=body)
                assert refused.status_code == 422, (body, refused.text)
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["errors"][0]["field"] == field, refused.json()
            garbage = await web.client.post("/subscribe", content=b"[[[[",
                                            headers={"content-type": "application/json"})
            assert garbage.status_code == 422
            other = await web.client.post("/subscribe", content=b"x",
                                          headers={"content-type": "text/plain"})
            assert other.status_code == 415

    asyncio.run(scenario())


def test_rate_limit_per_ip(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            _, single = await _lists(web)
            codes = [(await web.client.post("/subscribe", json={
                "email": f"r{i}@example.net", "lists": [single]})).status_code for i in range(11)]
            assert codes == [200] * 10 + [429]
            limited = await web.client.post("/subscribe", json={"email": "r@example.net",
                                                                "lists": [single]})
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            web.clock.advance(60)  # one more request a minute
            assert (await web.client.post("/subscribe", json={
                "email": "r99@example.net", "lists": [single]})).status_code == 200

    asyncio.run(scenario())


def test_expired_altered_and_stale_links(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            double, _ = await _lists(web)
            await web.client.post("/subscribe", json={"email": "old@example.net", "lists": [double]})
            contact = await web.store.get_contact("old@example.net")
            assert contact is not None
            expires = int(web.clock.now().timestamp()) + CONFIRM_TTL
            token = web.signer.sign(ConfirmToken(contact.id, (ListId(double),), expires))
            web.clock.advance(CONFIRM_TTL + 1)
            expired = await web.client.post(f"/subscribe/confirm/{token}")
            assert expired.status_code == 410 and "expired" in expired.text
            assert (await web.client.get(f"/subscribe/confirm/{token}")).status_code == 410
            altered = await web.client.get(f"/subscribe/confirm/{token[:-2]}AA")
            assert altered.status_code == 404
            # The person unsubscribed after the link was sent: the later act wins.
            fresh = web.signer.sign(ConfirmToken(contact.id, (ListId(double),),
                                                 expires + CONFIRM_TTL))
            await web.store.set_membership(contact.id, ListId(double),
                                           status=MembershipStatus.UNSUBSCRIBED,
                                           evidence=ConsentEvidence(ConsentSource.CLI))
            stale = await web.client.post(f"/subscribe/confirm/{fresh}")
            assert stale.status_code == 404 and "Nothing to confirm" in stale.text

    asyncio.run(scenario())
