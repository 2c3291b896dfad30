"""Bounces and complaints at the MX, driven through a real InboundSession event by event against
a real SQLite store: VERP and FBL recipients at RCPT, real bounce samples (tests/message/bounces)
mapped to our recipient, ARF complaints, mixed transactions, and the submission side (the
suppression gate and the Feedback-ID field)."""

from __future__ import annotations

import asyncio
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
async def env(tmp: Path) -> AsyncIterator[Env]:
    clock = FixedClock()
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024, clock=clock)
    try:
        await store.add_domain("a.test")
        await store.add_account(ALICE, hash_password("alice-pw"))
        qid = new_queue_id()
        await store.accept(Acceptance(queue_id=qid, content=b"Subject: offer\r\n\r\nhi\r\n",
                                      sender=ALICE, remote=(EnvelopeRecipient(BOB),
                                                            EnvelopeRecipient(CAROL))))
        ids = {r.address: int(r.id) for r in await store.get_recipients(qid)}
        codec = VerpCodec([SECRET])
        policy = SuppressionPolicy(store, clock, SuppressionConfig(soft_bounce_limit=1))
        feedback = FeedbackService(store, policy, codec=codec,
                                   config=FeedbackConfig(fbl_addresses=("fbl", "abuse@a.test")))
        mx = InboundService(store, InboundConfig("mx.a.test", "mx"), clock, feedback=feedback)
        sub = InboundService(store, InboundConfig("mx.a.test", "submission"), clock,
                             feedback=feedback)
        yield Env(store, codec, mx, sub, qid, ids, clock)
    finally:
        await store.close()


