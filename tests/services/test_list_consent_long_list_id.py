"""Submitted list mail whose List-Id is the one our campaigns write for a list with a long name
at a long domain: the builder shortens the label's name part to keep the list-id within
RFC 2919's 255 octets, and the consent gate must still know it as that list (not let it through
unjudged as "a list we do not have"). The message is the builder's own bytes, submitted through
a real submission InboundSession on a real SQLite store with the real GateListConsent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailprime.adapters.list_consent import GateListConsent
from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import CampaignId
from mailprime.marketing.message_builder import CampaignInfo, MessageBuilder
from mailprime.marketing.templates import Recipient, compile_template
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.list_consent import list_id_of
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import open_store
from tests.marketing.test_message_builder import HmacLinks

# 58 octets: with a 200-character list name (the API's longest) the list-id would be 268.
DOMAIN = "newsletters.marketing-department.example-company-name.test"
NEWS = f"news@{DOMAIN}"
MEMBER = "member@b.test"
STRANGER = "stranger@b.test"


async def submit(service: InboundService, data: bytes, recipients: list[str]) -> Reply:
    sess = service.new_session(PeerInfo("192.0.2.7", 40000, "submission"), tls=True)
    await sess.on_helo("client.a.test", True)
    assert (await sess.on_auth("PLAIN", "", NEWS, "news-pw")).ok
    assert (await sess.on_mail(NEWS, MailParams())).code == 250
    for rcpt in recipients:
        assert (await sess.on_rcpt(rcpt, RcptParams())).code == 250
    assert await sess.on_data_start() is None
    await sess.on_data_chunk(data)
    try:
        return await sess.on_data_end()
    finally:
        await sess.on_close()


def test_the_shortened_list_id_of_a_long_list_name_is_still_judged_as_that_list(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}",
                                 spool_dir=tmp_path / "spool", inline_max=65_536)
        try:
            await store.add_domain(DOMAIN)
            await store.add_account(NEWS, hash_password("news-pw"))
            news = await store.create_list("N" * 200, opt_in=OptIn.DOUBLE)
            await store.upsert_contacts([ContactInput(MEMBER)], mode=ImportMode.UPSERT,
                                        list_id=news.id, status=MembershipStatus.CONFIRMED,
                                        evidence=ConsentEvidence(ConsentSource.IMPORT, "v1"))
            campaign = CampaignInfo(CampaignId(1), "April", NEWS, "A News", news.name,
                                    news.list_id_label, "1 Main St, Springfield", news.id)
            built = MessageBuilder(compile_template("April", "<p>The news</p>", None), campaign,
                                   HmacLinks()).build(Recipient(MEMBER, "Member"))
            list_id = list_id_of(built.data)
            assert list_id is not None and len(list_id) <= 255
            assert list_id != f"{news.list_id_label}.{DOMAIN}"  # shortened: the case at hand

            service = InboundService(store, InboundConfig("mail.a.test", "submission"),
                                     SystemClock(), list_consent=GateListConsent(store))
            refused = await submit(service, built.data, [STRANGER])
            assert (refused.code, refused.enhanced) == (550, "5.7.1"), refused
            assert await store.list_queue() == []
            sent = await submit(service, built.data, [MEMBER])
            assert sent.code == 250 and sent.text.startswith("Ok: queued as"), sent
            assert len(await store.list_queue()) == 1
        finally:
            await store.close()

    asyncio.run(main())
