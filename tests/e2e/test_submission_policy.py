"""The submission listener's policy, through smtplib over real TLS: AUTH before MAIL, the sender
must be the account's own address (or an alias that points to it), and Message-ID/Date are
added when the client left them out — once, never twice.

Every recipient here is local (bob@a.test), so no DNS or second instance is involved.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import trustme

from tests.support.instance import (
    Instance,
    parse,
    running_instance,
    simple_message,
    smtp_client,
    submit,
)

pytestmark = pytest.mark.slow  # starts servers or runs the real command

ALICE = "alice@a.test"
BOB = "bob@a.test"
ACCOUNTS = {ALICE: "alice-secret", BOB: "bob-secret"}
ALIASES = (("sales@a.test", ALICE), ("support@a.test", BOB))


def run(tmp: Path, ca: trustme.CA, body: Callable[[Instance], Awaitable[None]]) -> None:
    async def scenario() -> None:
        async with running_instance(tmp, ca, domain="a.test", hostname="mail.a.test",
                                    accounts=dict(ACCOUNTS), aliases=ALIASES) as inst:
            await body(inst)

    asyncio.run(scenario())


def test_mail_without_auth_is_refused_with_530(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        def attempt(listener: str) -> tuple[int, bytes]:
            with smtp_client(inst, listener) as client:  # TLS, but no AUTH
                return client.mail(ALICE)

        for listener in ("submission", "submissions"):
            code, text = await asyncio.to_thread(attempt, listener)
            assert code == 530 and text.startswith(b"5.7.0 "), (listener, code, text)
        assert await inst.mailbox(BOB) == []

    run(tmp_path, ca, body)


def test_sender_must_be_the_accounts_own_address(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        def attempts() -> list[tuple[str, int, bytes]]:
            out = []
            with smtp_client(inst, user=ALICE) as client:
                # Another account, an alias of another account, a foreign domain, the null
                # sender: all someone else's (a submitted message is never a bounce).
                for sender in (BOB, "support@a.test", "ceo@bank.test", ""):
                    code, text = client.mail(sender)
                    out.append((sender, code, text))
                    client.rset()
            return out

        for sender, code, text in await asyncio.to_thread(attempts):
            assert code == 553, (sender, code, text)
            assert text.startswith(b"5.7.1 ") and ALICE.encode() in text
        assert await inst.mailbox(BOB) == []

    run(tmp_path, ca, body)


def test_own_address_and_alias_pointing_to_it_are_allowed(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        own = await submit(inst, ALICE, ALICE, [BOB], simple_message(ALICE, BOB, "own"))
        # Case does not matter in the domain, nor (for our accounts) in the local part.
        upper = await submit(inst, ALICE, "Alice@A.TEST", [BOB], simple_message(ALICE, BOB, "upper"))
        alias = await submit(inst, ALICE, "sales@a.test", [BOB],
                             simple_message("sales@a.test", BOB, "alias"))
        assert (own.code, upper.code, alias.code) == (250, 250, 250)
        got = await inst.wait_mailbox(BOB, 3)
        assert [parse(c)["Subject"] for _m, c in got] == ["own", "upper", "alias"]

    run(tmp_path, ca, body)


def test_message_id_and_date_are_added_when_missing(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        bare = b"From: <alice@a.test>\r\nTo: <bob@a.test>\r\nSubject: bare\r\n\r\nHi.\r\n"
        await submit(inst, ALICE, ALICE, [BOB], bare)
        ((_m, content),) = await inst.wait_mailbox(BOB, 1)
        msg = parse(content)
        assert len(msg.get_all("Message-ID") or []) == 1
        assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@mail.a.test>")
        assert len(msg.get_all("Date") or []) == 1
        assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
        assert content.endswith(b"Subject: bare\r\n\r\nHi.\r\n")  # original order, body untouched

    run(tmp_path, ca, body)


def test_message_id_and_date_are_kept_when_present(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        mid = "<original.1234@client.test>"
        date = "Mon, 02 Jan 2006 15:04:05 -0700"
        # Header names in unusual case still count as present (RFC 5322 field names are
        # case-insensitive).
        full = simple_message(ALICE, BOB, "complete",
                              extra_headers=f"message-id: {mid}\r\nDATE: {date}\r\n")
        await submit(inst, ALICE, ALICE, [BOB], full)
        ((_m, content),) = await inst.wait_mailbox(BOB, 1)
        msg = parse(content)
        assert msg.get_all("Message-ID") == [mid]
        assert msg.get_all("Date") == [date]

    run(tmp_path, ca, body)


def test_refused_sender_does_not_end_the_session(tmp_path: Path, ca: trustme.CA) -> None:
    """After a 553 the client may correct itself in the same session (RFC 5321 4.1.1.2)."""

    async def body(inst: Instance) -> None:
        def dialogue() -> int:
            with smtp_client(inst, user=ALICE) as client:
                try:
                    client.sendmail(BOB, [BOB], simple_message(BOB, BOB, "forged"))
                except smtplib.SMTPSenderRefused as exc:
                    assert exc.smtp_code == 553
                client.sendmail(ALICE, [BOB], simple_message(ALICE, BOB, "honest"))
                return 0

        await asyncio.to_thread(dialogue)
        ((_m, content),) = await inst.wait_mailbox(BOB, 1)
        assert parse(content)["Subject"] == "honest"

    run(tmp_path, ca, body)