def run(tmp: Path, body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        async with env(tmp) as e:
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


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


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


def test_real_postfix_bounce_maps_to_our_recipient_and_is_not_stored(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        # Postfix's report names full@example.net; the token says it was carol's message.
        _, end = await transaction(e.mx, "", [e.verp(CAROL)], sample("postfix-mailbox-full.eml"))
        assert end is not None and (end.code, end.text) == (250, "Ok: 1 report(s) recorded")
        (bounced,) = await e.events(EventKind.BOUNCED)
        assert (bounced.queue_id, bounced.recipient) == (e.qid, CAROL)
        attrs = dict(bounced.attrs)
        assert attrs | {"remote_mta": ""} == attrs | {
            "reason": "mailbox_full", "class": "soft", "status": "5.2.2", "source": "async",
            "action": "failed", "format": "dsn", "mapped_by": "verp",
            "reported_recipient": "full@example.net", "remote_mta": ""}
        # Soft, counted (the remote gave up on a full mailbox); the limit here is 1.
        entry = await e.store.find_suppression(CAROL, "a.test")
        assert entry is not None and entry.reason is SuppressionReason.SOFT_BOUNCES
        assert await e.store.find_suppression(BOB) is None
        account = await e.store.get_account(ALICE)
        assert account is not None and await e.store.list_messages(account.id, "INBOX") == []

    run(tmp_path, body)


def test_delayed_dsn_is_a_deferral_and_suppresses_nothing(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        _, end = await transaction(e.mx, "", [e.verp(BOB)], sample("gmail-dsn-delayed.eml"))
        assert end is not None and end.code == 250
        (deferred,) = await e.events(EventKind.DEFERRED)
        assert deferred.recipient == BOB
        assert dict(deferred.attrs)["action"] == "delayed"
        assert dict(deferred.attrs)["source"] == "async"
        assert await e.store.find_suppression(BOB) is None
        assert await e.events(EventKind.SUPPRESSED) == []

    run(tmp_path, body)


def test_other_text_formats_map_too(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        for name, address in (("exim-user-unknown.eml", BOB), ("qmail-three-recipients.eml", CAROL)):
            _, end = await transaction(e.mx, "", [e.verp(address)], sample(name))
            assert end is not None and end.text == "Ok: 1 report(s) recorded", name
        bounced = {ev.recipient: dict(ev.attrs) for ev in await e.events(EventKind.BOUNCED)}
        assert bounced[BOB]["format"] == "dsn" and bounced[BOB]["reason"] == "user_unknown"
        assert bounced[CAROL]["format"] == "qmail"
        hard = await e.store.find_suppression(BOB)
        assert hard is not None and hard.reason is SuppressionReason.HARD_BOUNCE

    run(tmp_path, body)


def test_mixed_transaction_stores_for_the_mailbox_and_records_the_bounce(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        _, end = await transaction(e.mx, "", [e.verp(BOB), ALICE], sample("postfix-user-unknown.eml"))
        assert end is not None and end.code == 250 and "queued as" in end.text
        account = await e.store.get_account(ALICE)
        assert account is not None
        assert len(await e.store.list_messages(account.id, "INBOX")) == 1
        (bounced,) = await e.events(EventKind.BOUNCED)
        assert bounced.recipient == BOB

    run(tmp_path, body)


def test_bounce_for_a_message_gone_from_the_queue_uses_the_report(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        verp = e.verp(BOB)
        assert await e.store.delete_message(e.qid)
        _, end = await transaction(e.mx, "", [verp], sample("postfix-user-unknown.eml"))
        assert end is not None and end.code == 250
        (bounced,) = await e.events(EventKind.BOUNCED)
        attrs = dict(bounced.attrs)
        assert attrs["mapped_by"] == "verp+report"
        assert bounced.queue_id == e.qid and bounced.recipient is not None
        assert bounced.recipient != BOB  # the report's own Final-Recipient stands in
        assert await e.store.find_suppression(bounced.recipient, "a.test") is not None

    run(tmp_path, body)


def test_auto_reply_to_a_verp_address_is_dropped(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        reply = b"From: bob@b.test\r\nSubject: Out of office\r\n\r\nI am away.\r\n"
        _, end = await transaction(e.mx, "bob@b.test", [e.verp(BOB)], reply)
        assert end is not None and (end.code, end.text) == (250, "Ok: nothing to record")
        assert [ev.kind for ev in await e.store.list_events()] == [EventKind.QUEUED] * 2

    run(tmp_path, body)


def test_arf_at_the_fbl_address_maps_by_return_path(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        arf = sample("arf-yahoo-headers-only.eml")
        # The sample names bob@yahoo.example in To; its Return-Path is made our VERP address.
        head, sep, rest = arf.partition(b"Content-Type: text/rfc822-headers")
        assert sep
        nl = b"\r\n" if b"\r\n" in arf else b"\n"
        part_head, blank, headers = rest.partition(nl + nl)
        return_path = b"Return-Path: <" + e.verp(CAROL).encode() + b">" + nl
        arf = head + sep + part_head + blank + return_path + headers
        _, end = await transaction(e.mx, "", ["FBL@a.test"], arf)
        assert end is not None and end.text == "Ok: 1 report(s) recorded"
        (complained,) = await e.events(EventKind.COMPLAINED)
        assert (complained.queue_id, complained.recipient) == (e.qid, CAROL)
        assert dict(complained.attrs)["mapped_by"] == "verp"
        entry = await e.store.find_suppression(CAROL)
        assert entry is not None and entry.reason is SuppressionReason.COMPLAINT

    run(tmp_path, body)


def test_arf_without_verp_maps_by_the_reported_recipient(tmp_path: Path) -> None:
    async def body(e: Env) -> None:
        _, end = await transaction(e.mx, "", ["abuse@a.test"], sample("arf-abuse-original-rcpt-to.eml"))
        assert end is not None and end.code == 250
        (complained,) = await e.events(EventKind.COMPLAINED)
        assert (complained.queue_id, complained.recipient) == (None, "alice@mailbox.example")
        assert dict(complained.attrs)["mapped_by"] == "original-rcpt-to"
        assert await e.store.find_suppression("alice@mailbox.example") is not None

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
