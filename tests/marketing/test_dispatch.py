"""Campaign dispatch on a real store (marketing.dispatch): who gets mail, what the message
carries (RFC 8058 headers, a DKIM signature dkimpy verifies, tracking links), exactly once across
a run cancelled mid-batch, the rate on an injected clock, the guardrail pause on synthetic
bounce events, skipped rows for contacts refused after their page was read, and test sends.
The first test runs on SQLite and PostgreSQL, the others on SQLite."""

from __future__ import annotations

import asyncio
import email
import email.policy
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mailprime.domain.audience import ConsentEvidence, ConsentSource, MembershipStatus
from mailprime.domain.campaigns import (
    CampaignError,
    CampaignStatus,
    PauseReason,
    SendRecord,
    SendStatus,
)
from mailprime.domain.clock import SystemClock
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import EventKind, Priority
from mailprime.marketing.campaigns import CampaignRunner, resume_campaign, start_campaign
from mailprime.marketing.dispatch import DispatchConfig, Dispatcher, DispatchError
from mailprime.marketing.guardrails import GuardrailPolicy
from mailprime.marketing.rate import TokenBucket
from mailprime.marketing.templates import Recipient
from mailprime.marketing.tokens import LinkToken, TokenSigner, TrackToken, UnsubscribeToken
from mailprime.services.dkim_keys import DkimSigner
from mailprime.storage.sql import SqlStore
from tests.marketing.campaign_fixtures import BASE_URL, Seeded, seed
from tests.storage.conftest import Backend, backend, pg_databases, pg_session_url  # noqa: F401
from tests.support.dkim_verifiers import dkimpy_verify, signatures

SECRET = b"k" * 32


