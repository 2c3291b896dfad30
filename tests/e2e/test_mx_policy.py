"""The MX listener's policy, through smtplib: mail for local domains only (never an open relay),
unknown users refused at RCPT, aliases and catch-alls expanded, and every delivered message
filed in INBOX under the next UID (RFC 3501 2.3.1.1: ascending, UIDNEXT advancing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from mailprime.domain.mail import EventKind
from tests.support.instance import Instance, parse, running_instance, simple_message, smtp_client

pytestmark = pytest.mark.slow  # starts servers or runs the real command

BOB = "bob@b.test"
CAROL = "carol@b.test"
DAVE = "dave@c.test"
ACCOUNTS = {BOB: "bob-secret", CAROL: "carol-secret", DAVE: "dave-secret"}
ALIASES = (
    ("info@b.test", BOB),
    ("team@b.test", BOB),
    ("team@b.test", CAROL),
    ("@c.test", CAROL),  # catch-all: any other address at c.test
)
REMOTE = "sender@remote.test"


def run(tmp: Path, ca: trustme.CA, body: Callable[[Instance], Awaitable[None]]) -> None:
    async def scenario() -> None:
        async with running_instance(tmp, ca, domain="b.test", hostname="mx.b.test",
                                    accounts=dict(ACCOUNTS), aliases=ALIASES,
                                    extra_domains=("c.test",)) as inst:
            await body(inst)

    asyncio.run(scenario())


def deliver(inst: Instance, recipients: list[str], subject: str, *,
            tls: bool = True) -> dict[str, tuple[int, bytes]]:
    """Blocking: one message from a remote sender to the MX; returns the refused recipients."""
    with smtp_client(inst, "mx", tls=tls) as client:
        return client.sendmail(REMOTE, recipients, simple_message(REMOTE, recipients[0], subject))


def test_relaying_to_a_foreign_domain_is_refused(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        def attempts() -> list[tuple[str, int, bytes]]:
            out = []
            with smtp_client(inst, "mx") as client:
                # Also with a local sender: the MX decides by recipient, and nobody is
                # authenticated here (the MX offers no AUTH at all).
                assert not client.has_extn("auth")
                for sender in (REMOTE, BOB):
                    assert client.mail(sender)[0] == 250
                    for rcpt in ("victim@elsewhere.test", "victim@b.test.elsewhere.test"):
                        code, text = client.rcpt(rcpt)
                        out.append((rcpt, code, text))
                    client.rset()
                # The percent hack is a local part here, so just an unknown local user.
                client.mail(REMOTE)
                code, text = client.rcpt("victim%elsewhere.test@b.test")
                out.append(("percent-hack", code, text))
            return out

        results = await asyncio.to_thread(attempts)
        for rcpt, code, text in results[:-1]:
            assert (code, text[:6]) == (554, b"5.7.1 "), (rcpt, code, text)
            assert b"Relay access denied" in text
        assert results[-1][1] == 550
        assert await inst.server.store.list_queue() == []
        assert [e for e in await inst.events() if e.kind is EventKind.QUEUED] == []

    run(tmp_path, ca, body)


def test_unknown_local_user_is_refused_at_rcpt(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        def dialogue() -> tuple[tuple[int, bytes], dict[str, tuple[int, bytes]]]:
            with smtp_client(inst, "mx") as client:
                client.mail(REMOTE)
                alone = client.rcpt("nobody@b.test")
                client.rset()
            # With a valid recipient beside it, the message goes to that one only.
            return alone, deliver(inst, ["nobody@b.test", BOB], "mixed")

        (code, text), refused = await asyncio.to_thread(dialogue)
        assert (code, text[:6]) == (550, b"5.1.1 ")
        assert list(refused) == ["nobody@b.test"] and refused["nobody@b.test"][0] == 550
        ((_m, content),) = await inst.wait_mailbox(BOB, 1)
        assert parse(content)["Subject"] == "mixed"

    run(tmp_path, ca, body)


def test_alias_and_catch_all_delivery(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        def send_all() -> None:
            assert deliver(inst, ["info@b.test"], "to info") == {}
            assert deliver(inst, ["team@b.test"], "to team") == {}
            assert deliver(inst, ["anything@c.test"], "to catch-all") == {}
            assert deliver(inst, [DAVE], "to dave") == {}  # an account beats the catch-all
            # Two aliases leading to the same account: one copy (Postfix does the same).
            assert deliver(inst, ["info@b.test", "team@b.test"], "deduplicated") == {}

        await asyncio.to_thread(send_all)
        bob = await inst.wait_mailbox(BOB, 3)
        carol = await inst.wait_mailbox(CAROL, 3)
        dave = await inst.wait_mailbox(DAVE, 1)
        assert [parse(c)["Subject"] for _m, c in bob] == ["to info", "to team", "deduplicated"]
        assert [parse(c)["Subject"] for _m, c in carol] == ["to team", "to catch-all",
                                                             "deduplicated"]
        assert [parse(c)["Subject"] for _m, c in dave] == ["to dave"]
        stored = [e for e in await inst.events() if e.kind is EventKind.STORED]
        # The event names the address the message was sent to, not only the mailbox.
        assert ("anything@c.test", "INBOX") in {(e.recipient, dict(e.attrs)["mailbox"])
                                                 for e in stored}

    run(tmp_path, ca, body)


def test_inbox_uids_ascend_and_uidnext_advances(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        store = inst.server.store
        account = await store.get_account(BOB)
        assert account is not None
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None and inbox.uidnext == 1
        validity = inbox.uidvalidity
        for n in range(1, 4):
            await asyncio.to_thread(deliver, inst, [BOB], f"message {n}", tls=n % 2 == 0)
            got = await inst.wait_mailbox(BOB, n)
            assert [m.uid for m, _c in got] == list(range(1, n + 1))
            inbox = await store.get_mailbox(account.id, "INBOX")
            assert inbox is not None
            assert (inbox.uidnext, inbox.uidvalidity) == (n + 1, validity)
        contents = [c for _m, c in await inst.mailbox(BOB)]
        assert [parse(c)["Subject"] for c in contents] == ["message 1", "message 2", "message 3"]
        # Without TLS the trace says ESMTP, with it ESMTPS (RFC 3848); the MX adds no
        # Message-ID or Date of its own (that is the submission server's job, RFC 6409 8).
        assert "with ESMTP id" in parse(contents[0])["Received"]
        assert "with ESMTPS id" in parse(contents[1])["Received"]
        assert all(parse(c)["Message-ID"] is None for c in contents)

    run(tmp_path, ca, body)
