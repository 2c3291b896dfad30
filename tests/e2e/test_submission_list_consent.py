"""SMTP submission of list mail asks the campaigns' gate (services.list_consent through
adapters.list_consent and marketing.gate.SendGate): with a List-Id naming one of our lists,
only confirmed members who are not suppressed are queued; when nobody is left the message is
refused with 550 5.7.1; without a List-Id (or with a list we do not have) the message is an
ordinary submission. Real instance, smtplib with STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.deliverability import Suppression, SuppressionReason
from tests.support.instance import Instance, running_instance, submit

pytestmark = pytest.mark.slow  # starts servers

NEWS = "news@a.test"
MEMBER, PENDING, LEFT, BLOCKED, STRANGER = (
    "member@b.test", "pending@b.test", "left@b.test", "blocked@b.test", "stranger@b.test")


def message(list_id: str | None) -> bytes:
    head = f"From: A News <{NEWS}>\r\nTo: readers@b.test\r\nSubject: April\r\n"
    if list_id is not None:
        head += f"List-Id: A News <{list_id}>\r\n"
    return (head + "\r\nHello.\r\n").encode()


async def seed(inst: Instance) -> str:
    """The list's List-Id (`news-<id>.a.test`)."""
    store = inst.server.store
    await store.create_list("Nouvelles", opt_in=OptIn.DOUBLE)  # an id before News's
    news = await store.create_list("News", opt_in=OptIn.DOUBLE)
    evidence = ConsentEvidence(ConsentSource.IMPORT, "v1")
    for email, status in ((MEMBER, MembershipStatus.CONFIRMED),
                          (PENDING, MembershipStatus.UNCONFIRMED),
                          (LEFT, MembershipStatus.UNSUBSCRIBED),
                          (BLOCKED, MembershipStatus.CONFIRMED)):
        await store.upsert_contacts([ContactInput(email)], mode=ImportMode.UPSERT,
                                    list_id=news.id, status=status, evidence=evidence)
    await store.suppress(Suppression(BLOCKED, "", SuppressionReason.COMPLAINT, datetime.now(UTC)))
    return f"{news.list_id_label}.a.test"


def test_list_mail_goes_only_to_consenting_members(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with running_instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                                    accounts={NEWS: "news-secret", "postmaster@a.test": "pm"},
                                    sandbox=True) as inst:
            news = await seed(inst)
            assert news == "news-2.a.test"
            everyone = [MEMBER, PENDING, LEFT, STRANGER]
            sent = await submit(inst, NEWS, NEWS, everyone, message(news))
            assert sent.code == 250 and not sent.refused
            queued = {r.address for r in await inst.recipients(sent.queue_id)}
            assert queued == {MEMBER}

            with pytest.raises(smtplib.SMTPDataError) as refused:
                await submit(inst, NEWS, NEWS, [PENDING, STRANGER], message(news))
            assert refused.value.smtp_code == 550
            assert refused.value.smtp_error.startswith(b"5.7.1 ")
            assert b"News" in refused.value.smtp_error

            # BLOCKED is refused at RCPT already (the suppression check of every submission).
            partly = await submit(inst, NEWS, NEWS, [MEMBER, BLOCKED], message(news))
            assert set(partly.refused) == {BLOCKED}

            # Not list mail of ours: no List-Id, another list, another domain's label.
            # "news.a.test": a label without the list's id is not ours either, nor one whose
            # name part is not the list's ("sale-2": a third party's "sale-2024" style label).
            for list_id in (None, "news.a.test", "news-9.a.test", "sale-2.a.test",
                            "news-2.elsewhere.test"):
                plain = await submit(inst, NEWS, NEWS, [PENDING, STRANGER], message(list_id))
                queued = {r.address for r in await inst.recipients(plain.queue_id)}
                assert queued == {PENDING, STRANGER}, list_id

    asyncio.run(scenario())
