"""Double opt-in end to end on a running instance (runtime's wiring, sandbox delivery): a form
POST to /subscribe, the confirmation message queued, DKIM-signed and delivered to the sandbox
mailbox, its link followed with httpx (the page, then its button's POST), the membership
confirmed, and the consent ledger holding given + confirmed with the IP. Then a one-click
unsubscribe POST ends the membership."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path

import httpx
import pytest
import trustme

from mailprime.domain.audience import ConsentAction, MembershipStatus, OptIn
from mailprime.domain.clock import SystemClock
from mailprime.domain.dkim import DkimKeyType
from mailprime.domain.ids import CampaignId
from mailprime.marketing.tokens import CampaignRecipient, TokenSigner, UnsubscribeToken
from mailprime.services.dkim_keys import DkimKeys
from mailprime.services.verp_key import read_secrets
from tests.support.dkim_verifiers import dkimpy_verify
from tests.support.instance import running_instance

pytestmark = pytest.mark.slow

POSTMASTER = "postmaster@a.test"
ACCOUNTS = {POSTMASTER: "secret-password-1"}
READER = "Reader@Example.net"


def _link(content: bytes) -> str:
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    assert msg["To"] == "Reader@example.net" and "news" in str(msg["Subject"])
    part = msg.get_body(("plain",))
    assert part is not None
    return next(line.strip() for line in part.get_content().splitlines()
                if "/subscribe/confirm/" in line)


def test_subscribe_confirm_by_the_link_in_the_message(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with running_instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                                    accounts=ACCOUNTS, http=True, sandbox=True) as inst:
            store = inst.server.store
            keys = DkimKeys(store, SystemClock())
            await keys.generate("a.test", key_type=DkimKeyType.ED25519)
            records = {r.name: r.record for r in await keys.records("a.test")}
            news = await store.create_list("news", opt_in=OptIn.DOUBLE)
            base = f"http://127.0.0.1:{inst.port('http')}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                answer = await client.post("/subscribe", data={
                    "email": READER, "name": "Rea Der", "list": "news",
                    "wording_version": "signup-2030-01", "website": ""})
                assert answer.status_code == 202, answer.text
                (captured,) = await inst.wait_mailbox(POSTMASTER, 1, "Sandbox")
                content = captured[1]
                assert [v.result for v in dkimpy_verify(content, records)] == ["pass"]
                link = _link(content)
                assert link.startswith(inst.settings.http.base_url + "/subscribe/confirm/")
                path = link.removeprefix(inst.settings.http.base_url)
                page = await client.get(path)
                assert page.status_code == 200 and '<form method="post">' in page.text
                confirmed = await client.post(path)
                assert confirmed.status_code == 200 and "news" in confirmed.text
                contact = await store.get_contact(READER)
                assert contact is not None and contact.name == "Rea Der"
                member = await store.get_membership(contact.id, news.id)
                assert member is not None and member.status is MembershipStatus.CONFIRMED
                ledger = [(e.action, e.source.value, e.wording_version, e.ip)
                          for e in await store.consent_entries(READER)]
                assert ledger == [(ConsentAction.GIVEN, "form", "signup-2030-01", "127.0.0.1"),
                                  (ConsentAction.CONFIRMED, "form", "", "127.0.0.1")]
                # One-click unsubscribe (RFC 8058) from a campaign message's link ends it.
                signer = TokenSigner(read_secrets(tmp_path / "links.key"))
                token = signer.sign(UnsubscribeToken(
                    CampaignRecipient(CampaignId(1), contact.id), READER.lower(), "a.test",
                    news.id))
                done = await client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click",
                                         headers={"content-type":
                                                  "application/x-www-form-urlencoded"})
                assert done.status_code == 200
                member = await store.get_membership(contact.id, news.id)
                assert member is not None and member.status is MembershipStatus.UNSUBSCRIBED
                assert (await store.consent_entries(READER))[-1].action is ConsentAction.WITHDRAWN

    asyncio.run(scenario())

