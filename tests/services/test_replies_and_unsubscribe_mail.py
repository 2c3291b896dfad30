"""Replies and the List-Unsubscribe mailto at the MX, driven through a real InboundSession event
by event against a real SQLite store, with the real campaign audience (send rows, lists) and the
real marketing unsubscriber behind the injected callable.

Replies: a reply to an API message or a campaign message is filed as usual and gets one REPLIED
event (ids, replier, original queue id), once however often it arrives; a forged or unmapped id,
or no id, gets none. Mailto: the token from the Subject (or the address's detail) unsubscribes as
the one-click POST does; nothing is stored; a forged token or none changes nothing and is still
answered 250 (no backscatter); other recipients of the same message get it as usual.

Not replies: auto-replies (RFC 3834 Auto-Submitted, X-Autoreply, Precedence auto_reply/bulk/junk)
and mail the MX's DMARC check files into Junk are filed but never counted. Not ours: an account
or an alias named unsubscribe@ keeps its mail (a catch-all does not claim the name)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailprime.domain.audience import ConsentAction, ConsentSource, MembershipStatus
from mailprime.domain.campaigns import Campaign, SendRecord, SendStatus
from mailprime.domain.ids import CampaignId, ContactId, ListId, QueueId, new_queue_id
from mailprime.domain.mail import Event, EventKind
from mailprime.marketing.tokens import CampaignRecipient, TokenSigner, UnsubscribeToken
from mailprime.marketing.unsubscribe import MailtoUnsubscriber
from mailprime.message.msgid_token import CampaignOrigin, MsgIdCodec, QueueOrigin
from mailprime.net.dns import DnsResolver
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.mx_auth import MxAuthenticator, MxAuthPolicy
from mailprime.services.passwords import hash_password
from mailprime.services.replies import ReplyRecorder
from mailprime.services.unsubscribe_mail import MailtoUnsubscribe
from mailprime.storage.sql import SqlStore, open_store
from tests.marketing.campaign_fixtures import seed
from tests.storage.conftest import FixedClock
from tests.support.dns_server import DnsTestServer

NEWS = "news@a.test"  # the campaign's From: an account here, where replies land
SECRET = bytes(range(32))  # the link keys: Message-IDs and unsubscribe tokens alike
OTHER = bytes(range(1, 33))


@dataclass
class Env:
    store: SqlStore
    mx: InboundService
    submission: InboundService
    campaign: Campaign
    contacts: dict[str, ContactId]  # the confirmed contacts
    queue_ids: dict[str, QueueId]  # their send rows' queue ids
    list_id: ListId

    def msgid(self, origin: CampaignOrigin | QueueOrigin, secret: bytes = SECRET) -> str:
        made = MsgIdCodec([secret]).make(origin, "a.test")
        assert made is not None
        return made

    def unsubscribe_token(self, email: str, *, list_id: ListId | None = None,
                          secret: bytes = SECRET) -> str:
        subject = CampaignRecipient(self.campaign.id, self.contacts[email])
        return TokenSigner([secret]).sign(UnsubscribeToken(subject, email, "a.test", list_id))

    async def events(self, kind: EventKind) -> list[Event]:
        return [e for e in await self.store.list_events() if e.kind is kind]

    async def inbox(self, address: str = NEWS, mailbox: str = "INBOX") -> int:
        account = await self.store.get_account(address)
        assert account is not None
        return len(await self.store.list_messages(account.id, mailbox))


@asynccontextmanager
async def env(tmp: Path) -> AsyncIterator[Env]:
    clock = FixedClock()
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024, clock=clock)
    try:
        seeded = await seed(store, confirmed=2, clock=clock)  # adds a.test and its DKIM key
        await store.add_account(NEWS, hash_password("news-pw"))
        contacts: dict[str, ContactId] = {}
        queue_ids: dict[str, QueueId] = {}
        rows = []
        for email in seeded.confirmed:
            contact = await store.get_contact(email)
            assert contact is not None
            contacts[email] = contact.id
            queue_ids[email] = new_queue_id()
            rows.append(SendRecord(seeded.campaign.id, contact.id, email, SendStatus.QUEUED,
                                   queue_ids[email]))
        await store.record_sends(seeded.campaign.id, rows)
        unsubscribe = MailtoUnsubscribe(
            MailtoUnsubscriber(store, TokenSigner([SECRET]), clock, scope_mode="global"), store)
        replies = ReplyRecorder(store, MsgIdCodec([SECRET]))
        mx = InboundService(store, InboundConfig("mx.a.test", "mx"), clock, replies=replies,
                            unsubscribe=unsubscribe)
        sub = InboundService(store, InboundConfig("mx.a.test", "submission",
                                                  sender_policy="any"), clock,
                             replies=replies, unsubscribe=unsubscribe)
        yield Env(store, mx, sub, seeded.campaign, contacts, queue_ids,
                  seeded.campaign.list_ids[0])
    finally:
        await store.close()


def run(tmp: Path, body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        async with env(tmp) as e:
            await body(e)

    asyncio.run(main())


async def transaction(service: InboundService, sender: str, rcpts: list[str],
                      message: bytes, *, user: str | None = None) -> tuple[list[Reply], Reply | None]:
    sess = service.new_session(PeerInfo("192.0.2.7", 40000, service.config.role), tls=True)
    await sess.on_helo("mx.remote.test", True)
    if user is not None:
        assert (await sess.on_auth("PLAIN", "", user, "news-pw")).ok
    assert (await sess.on_mail(sender, MailParams())).code == 250
    replies = [await sess.on_rcpt(r, RcptParams()) for r in rcpts]
    end: Reply | None = None
    if any(r.code == 250 for r in replies):
        assert await sess.on_data_start() is None
        for start in range(0, len(message), 700):
            await sess.on_data_chunk(message[start:start + 700])
        end = await sess.on_data_end()
    await sess.on_close()
    return replies, end


def reply(frm: str, *, in_reply_to: str = "", references: str = "", message_id: str = "",
          subject: str = "Re: news", to: str = NEWS, extra: str = "") -> bytes:
    head = f"From: Some One <{frm}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n{extra}"
    if message_id:
        head += f"Message-ID: {message_id}\r\n"
    if in_reply_to:
        head += f"In-Reply-To: {in_reply_to}\r\n"
    if references:
        head += f"References: {references}\r\n"
    return (head + "\r\nThanks!\r\n").encode()


# Replies ------------------------------------------------------------------------------------

def test_reply_to_an_api_message_is_filed_and_recorded_once(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        original = new_queue_id()
        parent = e.msgid(QueueOrigin(original))
        message = reply("customer@b.test", in_reply_to=parent,
                        references=f"<older@b.test>\r\n {parent}", message_id="<r1@b.test>")
        for _ in range(2):  # the client did not see our 250 and sends it again
            replies, end = await transaction(e.mx, "bounce-me@b.test", [NEWS], message)
            assert replies[0].code == 250 and end is not None and end.code == 250
        assert await e.inbox() == 2  # filed as usual, both times
        (event,) = await e.events(EventKind.REPLIED)
        attrs = dict(event.attrs)
        assert (event.queue_id, event.recipient) == (original, "customer@b.test")
        assert attrs["from"] == "customer@b.test"
        assert attrs["original_queue_id"] == original and attrs["reply"] == "<r1@b.test>"
        assert attrs["in_reply_to"] == parent and "campaign_id" not in attrs
        assert attrs["reply_queue_id"] != original
        # Another reply to the same message is another event.
        await transaction(e.mx, "customer@b.test", [NEWS],
                          reply("customer@b.test", in_reply_to=parent, message_id="<r2@b.test>"))
        assert len(await e.events(EventKind.REPLIED)) == 2

    run(tmp_path, body)


def test_reply_to_a_campaign_message_names_campaign_contact_and_queue_id(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        email = next(iter(e.contacts))
        parent = e.msgid(CampaignOrigin(e.campaign.id, e.contacts[email]))
        # A reply to our reply to them: In-Reply-To is not ours, References still are.
        message = reply(email, in_reply_to="<our-answer@a.test>",
                        references=f"{parent} <our-answer@a.test>")  # and no Message-ID
        for _ in range(2):
            _, end = await transaction(e.mx, email, [NEWS], message)
            assert end is not None and end.code == 250
        (event,) = await e.events(EventKind.REPLIED)
        attrs = dict(event.attrs)
        assert (event.queue_id, event.recipient) == (e.queue_ids[email], email)
        assert attrs["campaign_id"] == str(e.campaign.id)
        assert attrs["contact_id"] == str(e.contacts[email])
        assert attrs["reply"].startswith("sha256:")  # no Message-ID: its header's hash

    run(tmp_path, body)


def test_what_does_not_map_to_our_send_records_nothing(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        email = next(iter(e.contacts))
        cases = [
            e.msgid(CampaignOrigin(e.campaign.id, e.contacts[email]), secret=OTHER),  # forged
            e.msgid(CampaignOrigin(CampaignId(e.campaign.id + 99), e.contacts[email])),  # no row
            e.msgid(CampaignOrigin(e.campaign.id, ContactId(10**9))),  # no such contact
            "<mp1." + "a" * 48 + "@a.test>",  # our shape, no tag
            "<just-a-message@b.test>",
        ]
        for i, parent in enumerate(cases):
            _, end = await transaction(e.mx, email, [NEWS],
                                       reply(email, in_reply_to=parent, message_id=f"<n{i}@b>"))
            assert end is not None and end.code == 250
        assert await e.inbox() == len(cases)
        assert await e.events(EventKind.REPLIED) == []
        # Submitted mail (our own users writing out) is not a reply to us.
        await transaction(e.submission, NEWS, ["friend@b.test"],
                          reply(NEWS, in_reply_to=e.msgid(QueueOrigin(new_queue_id())),
                                to="friend@b.test"), user=NEWS)
        assert await e.events(EventKind.REPLIED) == []

    run(tmp_path, body)


def test_auto_replies_are_filed_and_not_counted(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        parent = e.msgid(QueueOrigin(new_queue_id()))
        automatic = ["Auto-Submitted: auto-replied\r\n",
                     "Auto-Submitted: Auto-Generated (vacation); owner-email=a@b.test\r\n",
                     "Auto-Submitted: auto-notified\r\n",  # an extension (RFC 3834 5)
                     "X-Autoreply: yes\r\n", "Precedence: bulk\r\n",
                     "Precedence: junk\r\n", "PRECEDENCE: auto_reply\r\n"]
        for i, extra in enumerate(automatic):
            _, end = await transaction(e.mx, "ooo@b.test", [NEWS], reply(
                "ooo@b.test", in_reply_to=parent, message_id=f"<auto{i}@b.test>", extra=extra))
            assert end is not None and end.text.startswith("Ok: queued as"), extra
        assert await e.inbox() == len(automatic)  # filed as usual
        assert await e.events(EventKind.REPLIED) == []
        # A person's reply says so, or says nothing: counted.
        for i, extra in enumerate(["Auto-Submitted: no\r\n", "Precedence: list\r\n"]):
            await transaction(e.mx, "person@b.test", [NEWS], reply(
                "person@b.test", in_reply_to=parent, message_id=f"<human{i}@b.test>",
                extra=extra))
        assert len(await e.events(EventKind.REPLIED)) == 2

    run(tmp_path, body)


def test_a_reply_filed_as_junk_is_not_counted(tmp_path: Path, dns_server: DnsTestServer) -> None:
    # b.test fails DMARC (SPF -all, no DKIM) with p=quarantine: filed into Junk. c.test passes.
    dns_server.zone.add_txt("b.test", "v=spf1 -all")
    dns_server.zone.add_txt("_dmarc.b.test", "v=DMARC1; p=quarantine")
    dns_server.zone.add_txt("c.test", "v=spf1 ip4:192.0.2.7 -all")
    dns_server.zone.add_txt("_dmarc.c.test", "v=DMARC1; p=quarantine")

    async def body(e: Env) -> None:
        auth = MxAuthenticator(DnsResolver([dns_server.address], 2.0), MxAuthPolicy("mx.a.test"),
                               e.store, sample=lambda: 0.0)
        mx = InboundService(e.store, InboundConfig("mx.a.test", "mx"), FixedClock(),
                            mx_auth=auth, replies=ReplyRecorder(e.store, MsgIdCodec([SECRET])))
        parent = e.msgid(QueueOrigin(new_queue_id()))
        _, end = await transaction(mx, "spoof@b.test", [NEWS], reply(
            "spoof@b.test", in_reply_to=parent, message_id="<junk@b.test>"))
        assert end is not None and end.text.startswith("Ok: queued as")
        assert (await e.inbox(mailbox="Junk"), await e.inbox()) == (1, 0)
        assert await e.events(EventKind.REPLIED) == []
        _, end = await transaction(mx, "real@c.test", [NEWS], reply(
            "real@c.test", in_reply_to=parent, message_id="<ok@c.test>"))
        assert end is not None and await e.inbox() == 1
        (event,) = await e.events(EventKind.REPLIED)
        assert dict(event.attrs)["from"] == "real@c.test"

    run(tmp_path, body)


def test_hostile_references_are_read_within_bounds(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        parent = e.msgid(QueueOrigin(new_queue_id()))
        junk = " ".join(f"<mp1.{'b' * 47}{c}@x.test>" for c in "abcdefghijklmnopqrstuvwxyz")
        references = f"{parent} {junk}" + " <x@y>" * 5000  # 100 kB folded into one field
        message = reply("a@b.test", references=references.replace("> <", ">\r\n <"))
        _, end = await transaction(e.mx, "a@b.test", [NEWS], message)
        # Filed; the real id was past the ids verified, so no event (and no error).
        assert end is not None and end.code == 250 and await e.inbox() == 1
        assert await e.events(EventKind.REPLIED) == []

    run(tmp_path, body)


# The List-Unsubscribe mailto ---------------------------------------------------------------

def test_mailto_unsubscribes_from_the_list_once_and_stores_nothing(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        email = next(iter(e.contacts))
        token = e.unsubscribe_token(email, list_id=e.list_id)
        subject = f"unsubscribe-{token}"
        replies, end = await transaction(e.mx, email, ["unsubscribe@a.test"],
                                         reply(email, subject=subject, to="unsubscribe@a.test"))
        assert replies[0] == Reply(250, "Ok", "2.1.5")
        assert end == Reply(250, "Ok", "2.0.0")  # no "queued as": nothing was stored
        assert await e.store.list_queue() == []
        membership = await e.store.get_membership(e.contacts[email], e.list_id)
        assert membership is not None and membership.status is MembershipStatus.UNSUBSCRIBED
        (event,) = await e.events(EventKind.UNSUBSCRIBED)
        attrs = dict(event.attrs)
        assert (event.recipient, attrs["how"], attrs["source"]) == (email, "list", "mailto")
        assert attrs["campaign_id"] == str(e.campaign.id) and attrs["machine"] == "no"
        last = (await e.store.consent_entries(email))[-1]
        assert (last.action, last.source, last.ip) == (ConsentAction.WITHDRAWN,
                                                       ConsentSource.MAILTO, "192.0.2.7")
        # Again, as a client that encodes its Subject (RFC 2047) and puts "Re:" in front.
        encoded = base64.b64encode(subject.encode()).decode()
        _, end = await transaction(e.mx, email, ["Unsubscribe@A.TEST"],
                                   reply(email, subject=f"Re: =?utf-8?b?{encoded}?=",
                                         to="unsubscribe@a.test"))
        assert end == Reply(250, "Ok", "2.0.0")
        assert len(await e.events(EventKind.UNSUBSCRIBED)) == 1  # nothing new to do

    run(tmp_path, body)


def test_an_account_or_alias_named_unsubscribe_keeps_its_mail(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        await e.store.add_account("unsubscribe@a.test", hash_password("unsub-pw"))
        await e.store.add_domain("c.test")
        await e.store.add_alias("unsubscribe@c.test", NEWS)
        email = next(iter(e.contacts))
        subject = f"unsubscribe-{e.unsubscribe_token(email, list_id=e.list_id)}"
        for service, to in ((e.mx, "unsubscribe@a.test"), (e.mx, "Unsubscribe@C.test"),
                            (e.submission, "unsubscribe@a.test")):
            replies, end = await transaction(service, NEWS if service is e.submission else email,
                                             [to], reply(email, subject=subject, to=to),
                                             user=NEWS if service is e.submission else None)
            assert replies[0] == Reply(250, "Ok", "2.1.5")
            assert end is not None and end.text.startswith("Ok: queued as"), to
        assert await e.inbox("unsubscribe@a.test") == 2  # the account's, from MX and submission
        assert await e.inbox() == 1  # the alias's destination
        # The name is theirs with any detail too: resolved as usual (no such address here).
        replies, _ = await transaction(e.mx, email, [f"unsubscribe+{'x' * 40}@a.test"],
                                       reply(email, subject=subject))
        assert replies[0].code == 550
        membership = await e.store.get_membership(e.contacts[email], e.list_id)
        assert membership is not None and membership.status is MembershipStatus.CONFIRMED
        assert await e.events(EventKind.UNSUBSCRIBED) == []
        # A catch-all does not own the name: the mailto works at its domain.
        await e.store.add_domain("d.test")
        await e.store.add_alias("@d.test", NEWS)
        _, end = await transaction(e.mx, email, ["unsubscribe@d.test"],
                                   reply(email, subject=subject, to="unsubscribe@d.test"))
        assert end == Reply(250, "Ok", "2.0.0")
        assert len(await e.events(EventKind.UNSUBSCRIBED)) == 1 and await e.inbox() == 1

    run(tmp_path, body)


def test_mailto_without_a_list_suppresses_the_address(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        email = list(e.contacts)[1]
        token = e.unsubscribe_token(email)
        _, end = await transaction(e.mx, "someone@c.test", ["unsubscribe@a.test"],
                                   reply(email, subject=f"unsubscribe-{token}",
                                         to="unsubscribe@a.test"))
        assert end == Reply(250, "Ok", "2.0.0")
        found = await e.store.find_suppression(email, "a.test")
        assert found is not None and found.reason.value == "unsubscribe"
        (event,) = await e.events(EventKind.UNSUBSCRIBED)
        assert dict(event.attrs)["how"] == "suppression"

    run(tmp_path, body)


def test_forged_or_missing_tokens_change_nothing_and_bounce_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(e: Env) -> None:
        email = next(iter(e.contacts))
        good = e.unsubscribe_token(email, list_id=e.list_id)
        forged = e.unsubscribe_token(email, list_id=e.list_id, secret=OTHER)
        altered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
        for subject in (f"unsubscribe-{forged}", f"unsubscribe-{altered}", "please stop", ""):
            _, end = await transaction(e.mx, email, ["unsubscribe@a.test"],
                                       reply(email, subject=subject, to="unsubscribe@a.test"))
            assert end == Reply(250, "Ok", "2.0.0")
        # The address form: accepted, its detail tried as a token, and dropped.
        replies, end = await transaction(e.mx, email, [f"unsubscribe+{'x' * 40}@a.test"],
                                         reply(email, subject="", to="unsubscribe@a.test"))
        assert replies[0].code == 250 and end == Reply(250, "Ok", "2.0.0")
        membership = await e.store.get_membership(e.contacts[email], e.list_id)
        assert membership is not None and membership.status is MembershipStatus.CONFIRMED
        assert await e.events(EventKind.UNSUBSCRIBED) == []
        assert await e.store.list_queue() == []  # no bounce, no answer, nothing stored
        lines = [r.getMessage() for r in caplog.records if r.name == "mailprime.unsubscribe"]
        assert sum("reason=\"invalid token\"" in line for line in lines) == 3
        assert sum("no unsubscribe token" in line for line in lines) == 2

    caplog.set_level(logging.INFO, logger="mailprime.unsubscribe")
    run(tmp_path, body)


def test_mailto_beside_other_recipients_and_other_domains(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        email = next(iter(e.contacts))
        token = e.unsubscribe_token(email, list_id=e.list_id)
        replies, end = await transaction(
            e.mx, email, ["unsubscribe@a.test", NEWS, "unsubscribe@elsewhere.test"],
            reply(email, subject=f"unsubscribe-{token}", to="unsubscribe@a.test"))
        assert [r.code for r in replies] == [250, 250, 554]  # never an open relay
        assert end is not None and end.text.startswith("Ok: queued as")
        assert await e.inbox() == 1  # the other recipient gets it
        assert len(await e.events(EventKind.UNSUBSCRIBED)) == 1
        # Our own users may use it too (a list they are on), through submission.
        other = list(e.contacts)[1]
        token = e.unsubscribe_token(other, list_id=e.list_id)
        _, end = await transaction(e.submission, NEWS, ["unsubscribe@a.test"],
                                   reply(NEWS, subject=f"unsubscribe-{token}",
                                         to="unsubscribe@a.test"), user=NEWS)
        assert end == Reply(250, "Ok", "2.0.0")
        assert len(await e.events(EventKind.UNSUBSCRIBED)) == 2

    run(tmp_path, body)
