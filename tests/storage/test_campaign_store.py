"""The CampaignStore port on SQLite and PostgreSQL (see conftest.py): campaigns and their lists,
status moves through the state table inside the write, due campaigns, the dispatch lease, send
rows (one per campaign and contact, whoever writes first), accepted queue ids, and the counters
derived from send rows and events."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    Contact,
    ContactInput,
    ImportMode,
)
from mailprime.domain.campaigns import (
    CampaignDraft,
    CampaignStatus,
    IllegalTransition,
    PauseReason,
    SendRecord,
    SendStatus,
)
from mailprime.domain.errors import AlreadyExists, Conflict, DomainError, NotFound
from mailprime.domain.ids import CampaignId, QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient, EventKind
from mailprime.domain.templates import TemplateFields

if TYPE_CHECKING:
    from mailprime.storage.sql import SqlStore
    from tests.storage.conftest import Backend

S = CampaignStatus


async def draft(store: SqlStore, name: str = "april") -> CampaignDraft:
    template = await store.get_template_by_name("t") or await store.create_template(
        TemplateFields("t", "s", "<p>x</p>"))
    lists = [await store.get_list(n) or await store.create_list(n) for n in ("one", "two")]
    return CampaignDraft(name=name, template_id=template.id,
                         list_ids=(lists[1].id, lists[0].id), from_address="news@a.test",
                         from_name="News", rate_per_minute=100, track_clicks=False)


async def _contacts(store: SqlStore, prefix: str, count: int) -> list[Contact]:
    """`count` new contacts {prefix}0@b.test, ..., as the store pages them."""
    await store.upsert_contacts([ContactInput(f"{prefix}{n}@b.test") for n in range(count)],
                                mode=ImportMode.UPSERT, evidence=ConsentEvidence(ConsentSource.CLI))
    return list(await store.contacts_page())


async def test_create_get_list_and_move(backend: Backend) -> None:
    async with backend.open() as store:
        d = await draft(store)
        created = await store.create_campaign(d)
        assert (created.status, created.list_ids, created.rate_per_minute) == (
            S.DRAFT, d.list_ids, 100)  # the lists keep their order
        assert (created.track_opens, created.track_clicks) == (True, False)
        assert await store.get_campaign(created.id) == created
        assert await store.get_campaign_by_name("april") == created
        with pytest.raises(AlreadyExists):
            await store.create_campaign(d)
        other = await store.create_campaign(await draft(store, "may"))
        assert [c.name for c in await store.list_campaigns()] == ["april", "may"]
        at = backend.clock.now() + timedelta(days=1)
        scheduled = await store.set_campaign_status(created.id, S.SCHEDULED, scheduled_at=at)
        assert (scheduled.status, scheduled.scheduled_at) == (S.SCHEDULED, at)
        assert [c.id for c in await store.list_campaigns(status=S.SCHEDULED)] == [created.id]
        assert await store.due_campaigns(backend.clock.now()) == []
        assert [c.id for c in await store.due_campaigns(at)] == [created.id]
        sending = await store.set_campaign_status(created.id, S.SENDING)
        assert sending.started_at == backend.clock.now()
        paused = await store.set_campaign_status(created.id, S.PAUSED,
                                                 reason=PauseReason.COMPLAINTS, detail="0.5 %")
        assert (paused.pause_reason, paused.pause_detail) == (PauseReason.COMPLAINTS, "0.5 %")
        with pytest.raises(IllegalTransition):
            await store.set_campaign_status(created.id, S.SENT)
        unchanged = await store.set_campaign_status(created.id, S.SENDING,
                                                    only_from=frozenset({S.SCHEDULED}))
        assert unchanged.status is S.PAUSED
        with pytest.raises(NotFound):
            await store.set_campaign_status(CampaignId(999_999), S.SENDING)
        await store.set_campaign_status(other.id, S.SENDING)
        assert {c.id for c in await store.due_campaigns(backend.clock.now())} == {other.id}
        assert await store.delete_campaign(other.id) is True
        assert await store.get_campaign(other.id) is None


async def test_lease_send_rows_and_counters(backend: Backend) -> None:
    async with backend.open() as store:
        campaign = await store.create_campaign(await draft(store))
        now = backend.clock.now()
        assert not await store.claim_campaign(campaign.id, "p1", now, now)  # not sending
        await store.set_campaign_status(campaign.id, S.SENDING)
        assert await store.claim_campaign(campaign.id, "p1", now, now + timedelta(seconds=60))
        assert not await store.claim_campaign(campaign.id, "p2", now, now + timedelta(seconds=60))
        assert await store.claim_campaign(campaign.id, "p1", now, now + timedelta(seconds=90))
        late = now + timedelta(seconds=91)
        assert await store.claim_campaign(campaign.id, "p2", late, late)  # p1's ran out
        await store.release_campaign(campaign.id, "p1")  # not p1's any more: no effect
        assert not await store.claim_campaign(campaign.id, "p3", now, now)
        await store.release_campaign(campaign.id, "p2")
        assert await store.claim_campaign(campaign.id, "p3", now, now)

        contacts = await _contacts(store, "c", 4)
        q = [new_queue_id() for _ in contacts]
        rows = [SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, q[n])
                for n, c in enumerate(contacts[:3])]
        rows.append(SendRecord(campaign.id, contacts[3].id, contacts[3].email, SendStatus.SKIPPED,
                               reason="suppressed", detail="suppressed (hard bounce)"))
        first = await store.record_sends(campaign.id, rows)
        assert [(r.status, r.queue_id) for r in first] == [(r.status, r.queue_id) for r in rows]
        # A second writer for the same contacts keeps nothing of its own.
        theirs = [SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, new_queue_id())
                  for c in contacts[:2]]
        assert [r.queue_id for r in await store.record_sends(campaign.id, theirs)] == q[:2]

        # One accept committed (c0), one delivered and gone but its QUEUED event kept (c1).
        for n in (0, 1):
            await store.accept(Acceptance(queue_id=q[n], content=b"Subject: x\r\n\r\nx\r\n",
                                          sender="news@a.test",
                                          remote=(EnvelopeRecipient(contacts[n].email),)))
        assert await store.delete_message(q[1])
        assert await store.accepted_queue_ids([q[0], q[1], q[2], QueueId("nope")]) == {q[0], q[1]}
        pending = await store.pending_sends(campaign.id, limit=2)
        assert [r.contact_id for r in pending] == [contacts[0].id, contacts[1].id]
        assert [r.contact_id for r in await store.pending_sends(
            campaign.id, after=pending[-1].contact_id)] == [contacts[2].id]
        await store.settle_sends(campaign.id, [
            (contacts[0].id, SendStatus.QUEUED, "", ""), (contacts[1].id, SendStatus.QUEUED, "", ""),
            (contacts[2].id, SendStatus.FAILED, "render", "line 3: no 'city'"),
            (contacts[3].id, SendStatus.QUEUED, "", "")],  # not pending: left alone
            cursor=contacts[3].id)
        got = await store.get_campaign(campaign.id)
        assert got is not None and got.cursor == contacts[3].id
        await store.settle_sends(campaign.id, [], cursor=contacts[0].id)  # never backwards
        got = await store.get_campaign(campaign.id)
        assert got is not None and got.cursor == contacts[3].id

        for kind, attrs in ((EventKind.BOUNCED, (("class", "hard"),)),
                            (EventKind.BOUNCED, (("class", "hard"), ("source", "async"))),
                            (EventKind.COMPLAINED, ())):
            await store.append(kind, q[0], contacts[0].email, "x", attrs)
        await store.append(EventKind.BOUNCED, q[1], contacts[1].email, "x", (("class", "soft"),))
        await store.append(EventKind.OPENED, None, contacts[0].email_key, "",
                           (("campaign_id", str(campaign.id)), ("contact_id", "1")))
        await store.append(EventKind.OPENED, None, contacts[1].email_key, "",
                           (("campaign_id", str(campaign.id)), ("machine", "yes")))
        await store.append(EventKind.OPENED, None, "x@y.test", "",
                           (("campaign_id", f"{campaign.id}0"),))  # another campaign
        counters = await store.campaign_counters(campaign.id)
        assert (counters.queued, counters.pending, counters.skipped, counters.failed) == (
            2, 0, 1, 1)
        assert (counters.hard_bounces, counters.complaints) == (1, 1)  # one contact each
        stats = await store.campaign_stats(campaign.id)
        assert stats.skipped_by_reason == {"suppressed": 1}
        assert stats.failed_by_reason == {"render": 1}
        assert (stats.bounced, stats.opened, stats.machine_opens) == (2, 1, 1)
        assert await store.get_send(campaign.id, contacts[2].id) == SendRecord(
            campaign.id, contacts[2].id, contacts[2].email, SendStatus.FAILED, q[2], "render",
            "line 3: no 'city'", backend.clock.now())
        with pytest.raises(IllegalTransition):
            await store.set_campaign_status(campaign.id, S.DRAFT)


async def test_a_cancelled_campaigns_pending_rows_are_settled_once_no_dispatcher_holds_it(
        backend: Backend) -> None:
    """A crash between writing a batch's rows and settling them leaves them pending; a cancelled
    campaign has no next run to reconcile them, so `settle_cancelled` does: accepted -> queued,
    else failed "cancelled" — but not while a live lease names a dispatcher (it settles its own
    batch), and not for a campaign that is not cancelled."""
    async with backend.open() as store:
        campaign = await store.create_campaign(await draft(store))
        await store.set_campaign_status(campaign.id, S.SENDING)
        now = backend.clock.now()
        assert await store.claim_campaign(campaign.id, "p1", now, now + timedelta(seconds=60))
        contacts = await _contacts(store, "c", 3)
        q = [new_queue_id() for _ in contacts]
        await store.record_sends(campaign.id, [
            SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, q[n])
            for n, c in enumerate(contacts)])
        await store.accept(Acceptance(queue_id=q[0], content=b"Subject: x\r\n\r\nx\r\n",
                                      sender="news@a.test",
                                      remote=(EnvelopeRecipient(contacts[0].email),)))
        assert await store.settle_cancelled(campaign.id) == 0  # sending: not cancelled
        assert await store.cancelled_with_pending() == []
        await store.set_campaign_status(campaign.id, S.CANCELLED)
        assert await store.cancelled_with_pending() == [campaign.id]
        assert await store.settle_cancelled(campaign.id) == 0  # p1's lease is live
        backend.clock.advance(61)  # p1 died: its lease ran out
        assert await store.settle_cancelled(campaign.id) == 3
        assert await store.settle_cancelled(campaign.id) == 0  # once
        assert await store.cancelled_with_pending() == []
        sends = {r.contact_id: r for r in await store.list_sends(campaign.id)}
        assert sends[contacts[0].id].status is SendStatus.QUEUED
        for contact in contacts[1:]:
            assert (sends[contact.id].status, sends[contact.id].reason) == (
                SendStatus.FAILED, "cancelled")
        counters = await store.campaign_counters(campaign.id)
        assert (counters.queued, counters.pending, counters.failed) == (1, 0, 2)


async def test_record_sends_returns_the_rows_as_stored(backend: Backend) -> None:
    """What record_sends returns is each contact's row as the table has it, whether it wrote
    every row (nothing is read back then), some of them, or none, and with a contact twice."""
    async with backend.open() as store:
        campaign = await store.create_campaign(await draft(store))
        contacts = await _contacts(store, "r", 6)

        def row(n: int) -> SendRecord:
            c = contacts[n]
            return SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, new_queue_id())

        async def stored(rows: list[SendRecord]) -> list[SendRecord]:
            found = [await store.get_send(campaign.id, r.contact_id) for r in rows]
            assert all(f is not None for f in found)
            return [f for f in found if f is not None]

        fresh = [row(0), SendRecord(campaign.id, contacts[1].id, contacts[1].email,
                                    SendStatus.SKIPPED, reason="x" * 40, detail="why")]
        first = await store.record_sends(campaign.id, fresh)
        assert first == await stored(fresh)  # written whole, truncated, `at` as read back
        assert first[1].reason == "x" * 32 and first[0].at == backend.clock.now()

        mixed = [row(2), row(0), row(3)]  # contact 0 has its row already
        second = await store.record_sends(campaign.id, mixed)
        assert sorted(second, key=lambda r: r.contact_id) == sorted(
            await stored(mixed), key=lambda r: r.contact_id)
        assert {r.queue_id for r in second} == {first[0].queue_id, mixed[0].queue_id,
                                                mixed[2].queue_id}

        twice = [row(4), row(4)]  # the first one wins
        third = await store.record_sends(campaign.id, twice)
        assert [r.queue_id for r in third] == [twice[0].queue_id]
        assert await store.record_sends(campaign.id, []) == []


async def test_queue_sends_writes_rows_messages_and_cursor_all_or_none(backend: Backend) -> None:
    """Dispatch's one-transaction write: the rows (queued with their queue ids, skipped), the
    messages and the cursor together; a contact that has a row already (Conflict) or a taken
    queue id leaves nothing of the call behind."""
    async with backend.open() as store:
        campaign = await store.create_campaign(await draft(store))
        contacts = await _contacts(store, "q", 6)

        def batch(numbers: range) -> tuple[list[SendRecord], list[Acceptance]]:
            rows, acceptances = [], []
            for n in numbers:
                c = contacts[n]
                if n == numbers[-1]:  # the last one of each batch refused by the gate
                    rows.append(SendRecord(campaign.id, c.id, c.email, SendStatus.SKIPPED,
                                           reason="suppressed", detail="hard bounce"))
                    continue
                queue_id = new_queue_id()
                rows.append(SendRecord(campaign.id, c.id, c.email, SendStatus.QUEUED, queue_id))
                acceptances.append(Acceptance(
                    queue_id=queue_id, content=b"Subject: x\r\n\r\nx\r\n",
                    sender="news@a.test", remote=(EnvelopeRecipient(c.email),)))
            return rows, acceptances

        rows, acceptances = batch(range(3))
        await store.queue_sends(campaign.id, rows, acceptances, contacts[2].id)
        ids = [a.queue_id for a in acceptances]
        assert await store.accepted_queue_ids(ids) == set(ids)
        for row in rows:
            assert await store.get_send(campaign.id, row.contact_id) == replace(
                row, at=backend.clock.now())
        got = await store.get_campaign(campaign.id)
        assert got is not None and got.cursor == contacts[2].id
        counters = await store.campaign_counters(campaign.id)
        assert (counters.queued, counters.skipped, counters.pending) == (2, 1, 0)

        # Contact 2 has its row: nothing of this batch is written, the cursor stays.
        rows, acceptances = batch(range(2, 6))
        with pytest.raises(Conflict):
            await store.queue_sends(campaign.id, rows, acceptances, contacts[5].id)
        assert await store.accepted_queue_ids([a.queue_id for a in acceptances]) == set()
        assert [await store.get_send(campaign.id, c.id) for c in contacts[3:]] == [None] * 3
        got = await store.get_campaign(campaign.id)
        assert got is not None and got.cursor == contacts[2].id

        # A queue id the queue holds already: nothing written either.
        rows, acceptances = batch(range(3, 6))
        acceptances[1] = replace(acceptances[1], queue_id=ids[0])
        rows[1] = replace(rows[1], queue_id=ids[0])
        with pytest.raises(DomainError):
            await store.queue_sends(campaign.id, rows, acceptances, contacts[5].id)
        assert await store.accepted_queue_ids([acceptances[0].queue_id]) == set()
        assert [await store.get_send(campaign.id, c.id) for c in contacts[3:]] == [None] * 3