class FakeTime:
    """The injected monotonic clock and sleep: sleeping advances the clock, no real waiting;
    `on_sleep` lets a test act at that moment (between two messages)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.on_sleep: Callable[[int], Awaitable[None]] | None = None

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            await self.on_sleep(len(self.slept))


def dispatcher(store: SqlStore, time: FakeTime | None = None, **config: object) -> Dispatcher:
    time = time or FakeTime()
    cfg = DispatchConfig(base_url=BASE_URL, **config)  # type: ignore[arg-type]
    return Dispatcher(store, DkimSigner(store, SystemClock()), TokenSigner([SECRET]), cfg,
                      clock=SystemClock(), monotonic=time.monotonic, sleep=time.sleep)


def sqlite(tmp_path: Path) -> Backend:
    return Backend("sqlite", f"sqlite:///{tmp_path / 'mail.db'}", tmp_path / "spool",
                   lambda: "")


async def started(store: SqlStore, seeded: Seeded) -> None:
    campaign, problems = await start_campaign(store, seeded.campaign, base_url=BASE_URL,
                                              now=SystemClock().now())
    assert campaign.status is CampaignStatus.SENDING, problems


async def run_until_killed(store: SqlStore, seeded: Seeded, *, at_send: int) -> None:
    """Runs the campaign's dispatcher (batches of 50, rate-limited so that it sleeps between
    sends) and cancels it at its `at_send`-th sleep, as a crash would stop it: with 55, in
    the second batch with accepts of it in flight."""
    time = FakeTime()
    task = asyncio.ensure_future(dispatcher(store, time, batch_size=50).run(seeded.campaign.id))

    async def crash(n: int) -> None:
        if n == at_send:
            task.cancel()
            await asyncio.sleep(0)

    time.on_sleep = crash
    with pytest.raises(asyncio.CancelledError):
        await task


async def queue_by_address(store: SqlStore) -> Counter[str]:
    return Counter(r.address for _m, rcpts in await store.list_queue(limit=100_000)
                   for r in rcpts)


def test_campaign_reaches_each_confirmed_contact_once_signed_and_unsubscribable(
        backend: Backend) -> None:  # noqa: F811
    async def main() -> None:
        async with backend.open() as store:
            seeded = await seed(store, confirmed=40)
            await started(store, seeded)
            d = dispatcher(store, batch_size=15)
            assert await d.run(seeded.campaign.id) is CampaignStatus.SENT
            got = await queue_by_address(store)
            assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}
            counters = await store.campaign_counters(seeded.campaign.id)
            assert (counters.queued, counters.pending, counters.skipped, counters.failed) == (
                40, 0, 0, 0)
            done = await store.get_campaign(seeded.campaign.id)
            assert done is not None and done.finished_at is not None and done.cursor is not None

            signer = TokenSigner([SECRET])
            message, rcpts = (await store.list_queue(limit=1))[0]
            assert message.priority is Priority.BULK and message.sender == "news@a.test"
            content = await store.read_blob(message.blob_id)
            assert [v.result for v in dkimpy_verify(content, seeded.dkim_records)] == [
                "pass", "pass"]  # RSA-2048 and Ed25519
            signed = {h.strip().lower() for s in signatures(content) for h in s[b"h"].split(b":")}
            assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from"} <= signed
            msg = email.message_from_bytes(content, policy=email.policy.default)
            contact = await store.get_contact(rcpts[0].address)
            assert contact is not None
            assert msg["Subject"] == f"News for {contact.name} in {contact.attributes['city']}"
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            https, mailto = (u.strip(" <>") for u in msg["List-Unsubscribe"].split(","))
            assert https.startswith(f"{BASE_URL}/u/") and mailto.startswith(
                "mailto:unsubscribe@a.test?subject=unsubscribe-")
            token = signer.verify(https.rsplit("/", 1)[1], UnsubscribeToken)
            assert token is not None and token.address == contact.email_key
            assert token.list_id == seeded.campaign.list_ids[0]
            html = next(p for p in msg.walk() if p.get_content_type() == "text/html").get_content()
            clicks = [part.split('"', 1)[0].split("/")
                      for part in html.split(f'href="{BASE_URL}/t/c/')[1:]]
            targets = {t.url for c, _ in clicks if (t := signer.verify(c, LinkToken)) is not None}
            assert targets == {"https://www.a.test/news?id=1&x=2", "https://shop.a.test/"}
            assert f'href="{https}"' in html  # the unsubscribe link is not a redirect
            pixel = html.split(f'src="{BASE_URL}/t/o/', 1)[1].split('.gif"', 1)[0]
            assert {r for _, r in clicks} == {pixel}  # one recipient token for all its links
            opened = signer.verify(pixel, TrackToken)
            assert opened is not None and opened.subject.contact_id == contact.id  # type: ignore[union-attr]

    asyncio.run(main())


def test_cancelled_mid_batch_then_resumed_mails_everyone_exactly_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=120, rate=60 * 20)  # 20/s: sleeps between sends
            await started(store, seeded)
            await run_until_killed(store, seeded, at_send=55)
            counters = await store.campaign_counters(seeded.campaign.id)
            assert counters.pending > 0 and counters.queued < 120  # a crash left pending rows
            again = dispatcher(store, FakeTime(), batch_size=50)
            assert await again.run(seeded.campaign.id) is CampaignStatus.SENT
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.gather(*others)  # accepts the cancelled run left in flight
            got = await queue_by_address(store)
            assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}
            counters = await store.campaign_counters(seeded.campaign.id)
            assert (counters.queued, counters.pending) == (120, 0)

    asyncio.run(main())


def test_rate_limit_on_an_injected_clock() -> None:
    async def main() -> None:
        time = FakeTime()
        bucket = TokenBucket(120, monotonic=time.monotonic, sleep=time.sleep)  # 2 a second
        start = time.now
        for _ in range(10):
            await bucket.take()
        assert time.now - start == pytest.approx(4.0)  # 2 at once, then 8 at 0.5 s each
        unlimited = TokenBucket(0, monotonic=time.monotonic, sleep=time.sleep)
        for _ in range(1000):
            await unlimited.take()
        assert time.now - start == pytest.approx(4.0)

    asyncio.run(main())


def test_dispatch_keeps_the_campaign_rate(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=30, rate=60)  # one a second
            await started(store, seeded)
            time = FakeTime()
            start = time.now
            assert await dispatcher(store, time).run(seeded.campaign.id) is CampaignStatus.SENT
            assert time.now - start == pytest.approx(29.0)  # the first at once
            assert sum(time.slept) == pytest.approx(29.0)

    asyncio.run(main())


def test_guardrail_pauses_on_hard_bounces_and_says_why(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            # 50 a second, batches of 100: the first sleep comes in the middle of the first batch
            seeded = await seed(store, confirmed=300, rate=60 * 50)
            await started(store, seeded)
            time = FakeTime()

            async def bounce(n: int) -> None:
                if n == 1:  # of the first batch, 8 bounce hard and 3 soft (not counted)
                    sends = [await store.get_send(seeded.campaign.id, c.id)
                             for c in await store.contacts_page(limit=11)]
                    for k, row in enumerate(sends):
                        assert row is not None and row.queue_id is not None
                        await store.append(EventKind.BOUNCED, row.queue_id, row.email, "550 5.1.1",
                                           (("class", "hard" if k < 8 else "soft"),))

            time.on_sleep = bounce
            d = dispatcher(store, time, batch_size=100, guardrail_interval=0.0,
                           guardrails=GuardrailPolicy(min_sample=100, max_hard_bounce_rate=0.05))
            assert await d.run(seeded.campaign.id) is CampaignStatus.PAUSED
            paused = await store.get_campaign(seeded.campaign.id)
            assert paused is not None and paused.pause_reason is PauseReason.HARD_BOUNCES
            assert "8 of 100 sent" in paused.pause_detail, paused.pause_detail
            counters = await store.campaign_counters(seeded.campaign.id)
            assert (counters.queued, counters.hard_bounces) == (100, 8)
            # The next batch was made meanwhile (the pipeline) but not written: no rows.
            assert (counters.pending, counters.skipped, counters.failed) == (0, 0, 0)
            # Resumed by the operator with a looser policy, it finishes the rest once each.
            await resume_campaign(store, paused)
            d2 = dispatcher(store, FakeTime(), guardrails=GuardrailPolicy(
                min_sample=100, max_hard_bounce_rate=0.5))
            assert await d2.run(seeded.campaign.id) is CampaignStatus.SENT
            got = await queue_by_address(store)
            assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}

    asyncio.run(main())


def test_contacts_refused_after_their_page_was_read_are_skipped_with_the_reason(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=6)
            await started(store, seeded)
            d = dispatcher(store)
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None
            prepared = await d.prepare(campaign)
            page = list(await store.audience(campaign.list_ids, sending_domain="a.test"))
            assert len(page) == 6
            # Between the read and the send: one suppressed, one unsubscribed.
            await store.suppress(Suppression(page[0].email_key, "a.test",
                                             SuppressionReason.COMPLAINT, SystemClock().now()))
            await store.set_membership(page[1].id, campaign.list_ids[0],
                                       status=MembershipStatus.UNSUBSCRIBED,
                                       evidence=ConsentEvidence(ConsentSource.ONE_CLICK))
            await d.send_batch(prepared, page)
            rows = [await store.get_send(campaign.id, c.id) for c in page]
            assert [(r.status, r.reason) for r in rows if r is not None][:3] == [
                (SendStatus.SKIPPED, "suppressed"), (SendStatus.SKIPPED, "unsubscribed"),
                (SendStatus.QUEUED, "")]
            assert rows[0] is not None and "complaint" in rows[0].detail
            got = await queue_by_address(store)
            assert set(got) == {c.email for c in page[2:]}
            stats = await store.campaign_stats(campaign.id)
            assert stats.skipped_by_reason == {"suppressed": 1, "unsubscribed": 1}
            # The same page again (a restart before the cursor moved) sends nobody twice.
            await d.send_batch(prepared, page)
            assert await queue_by_address(store) == got

    asyncio.run(main())


def test_a_chunk_with_a_taken_queue_id_queues_the_others_once(tmp_path: Path) -> None:
    """Step 2's fallback: the chunk's one transaction fails on the taken id, its messages are
    accepted one by one; the taken one was accepted already, so every row becomes queued and
    the queue holds one message per contact."""
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=6, track=False)
            await started(store, seeded)
            d = dispatcher(store)
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None
            p = await d.prepare(campaign)
            page = list(await store.audience(campaign.list_ids, sending_domain="a.test"))
            rows = await store.record_sends(campaign.id, [
                SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, new_queue_id())
                for c in page])
            made = {c.id: await d._message(p, Recipient(c.email, c.name, c.attributes, c.id))
                    for c in page}
            taken = rows[2]
            assert taken.queue_id is not None
            await store.accept(d._acceptance(p, taken.queue_id, taken.email,
                                             *made[taken.contact_id]))
            updates = await d._accept_all(p, [(r, *made[r.contact_id]) for r in rows])
            assert sorted(u[0] for u in updates) == sorted(c.id for c in page)
            assert {u[1] for u in updates} == {SendStatus.QUEUED}
            got = await queue_by_address(store)
            assert set(got) == {c.email for c in page} and set(got.values()) == {1}
            assert store.stats.batch_failures + store.stats.failed >= 1  # the chunk did fail

    asyncio.run(main())


def test_test_send_and_refusals(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=2, track=False)
            d = dispatcher(store)
            ids = await d.test_send(seeded.campaign, [seeded.confirmed[0], "boss@c.test"])
            assert len(ids) == 2
            counters = await store.campaign_counters(seeded.campaign.id)
            assert counters.queued == 0  # not the campaign's sends
            blob = (await store.get_message(QueueId(ids[1])))
            assert blob is not None
            content = await store.read_blob(blob.blob_id)
            msg = email.message_from_bytes(content, policy=email.policy.default)
            assert msg["Subject"].startswith("[Test] News for")
            assert b"/t/c/" not in content and b"/t/o/" not in content  # tracking off
            suppressed = seeded.excluded[3]  # seed(): unconfirmed, suppressed, unsubscribed
            queued_before = len(await store.list_queue(1000))
            with pytest.raises(CampaignError, match=f"{suppressed}: suppressed"):
                await d.test_send(seeded.campaign, ["boss@c.test", suppressed])
            assert len(await store.list_queue(1000)) == queued_before  # nothing, not even boss
            insecure = Dispatcher(store, DkimSigner(store, SystemClock()), TokenSigner([SECRET]),
                                  DispatchConfig(base_url="http://mail.a.test"),
                                  clock=SystemClock())
            with pytest.raises(DispatchError, match="must be https"):
                await insecure.test_send(seeded.campaign, ["x@c.test"])

    asyncio.run(main())


def test_runner_starts_due_campaigns_and_pauses_one_it_cannot_send(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            due = await seed(store, confirmed=3)
            broken = await seed(store, confirmed=2, name="broken", template_name="doomed")
            clock = SystemClock()
            now = clock.now()
            await start_campaign(store, due.campaign, base_url=BASE_URL, now=now,
                                 at=now + timedelta(seconds=30))
            await start_campaign(store, broken.campaign, base_url=BASE_URL, now=now)
            runner = CampaignRunner(store, lambda: dispatcher(store), clock=clock)
            # The store refuses to delete a template a campaign under way uses; one gone all
            # the same (removed by hand, or by a version before that rule) pauses the campaign.
            with sqlite3.connect(tmp_path / "mail.db") as db:
                db.execute("DELETE FROM templates WHERE id = ?", (broken.campaign.template_id,))
            later = await seed(store, confirmed=1, name="later")  # a draft: never dispatched
            await runner.tick()  # the scheduled one is not due yet
            await runner.wait_idle()
            waiting = await store.get_campaign(due.campaign.id)
            assert waiting is not None and waiting.status is CampaignStatus.SCHEDULED
            paused = await store.get_campaign(broken.campaign.id)
            assert paused is not None and paused.status is CampaignStatus.PAUSED
            assert paused.pause_reason is PauseReason.ERROR
            assert "template" in paused.pause_detail and "no longer exists" in paused.pause_detail
            runner.clock = FixedNow(now + timedelta(seconds=31))
            await runner.tick()
            await runner.wait_idle()
            sent = await store.get_campaign(due.campaign.id)
            assert sent is not None and sent.status is CampaignStatus.SENT
            assert (await store.campaign_counters(due.campaign.id)).queued == 3
            untouched = await store.get_campaign(later.campaign.id)
            assert untouched is not None and untouched.status is CampaignStatus.DRAFT

    asyncio.run(main())


class FixedNow:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def test_rows_left_pending_ask_the_gate_again_when_reconciled(tmp_path: Path) -> None:
    """A crash after step 1 leaves pending rows; a complaint lands before the campaign resumes:
    the resumed run skips that contact with the gate's reason and mails the others once. (Its
    walk then meets those contacts again: the one-transaction write refuses the batch, whose
    rows exist, and the three steps find them settled.)"""
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=3, track=False)
            await started(store, seeded)
            campaign = await store.get_campaign(seeded.campaign.id)
            assert campaign is not None
            page = list(await store.audience(campaign.list_ids, sending_domain="a.test"))
            await store.record_sends(campaign.id, [
                SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, new_queue_id())
                for c in page])  # step 1 done, then the process died
            victim = page[0].email
            await store.suppress(Suppression(victim, "", SuppressionReason.COMPLAINT,
                                             SystemClock().now()))
            assert await dispatcher(store).run(campaign.id) is CampaignStatus.SENT
            got = await queue_by_address(store)
            assert victim not in got
            assert sorted(got) == sorted(c.email for c in page[1:])
            assert all(n == 1 for n in got.values())
            counters = await store.campaign_counters(campaign.id)
            assert counters.queued == len(page) - 1 and counters.skipped == 1

    asyncio.run(main())
