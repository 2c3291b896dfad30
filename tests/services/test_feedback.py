"""Bounces and complaints at the MX, driven through a real InboundSession event by event against
a real SQLite store: VERP and FBL recipients at RCPT (forged and expired tokens refused), real
bounce samples (tests/message/bounces) mapped to our recipient, what a report may not make us do
(suppress an address it merely names, one a remote alias expanded to, or one of a message no
longer queued), ARF complaints, each report recorded once however often it arrives, mixed
transactions, and the submission side (the suppression gate and the Feedback-ID field)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, DsnNotify, EnvelopeRecipient, Event, EventKind
from mailprime.message.verp import VerpCodec
from mailprime.proto.smtp.types import MailParams, PeerInfo, RcptParams, Reply
from mailprime.services.feedback import FeedbackConfig, FeedbackService
from mailprime.services.inbound import InboundConfig, InboundService
from mailprime.services.passwords import hash_password
from mailprime.services.suppression import SuppressionConfig, SuppressionPolicy
from mailprime.storage.sql import SqlStore, open_store
from tests.storage.conftest import FixedClock

SAMPLES = Path(__file__).parents[1] / "message" / "bounces"
ALICE = "alice@a.test"
BOB = "bob@b.test"
CAROL = "carol@b.test"
# The recipients the samples name (so a bounce to their VERP address names our recipient).
NOSUCH = "nosuch@example.net"  # postfix/exim/qmail user unknown
FULL = "full@example.net"  # postfix mailbox full
SLOW = "slow@example.org"  # gmail delayed, qmail gave up
SECRET = bytes(range(32))


@dataclass
class Env:
    store: SqlStore
    codec: VerpCodec
    mx: InboundService
    submission: InboundService
    qid: QueueId
    rcpt_ids: dict[str, int]
    clock: FixedClock

    def verp(self, address: str) -> str:
        made = self.codec.encode(self.qid, self.rcpt_ids[address], "a.test")
        assert made is not None
        return made

    async def events(self, kind: EventKind) -> list[Event]:
        return [e for e in await self.store.list_events() if e.kind is kind]


@asynccontextmanager
async def env(tmp: Path, **policy: object) -> AsyncIterator[Env]:
    clock = FixedClock()
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024, clock=clock)
    try:
        await store.add_domain("a.test")
        await store.add_account(ALICE, hash_password("alice-pw"))
        qid = new_queue_id()
        await store.accept(Acceptance(queue_id=qid, content=b"Subject: offer\r\n\r\nhi\r\n",
                                      sender=ALICE, remote=tuple(EnvelopeRecipient(a) for a in (
                                          BOB, CAROL, NOSUCH, FULL, SLOW))))
        ids = {r.address: int(r.id) for r in await store.get_recipients(qid)}
        codec = VerpCodec([SECRET], clock=lambda: clock.now().timestamp())
        max_age = int(policy.pop("verp_max_age_days", 30))  # type: ignore[call-overload]
        config = SuppressionConfig(**{"soft_bounce_limit": 1, **policy})  # type: ignore[arg-type]
        feedback = FeedbackService(store, SuppressionPolicy(store, clock, config), codec=codec,
                                   config=FeedbackConfig(fbl_addresses=("fbl", "abuse@a.test"),
                                                         verp_max_age_days=max_age))
        mx = InboundService(store, InboundConfig("mx.a.test", "mx"), clock, feedback=feedback)
        sub = InboundService(store, InboundConfig("mx.a.test", "submission"), clock,
                             feedback=feedback)
        yield Env(store, codec, mx, sub, qid, ids, clock)
    finally:
        await store.close()


def run(tmp: Path, body: Callable[[Env], Awaitable[None]], **policy: object) -> None:
    async def main() -> None:
        async with env(tmp, **policy) as e:
            await body(e)

    asyncio.run(main())


async def transaction(service: InboundService, sender: str, rcpts: list[str],
                      message: bytes | None, *, user: str | None = None) -> tuple[list[Reply], Reply | None]:
    """One SMTP transaction: the RCPT replies, and the reply at end of data (None: no DATA)."""
    role = service.config.role
    sess = service.new_session(PeerInfo("127.0.0.1", 40000, role), tls=True)
    await sess.on_helo("mx.remote.test", True)
    if user is not None:
        assert (await sess.on_auth("PLAIN", "", user, "alice-pw")).ok
    assert (await sess.on_mail(sender, MailParams())).code == 250
    replies = [await sess.on_rcpt(r, RcptParams()) for r in rcpts]
    if message is None or not any(r.code == 250 for r in replies):
        await sess.on_close()
        return replies, None
    assert await sess.on_data_start() is None
    for start in range(0, len(message), 1000):
        await sess.on_data_chunk(message[start:start + 1000])
    end = await sess.on_data_end()
    await sess.on_close()
    return replies, end


def sample(name: str, *, message_id: str | None = None) -> bytes:
    """A sample report; `message_id` replaces its own Message-ID ("" removes it)."""
    raw = (SAMPLES / name).read_bytes()
    if message_id is None:
        return raw
    field = f"Message-Id: {message_id}\r\n".encode() if message_id else b""
    out, n = re.subn(rb"(?im)^Message-Id: [^\r\n]*\r?\n", lambda _m: field, raw, count=1)
    assert n == 1
    return out


def with_return_path(arf: bytes, return_path: str) -> bytes:
    """An ARF sample whose reported headers start with `Return-Path: <return_path>`."""
    head, sep, rest = arf.partition(b"Content-Type: text/rfc822-headers")
    assert sep
    nl = b"\r\n" if b"\r\n" in arf else b"\n"
    part_head, blank, headers = rest.partition(nl + nl)
    return head + sep + part_head + blank + b"Return-Path: <" + return_path.encode() + b">" + nl + headers


def test_rcpt_decisions_on_the_mx(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        good = e.verp(BOB)
        local, domain = good.split("@")
        forged = local[:-1] + ("b" if local[-1] == "a" else "a") + "@" + domain
        elsewhere = local + "@elsewhere.test"
        replies, _ = await transaction(e.mx, "", [good, good.upper(), forged, elsewhere,
                                                  "fbl@a.test", "abuse@a.test", "fbl@b.test",
                                                  "bounces@a.test"], None)
        assert [(r.code, r.enhanced) for r in replies] == [
            (250, "2.1.5"), (250, "2.1.5"), (550, "5.1.1"), (554, "5.7.1"), (250, "2.1.5"),
            (250, "2.1.5"), (554, "5.7.1"), (550, "5.1.1")]
        assert replies[2].text == f"<{forged}>: Recipient address rejected: invalid bounce address"

    run(tmp_path, body)


def test_a_token_older_than_the_maximum_age_is_refused_at_rcpt(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        today = e.codec.today()
        rid = e.rcpt_ids[BOB]
        aged = [e.codec.encode(e.qid, rid, "a.test", day=today - days) for days in (10, 11, 400)]
        ahead = [e.codec.encode(e.qid, rid, "a.test", day=today + days) for days in (1, 2)]
        addresses = [a for a in aged + ahead if a is not None]
        assert len(addresses) == 5
        replies, _ = await transaction(e.mx, "", addresses, None)
        assert [(r.code, r.enhanced) for r in replies] == [
            (250, "2.1.5"), (550, "5.1.1"), (550, "5.1.1"), (250, "2.1.5"), (550, "5.1.1")]
        assert replies[1].text == (f"<{addresses[1]}>: Recipient address rejected: "
                                   "expired bounce address")
        # An old token in a complaint's reported headers maps nothing either.
        arf = with_return_path(sample("arf-yahoo-headers-only.eml"), addresses[2])
        _, end = await transaction(e.mx, "", ["fbl@a.test"], arf)
        assert end is not None and end.code == 250
        (complained,) = await e.events(EventKind.COMPLAINED)
        assert complained.queue_id is None and dict(complained.attrs)["mapped"] == "no"
        assert await e.store.list_suppressions() == []

    run(tmp_path, body, verp_max_age_days=10)


def test_real_postfix_bounce_naming_our_recipient_suppresses_it_and_is_not_stored(
        tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        _, end = await transaction(e.mx, "", [e.verp(FULL)], sample("postfix-mailbox-full.eml"))
        assert end is not None and (end.code, end.text) == (250, "Ok: 1 report(s) recorded")
        (bounced,) = await e.events(EventKind.BOUNCED)
        assert (bounced.queue_id, bounced.recipient) == (e.qid, FULL)
        assert dict(bounced.attrs) == {
            "reason": "mailbox_full", "class": "soft", "status": "5.2.2", "source": "async",
            "action": "failed", "format": "dsn", "mapped_by": "verp", "mapped": "yes",
            "remote_mta": "127.0.0.1", "countable": "yes",
            "report": "<20261126105829.C268020C75B@mta.origin.test>",
            "rcpt_id": str(e.rcpt_ids[FULL])}
        # Soft, counted (the remote gave up on a full mailbox); the limit here is 1.
        entry = await e.store.find_suppression(FULL, "a.test")
        assert entry is not None and entry.reason is SuppressionReason.SOFT_BOUNCES
        assert await e.store.find_suppression(BOB) is None
        account = await e.store.get_account(ALICE)
        assert account is not None and await e.store.list_messages(account.id, "INBOX") == []

    run(tmp_path, body)


def test_a_bounce_about_an_address_a_remote_alias_expanded_to_suppresses_nothing(
        tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        # CAROL's message; the report says full@example.net failed: carol@ forwards there.
        _, end = await transaction(e.mx, "", [e.verp(CAROL)], sample("postfix-mailbox-full.eml"))
        assert end is not None and (end.code, end.text) == (250, "Ok: 1 report(s) recorded")
        (bounced,) = await e.events(EventKind.BOUNCED)
        assert (bounced.queue_id, bounced.recipient) == (e.qid, CAROL)
        attrs = dict(bounced.attrs)
        assert (attrs["reported_recipient"], attrs["recipient_match"], attrs["mapped"]) == (
            FULL, "no", "yes")
        assert "countable" not in attrs
        assert await e.store.list_suppressions() == []
        assert await e.events(EventKind.SUPPRESSED) == []

    run(tmp_path, body)


def test_a_bounce_naming_the_orcpt_of_our_recipient_applies(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        qid = new_queue_id()
        # Our recipient was reached through an address the client named in ORCPT (xtext).
        await e.store.accept(Acceptance(
            queue_id=qid, content=b"Subject: s\r\n\r\nhi\r\n", sender=ALICE,
            remote=(EnvelopeRecipient("dan@b.test", orcpt="rfc822;nosuch@example.net"),)))
        (row,) = await e.store.get_recipients(qid)
        verp = e.codec.encode(qid, row.id, "a.test")
        assert verp is not None
        _, end = await transaction(e.mx, "", [verp], sample("postfix-user-unknown.eml"))
        assert end is not None and end.code == 250
        hard = await e.store.find_suppression("dan@b.test")
        assert hard is not None and hard.reason is SuppressionReason.HARD_BOUNCE
        assert await e.store.find_suppression(NOSUCH) is None  # the report's word only

    run(tmp_path, body)


def test_delayed_dsn_is_a_deferral_and_suppresses_nothing(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        _, end = await transaction(e.mx, "", [e.verp(SLOW)], sample("gmail-dsn-delayed.eml"))
        assert end is not None and end.code == 250
        (deferred,) = await e.events(EventKind.DEFERRED)
        assert deferred.recipient == SLOW
        assert dict(deferred.attrs)["action"] == "delayed"
        assert dict(deferred.attrs)["source"] == "async"
        assert await e.store.find_suppression(SLOW) is None
        assert await e.events(EventKind.SUPPRESSED) == []

    run(tmp_path, body)


def test_other_text_formats_map_too(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        for name, address in (("exim-user-unknown.eml", NOSUCH), ("qmail-three-recipients.eml", SLOW)):
            _, end = await transaction(e.mx, "", [e.verp(address)], sample(name))
            assert end is not None and end.text == "Ok: 1 report(s) recorded", name
        bounced = {ev.recipient: dict(ev.attrs) for ev in await e.events(EventKind.BOUNCED)}
        assert bounced[NOSUCH]["format"] == "dsn" and bounced[NOSUCH]["reason"] == "user_unknown"
        # qmail names three failures; the one about our recipient is picked (not the hard one).
        assert bounced[SLOW]["format"] == "qmail" and "reported_recipient" not in bounced[SLOW]
        assert bounced[SLOW]["report"].startswith("sha256:")  # the report has no Message-ID
        hard = await e.store.find_suppression(NOSUCH)
        assert hard is not None and hard.reason is SuppressionReason.HARD_BOUNCE

    run(tmp_path, body)


def test_mixed_transaction_stores_for_the_mailbox_and_records_the_bounce(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        _, end = await transaction(e.mx, "", [e.verp(NOSUCH), ALICE], sample("postfix-user-unknown.eml"))
        assert end is not None and end.code == 250 and "queued as" in end.text
        account = await e.store.get_account(ALICE)
        assert account is not None
        assert len(await e.store.list_messages(account.id, "INBOX")) == 1
        (bounced,) = await e.events(EventKind.BOUNCED)
        assert bounced.recipient == NOSUCH

    run(tmp_path, body)


def test_a_bounce_for_a_message_gone_from_the_queue_is_recorded_only(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        verp = e.verp(NOSUCH)
        assert await e.store.delete_message(e.qid)
        _, end = await transaction(e.mx, "", [verp], sample("postfix-user-unknown.eml"))
        assert end is not None and (end.code, end.text) == (250, "Ok: 1 report(s) recorded")
        (bounced,) = await e.events(EventKind.BOUNCED)
        attrs = dict(bounced.attrs)
        assert (bounced.queue_id, bounced.recipient) == (e.qid, None)
        assert (attrs["mapped"], attrs["mapped_by"], attrs["reported_recipient"]) == (
            "no", "none", NOSUCH)
        # The token proves we sent something, not to whom: the named address is not suppressed.
        assert await e.store.list_suppressions() == []

    run(tmp_path, body)


def test_the_same_bounce_twice_is_recorded_once(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        report = sample("postfix-mailbox-full.eml")
        _, first = await transaction(e.mx, "", [e.verp(FULL)], report)
        _, again = await transaction(e.mx, "", [e.verp(FULL)], report)
        assert first is not None and first.text == "Ok: 1 report(s) recorded"
        assert again is not None and (again.code, again.text) == (250, "Ok: report already recorded")
        # Retried with a mailbox recipient beside it (the remote's answer was lost): the copy is
        # stored, the report not recorded again.
        _, mixed = await transaction(e.mx, "", [e.verp(FULL), ALICE], report)
        assert mixed is not None and "queued as" in mixed.text
        assert len(await e.events(EventKind.BOUNCED)) == 1
        # The same report without a Message-ID is known by its octets.
        bare = sample("postfix-user-unknown.eml", message_id="")
        for _ in range(2):
            _, end = await transaction(e.mx, "", [e.verp(NOSUCH)], bare)
            assert end is not None and end.code == 250
        assert [ev.recipient for ev in await e.events(EventKind.BOUNCED)] == [FULL, NOSUCH]
        # The same report at another recipient's VERP address is another fact.
        _, other = await transaction(e.mx, "", [e.verp(CAROL)], report)
        assert other is not None and other.text == "Ok: 1 report(s) recorded"

    run(tmp_path, body, soft_bounce_limit=2)


def test_two_reports_of_one_message_count_one_soft_bounce(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        for n in (1, 2):
            report = sample("postfix-mailbox-full.eml", message_id=f"<report-{n}@mx.example.net>")
            _, end = await transaction(e.mx, "", [e.verp(FULL)], report)
            assert end is not None and end.text == "Ok: 1 report(s) recorded"
        bounced = await e.events(EventKind.BOUNCED)
        assert [dict(b.attrs)["countable"] for b in bounced] == ["yes", "yes"]
        assert await e.store.find_suppression(FULL) is None  # 1 of 2: once per message
        # Another message to the same address is the second soft bounce.
        qid = new_queue_id()
        await e.store.accept(Acceptance(queue_id=qid, content=b"Subject: s\r\n\r\nhi\r\n",
                                        sender=ALICE, remote=(EnvelopeRecipient(FULL),)))
        (row,) = await e.store.get_recipients(qid)
        verp = e.codec.encode(qid, row.id, "a.test")
        assert verp is not None
        _, end = await transaction(e.mx, "", [verp], sample("postfix-mailbox-full.eml"))
        assert end is not None and end.code == 250
        soft = await e.store.find_suppression(FULL)
        assert soft is not None and soft.reason is SuppressionReason.SOFT_BOUNCES

    run(tmp_path, body, soft_bounce_limit=2)


def test_auto_reply_to_a_verp_address_is_dropped(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        reply = b"From: bob@b.test\r\nSubject: Out of office\r\n\r\nI am away.\r\n"
        _, end = await transaction(e.mx, "bob@b.test", [e.verp(BOB)], reply)
        assert end is not None and (end.code, end.text) == (250, "Ok: nothing to record")
        assert [ev.kind for ev in await e.store.list_events()] == [EventKind.QUEUED] * 5

    run(tmp_path, body)


def test_arf_at_the_fbl_address_maps_by_return_path_to_our_row(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        # The sample names bob@yahoo.example; its Return-Path is made CAROL's VERP address:
        # the address suppressed is the one in our row, not the one in the report.
        arf = with_return_path(sample("arf-yahoo-headers-only.eml"), e.verp(CAROL))
        _, end = await transaction(e.mx, "", ["FBL@a.test"], arf)
        assert end is not None and end.text == "Ok: 1 report(s) recorded"
        (complained,) = await e.events(EventKind.COMPLAINED)
        assert (complained.queue_id, complained.recipient) == (e.qid, CAROL)
        attrs = dict(complained.attrs)
        assert (attrs["mapped_by"], attrs["mapped"], attrs["reported_recipient"]) == (
            "verp", "yes", "bob@yahoo.example")
        entry = await e.store.find_suppression(CAROL)
        assert entry is not None and entry.reason is SuppressionReason.COMPLAINT
        assert await e.store.find_suppression("bob@yahoo.example") is None
        # Sent again (the FBL retried): acknowledged, not recorded twice.
        _, again = await transaction(e.mx, "", ["fbl@a.test"], arf)
        assert again is not None and again.text == "Ok: report already recorded"
        assert len(await e.events(EventKind.COMPLAINED)) == 1

    run(tmp_path, body)


def test_a_complaint_without_our_verp_token_suppresses_nothing(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        # Anyone can mail a report naming anyone: this one names alice@mailbox.example.
        _, end = await transaction(e.mx, "", ["abuse@a.test"], sample("arf-abuse-original-rcpt-to.eml"))
        assert end is not None and end.code == 250
        (complained,) = await e.events(EventKind.COMPLAINED)
        assert (complained.queue_id, complained.recipient) == (None, None)
        attrs = dict(complained.attrs)
        assert (attrs["mapped"], attrs["mapped_by"], attrs["reported_recipient"]) == (
            "no", "none", "alice@mailbox.example")
        assert await e.store.list_suppressions() == []
        assert await e.events(EventKind.SUPPRESSED) == []

    run(tmp_path, body)
    # Under scope = "domain" an unmapped report has no sending domain: still nothing (the empty
    # scope is the global one).
    run(tmp_path / "domain", body, scope="domain")


def test_a_complaint_about_a_message_gone_from_the_queue_suppresses_nothing(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        verp = e.verp(BOB)
        assert await e.store.delete_message(e.qid)
        arf = with_return_path(sample("arf-yahoo-headers-only.eml"), verp)
        _, end = await transaction(e.mx, "", ["fbl@a.test"], arf)
        assert end is not None and end.code == 250
        (complained,) = await e.events(EventKind.COMPLAINED)
        assert (complained.queue_id, complained.recipient) == (e.qid, None)
        assert dict(complained.attrs)["mapped"] == "no"
        assert await e.store.list_suppressions() == []

    run(tmp_path, body)


def test_submission_gate_and_feedback_id(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        await e.store.suppress(Suppression(address=BOB, scope="", reason=SuppressionReason.COMPLAINT,
                                           created_at=e.clock.now()))
        message = (b"From: alice@a.test\r\nTo: carol@b.test\r\nSubject: hi\r\n"
                   b"X-Campaign-ID: spring\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
        replies, end = await transaction(e.submission, ALICE, [BOB, CAROL], message, user=ALICE)
        assert (replies[0].code, replies[0].enhanced) == (550, "5.7.1")
        assert replies[0].text == f"<{BOB}>: recipient suppressed (complaint on {e.clock.now():%Y-%m-%d})"
        assert replies[1].code == 250
        assert end is not None and end.code == 250
        qid = QueueId(end.text.rsplit(" ", 1)[1])
        msg = await e.store.get_message(qid)
        assert msg is not None
        content = await e.store.read_blob(msg.blob_id)
        assert b"Feedback-ID: spring:a.test:transactional:mailprime\r\n" in content
        assert b"MIME-Version: 1.0\r\n" in content
        assert [r.address for r in await e.store.get_recipients(qid)] == [CAROL]

    run(tmp_path, body)


def test_report_the_sender_asked_for_is_also_forwarded_to_the_sender(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        qid = new_queue_id()
        await e.store.accept(Acceptance(
            queue_id=qid, content=b"Subject: tell me\r\n\r\nhi\r\n", sender=ALICE,
            remote=(EnvelopeRecipient(BOB, notify=frozenset({DsnNotify.FAILURE})),)))
        (row,) = await e.store.get_recipients(qid)
        verp = e.codec.encode(qid, row.id, "a.test")
        assert verp is not None
        _, end = await transaction(e.mx, "", [verp], sample("postfix-user-unknown.eml"))
        assert end is not None and "queued as" in end.text  # stored for alice
        account = await e.store.get_account(ALICE)
        assert account is not None
        (stored,) = await e.store.list_messages(account.id, "INBOX")
        assert b"Undelivered Mail Returned to Sender" in await e.store.read_blob(stored.blob_id)
        (bounced,) = await e.events(EventKind.BOUNCED)  # and recorded all the same
        assert (bounced.queue_id, bounced.recipient) == (qid, BOB)

    run(tmp_path, body)
