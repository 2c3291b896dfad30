"""The store methods campaign dispatch batches with, on SQLite and PostgreSQL (see conftest.py):
`accept_many` (a batch of acceptances in one transaction, all or none) and `send_gate_facts`
(the send gate's reads for a batch of addresses: suppressions as find_suppression finds them,
invalid addresses, contacts and their memberships, the lists that exist)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.errors import AlreadyExists
from mailprime.domain.ids import ListId, QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient, EventKind, Priority
from mailprime.storage.sql.recipients import GATE_CHUNK

if TYPE_CHECKING:
    from mailprime.storage.sql import SqlStore
    from tests.storage.conftest import Backend

IMPORT = ConsentEvidence(ConsentSource.IMPORT, "v1")


def acceptance(queue_id: QueueId, n: int, size: int = 2000) -> Acceptance:
    content = (f"From: news@a.test\r\nTo: r{n}@b.test\r\nSubject: {n}\r\n\r\n".encode()
               + b"x" * size + b"\r\n")
    return Acceptance(queue_id=queue_id, content=content, sender="news@a.test",
                      remote=(EnvelopeRecipient(f"r{n}@b.test"),), priority=Priority.BULK,
                      source="campaign", client="campaign 1")


async def queued_events(store: SqlStore) -> Counter[str]:
    return Counter(e.queue_id or "" for e in await store.list_events(limit=10_000)
                   if e.kind is EventKind.QUEUED)


async def test_accept_many_queues_all_in_one_go_or_none(backend: Backend) -> None:
    async with backend.open(inline_max=4096) as store:
        ids = [new_queue_id() for _ in range(5)]
        # One content over inline_max: spooled to a file, as `accept` does it.
        batch = [acceptance(q, n, size=9000 if n == 2 else 2000) for n, q in enumerate(ids)]
        await store.accept_many(batch)
        for n, queue_id in enumerate(ids):
            message = await store.get_message(queue_id)
            assert message is not None and message.sender == "news@a.test"
            assert await store.read_blob(message.blob_id) == batch[n].content
            rcpts = await store.get_recipients(queue_id)
            assert [r.address for r in rcpts] == [f"r{n}@b.test"]
        assert await queued_events(store) == Counter(ids)
        assert store.stats.commits >= 1

        # A queue id already taken fails the whole call: none of the others is queued.
        fresh = [new_queue_id() for _ in range(3)]
        with pytest.raises(AlreadyExists):
            await store.accept_many([acceptance(fresh[0], 10, size=9000), acceptance(ids[1], 11),
                                     acceptance(fresh[1], 12)])
        for queue_id in fresh:
            assert await store.get_message(queue_id) is None
        assert await store.accepted_queue_ids([*fresh, ids[1]]) == {ids[1]}
        assert len(await store.list_queue(limit=100)) == 5
        # The spooled content of the failed batch was removed with it: nothing left to sweep.
        assert await store.sweep_spool(older_than=timedelta(0)) == 0

        await store.accept_many([])  # nothing to do
        await store.accept_many([acceptance(q, 20 + n) for n, q in enumerate(fresh)])
        assert len(await store.list_queue(limit=100)) == 8


async def members(store: SqlStore, emails: list[str], list_id: ListId,
                  status: MembershipStatus) -> None:
    await store.upsert_contacts([ContactInput(e) for e in emails], mode=ImportMode.UPSERT,
                                list_id=list_id, status=status, evidence=IMPORT)


async def test_send_gate_facts_for_a_batch(backend: Backend) -> None:
    async with backend.open() as store:
        double = await store.create_list("double", opt_in=OptIn.DOUBLE)
        single = await store.create_list("single", opt_in=OptIn.SINGLE)
        await members(store, ["ok@x.test", "both@x.test"], double.id, MembershipStatus.CONFIRMED)
        await members(store, ["new@x.test"], double.id, MembershipStatus.UNCONFIRMED)
        await members(store, ["both@x.test"], single.id, MembershipStatus.UNSUBSCRIBED)
        await store.add_contact(ContactInput("loner@x.test"))
        now = backend.clock.now()
        await store.suppress(Suppression("sup@x.test", "a.test", SuppressionReason.COMPLAINT, now))
        await store.suppress(Suppression("sup@x.test", "", SuppressionReason.HARD_BOUNCE, now))
        await store.suppress(Suppression("other@x.test", "c.test", SuppressionReason.MANUAL, now))
        await members(store, ["erased@x.test"], double.id, MembershipStatus.CONFIRMED)
        await store.erase_contact("erased@x.test")  # leaves a hashed global entry only
        missing = ListId(9999)
        asked = ["OK@x.test", "both@x.test", "new@x.test", "loner@x.test", "stranger@x.test",
                 "sup@x.test", "other@x.test", "erased@x.test", "not an address", "ok@x.test"]
        facts = await store.send_gate_facts(asked, sending_domain="A.test",
                                            list_ids=[double.id, single.id, missing])
        assert set(facts.lists) == {double.id, single.id}
        assert facts.lists[double.id].opt_in is OptIn.DOUBLE
        by = dict(zip(asked[:-1], facts.addresses, strict=False))
        assert len(facts.addresses) == len(asked)
        ok = await store.get_contact("ok@x.test")
        assert ok is not None
        assert by["OK@x.test"].contact_id == ok.id == facts.addresses[-1].contact_id
        assert by["OK@x.test"].memberships == {double.id: MembershipStatus.CONFIRMED}
        assert by["both@x.test"].memberships == {double.id: MembershipStatus.CONFIRMED,
                                                 single.id: MembershipStatus.UNSUBSCRIBED}
        assert by["new@x.test"].memberships == {double.id: MembershipStatus.UNCONFIRMED}
        assert by["loner@x.test"].contact_id is not None and not by["loner@x.test"].memberships
        assert by["stranger@x.test"].contact_id is None
        entry = by["sup@x.test"].suppression  # the global entry before the domain's
        assert entry is not None and (entry.scope, entry.reason) == (
            "", SuppressionReason.HARD_BOUNCE)
        assert by["other@x.test"].suppression is None  # another domain's entry
        erased = by["erased@x.test"].suppression
        assert erased is not None and erased.address.startswith("sha256:")
        assert by["not an address"].invalid and by["not an address"].contact_id is None
        assert all(not f.invalid for f in facts.addresses if f is not by["not an address"])
        # The same entries as the one-address read finds.
        for address, found in zip(asked, facts.addresses, strict=True):
            one = await store.find_suppression(address, "A.test")
            got = found.suppression
            assert (one and (one.address, one.scope)) == (got and (got.address, got.scope))

        none = await store.send_gate_facts([], sending_domain="a.test", list_ids=[double.id])
        assert (dict(none.lists), list(none.addresses)) == ({double.id: facts.lists[double.id]},
                                                            [])


async def test_send_gate_facts_past_one_chunk(backend: Backend) -> None:
    async with backend.open() as store:
        news = await store.create_list("news", opt_in=OptIn.SINGLE)
        count = GATE_CHUNK * 2 + 7
        emails = [f"u{n:04d}@x.test" for n in range(count)]
        await members(store, emails[::2], news.id, MembershipStatus.UNCONFIRMED)
        for e in emails[5::50]:
            await store.suppress(Suppression(e, "", SuppressionReason.HARD_BOUNCE,
                                             backend.clock.now()))
        facts = await store.send_gate_facts(emails, sending_domain="a.test", list_ids=[news.id])
        assert len(facts.addresses) == count
        for n, f in enumerate(facts.addresses):
            assert (f.contact_id is not None) == (n % 2 == 0), n
            assert f.memberships == ({news.id: MembershipStatus.UNCONFIRMED} if n % 2 == 0
                                     else {}), n
            assert (f.suppression is not None) == (n % 50 == 5), n
