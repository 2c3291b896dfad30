"""Contract tests of the AudienceStore port (contacts, lists, memberships, consent ledger, the
campaign audience, segments, GDPR export and erasure, retention) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailprime.domain.audience import (
    Addressee,
    ConsentAction,
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MembershipStatus,
    OptIn,
    email_hash,
)
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.errors import AlreadyExists, InvalidAddress, NotFound
from mailprime.domain.ids import ContactId, QueueId, new_queue_id
from mailprime.domain.mail import EventKind, RecipientOutcome, RecipientStatus
from mailprime.marketing.segments import parse_segment
from mailprime.storage.sql import SqlStore
from tests.storage.conftest import Backend
from tests.storage.test_contract import remote

FORM = ConsentEvidence(ConsentSource.FORM, wording_version="v3", ip="192.0.2.7")
IMPORT = ConsentEvidence(ConsentSource.IMPORT)


async def test_contacts_are_keyed_by_the_folded_address(backend: Backend) -> None:
    async with backend.open() as store:
        bob = await store.add_contact(ContactInput("Bob@Example.COM", "Bob", {"plan": "pro"}))
        assert (bob.email, bob.email_key, bob.name) == ("Bob@example.com", "bob@example.com", "Bob")
        assert bob.attributes == {"plan": "pro"}
        assert await store.get_contact("BOB@example.com") == bob
        assert await store.get_contact_by_id(bob.id) == bob
        with pytest.raises(AlreadyExists):
            await store.add_contact(ContactInput("bob@EXAMPLE.com"))
        with pytest.raises(InvalidAddress):
            await store.get_contact("not an address")
        nested = {"a": {"b": [1, 2.5, None, True, "x"]}}
        again = await store.update_contact(bob.id, attributes=nested)
        assert again.attributes == nested and again.name == "Bob"
        with pytest.raises(NotFound):
            await store.update_contact(ContactId(9999), name="x")


async def test_bulk_upsert_modes_and_list_status(backend: Backend) -> None:
    async with backend.open() as store:
        news = await store.create_list("news", opt_in=OptIn.DOUBLE)
        await store.add_contact(ContactInput("old@example.com", "Old", {"a": 1, "b": 2}))
        rows = [ContactInput(f"u{i}@example.com", f"U{i}") for i in range(5)]
        rows.append(ContactInput("OLD@example.com", "New name", {"b": 3, "c": 4}))
        result = await store.upsert_contacts(rows, mode=ImportMode.UPSERT, list_id=news.id,
                                             evidence=IMPORT)
        assert (result.created, result.updated, result.skipped, result.subscribed) == (5, 1, 0, 6)
        old = await store.get_contact("old@example.com")
        assert old is not None and old.name == "New name"
        assert old.attributes == {"a": 1, "b": 3, "c": 4}  # merged, the new value winning
        # skip-existing: existing contacts untouched, and not added to the list either.
        other = await store.create_list("other", opt_in=OptIn.SINGLE)
        result = await store.upsert_contacts([ContactInput("old@example.com", "Ignored"),
                                              ContactInput("fresh@example.com")],
                                             mode=ImportMode.SKIP_EXISTING, list_id=other.id,
                                             evidence=IMPORT)
        assert (result.created, result.updated, result.skipped, result.subscribed) == (1, 0, 1, 1)
        old = await store.get_contact("old@example.com")
        assert old is not None and old.name == "New name"
        assert await store.get_membership(old.id, other.id) is None
        # A confirmed import confirms unconfirmed members, never renews an unsubscribed one.
        u0 = await store.get_contact("u0@example.com")
        assert u0 is not None
        await store.set_membership(u0.id, news.id, status=MembershipStatus.UNSUBSCRIBED,
                                   evidence=FORM)
        result = await store.upsert_contacts(rows, mode=ImportMode.UPSERT, list_id=news.id,
                                             status=MembershipStatus.CONFIRMED, evidence=IMPORT)
        assert result.subscribed == 5  # u1..u4 and old confirmed; u0 left unsubscribed
        member = await store.get_membership(u0.id, news.id)
        assert member is not None and member.status is MembershipStatus.UNSUBSCRIBED
        counts = dict(await store.list_lists())
        assert [lst.name for lst in counts] == ["news", "other"]
        assert counts[news] == {MembershipStatus.CONFIRMED: 5, MembershipStatus.UNSUBSCRIBED: 1}


async def test_membership_changes_write_the_ledger(backend: Backend) -> None:
    async with backend.open() as store:
        news = await store.create_list("news", description="Weekly", opt_in=OptIn.DOUBLE)
        with pytest.raises(AlreadyExists):
            await store.create_list("news")
        bob = await store.add_contact(ContactInput("bob@example.com"))
        m = await store.set_membership(bob.id, news.id, status=MembershipStatus.UNCONFIRMED,
                                       evidence=FORM)
        assert m.status is MembershipStatus.UNCONFIRMED
        backend.clock.advance(60)
        await store.set_membership(bob.id, news.id, status=MembershipStatus.CONFIRMED,
                                   evidence=ConsentEvidence(ConsentSource.FORM, ip="192.0.2.8"))
        await store.set_membership(bob.id, news.id, status=MembershipStatus.CONFIRMED,
                                   evidence=FORM)  # no change: no line
        backend.clock.advance(60)
        await store.set_membership(bob.id, news.id, status=MembershipStatus.UNSUBSCRIBED,
                                   evidence=ConsentEvidence(ConsentSource.ONE_CLICK))
        await store.record_consent("bob@example.com", purpose="transactional",
                                   action=ConsentAction.GIVEN, evidence=FORM)
        entries = await store.consent_entries("BOB@example.com")
        assert [(e.action, e.source, e.purpose, e.list_id) for e in entries] == [
            (ConsentAction.GIVEN, ConsentSource.FORM, "news", news.id),
            (ConsentAction.CONFIRMED, ConsentSource.FORM, "news", news.id),
            (ConsentAction.WITHDRAWN, ConsentSource.ONE_CLICK, "news", news.id),
            (ConsentAction.GIVEN, ConsentSource.FORM, "transactional", None)]
        assert (entries[0].wording_version, entries[0].ip) == ("v3", "192.0.2.7")
        assert entries[1].at - entries[0].at == timedelta(seconds=60)
        assert [lst.name for lst, _ in await store.contact_memberships(bob.id)] == ["news"]
        assert await store.delete_list("news") == 1
        assert await store.get_membership(bob.id, news.id) is None
        assert len(await store.consent_entries("bob@example.com")) == 4  # the ledger outlives it
        with pytest.raises(NotFound):
            await store.delete_list("news")


async def _seed_audience(store: SqlStore) -> dict[str, ContactId]:
    double = await store.create_list("double", opt_in=OptIn.DOUBLE)
    single = await store.create_list("single", opt_in=OptIn.SINGLE)
    ids: dict[str, ContactId] = {}
    plan = [("confirmed", double, MembershipStatus.CONFIRMED),
            ("unconfirmed", double, MembershipStatus.UNCONFIRMED),
            ("unsubscribed", double, MembershipStatus.UNSUBSCRIBED),
            ("single", single, MembershipStatus.UNCONFIRMED),
            ("singleout", single, MembershipStatus.UNSUBSCRIBED),
            ("both", double, MembershipStatus.CONFIRMED),
            ("both", single, MembershipStatus.CONFIRMED),
            ("suppressed", single, MembershipStatus.CONFIRMED),
            ("scoped", single, MembershipStatus.CONFIRMED)]
    for name, lst, status in plan:
        if name not in ids:
            ids[name] = (await store.add_contact(ContactInput(f"{name}@example.com"))).id
        await store.set_membership(ids[name], lst.id, status=status, evidence=IMPORT)
    await store.add_contact(ContactInput("nolist@example.com"))
    now = store._clock.now()
    await store.suppress(Suppression("suppressed@example.com", "", SuppressionReason.COMPLAINT, now))
    await store.suppress(Suppression("scoped@example.com", "a.test", SuppressionReason.MANUAL, now))
    return ids


async def test_audience_rules_dedup_suppression_and_keyset_pages(backend: Backend) -> None:
    async with backend.open() as store:
        await _seed_audience(store)
        lists = [(await store.get_list(n)) for n in ("double", "single")]
        list_ids = [lst.id for lst in lists if lst is not None]

        async def names(sending_domain: str = "", **kw: object) -> list[str]:
            found = await store.audience(list_ids, sending_domain=sending_domain, **kw)  # type: ignore[arg-type]
            return [c.email.split("@")[0] for c in found]

        assert await names() == ["confirmed", "single", "both", "scoped"]
        assert await names("a.test") == ["confirmed", "single", "both"]
        assert await store.count_audience(list_ids) == 4
        # Keyset pages of 1: the same contacts, once each.
        seen, after = [], None
        for _ in range(10):
            page = await store.audience(list_ids, after=after, limit=1)
            if not page:
                break
            seen.append(page[0].email.split("@")[0])
            after = page[0].id
        assert seen == ["confirmed", "single", "both", "scoped"]
        # A segment narrows it; an empty list of lists is nobody.
        assert await names(segment=parse_segment("in_list('single')")) == ["single", "both",
                                                                            "scoped"]
        assert await store.audience([]) == []


async def test_an_audience_page_is_the_audience_as_addressees(backend: Backend) -> None:
    """audience_page (what dispatch reads) finds what audience finds, page for page."""
    async with backend.open() as store:
        ids = await _seed_audience(store)
        await store.update_contact(ids["both"], name="Bo Th",
                                   attributes={"plan": "pro", "n": [1, 2]})
        lists = [(await store.get_list(n)) for n in ("double", "single")]
        list_ids = [lst.id for lst in lists if lst is not None]
        for kw in ({}, {"sending_domain": "a.test"}, {"limit": 2},
                   {"after": ids["single"]}, {"segment": parse_segment("in_list('single')")}):
            full = await store.audience(list_ids, **kw)  # type: ignore[arg-type]
            lean = await store.audience_page(list_ids, **kw)  # type: ignore[arg-type]
            assert [Addressee(c.id, c.email, c.name, c.attributes) for c in full] == list(lean)
        [both] = [a for a in await store.audience_page(list_ids) if a.id == ids["both"]]
        assert (both.name, both.attributes) == ("Bo Th", {"plan": "pro", "n": [1, 2]})
        assert await store.audience_page([]) == []


SEGMENT_CASES = [
    ('attributes.plan = "pro"', ["a"]),
    ('attributes.plan != "pro"', ["b", "c", "d"]),
    ("attributes.age >= 30", ["a", "c"]),
    ("attributes.age < 30", ["b"]),  # d's "40" is a string: no number comparison
    ('attributes.age = "40"', ["d"]),
    ("attributes.age in (25, 41)", ["b"]),
    ("attributes.vip = true", ["a"]),
    ("attributes.vip = false", ["b"]),
    ("attributes.vip exists", ["a", "b"]),
    ("not attributes.vip exists", ["c", "d"]),
    ('attributes.tags contains "beta"', ["a", "c"]),
    ('attributes.address.city = "Oslo"', ["b"]),
    ('attributes.address.city contains "sl"', ["b"]),
    ('domain = "example.org"', ["c", "d"]),
    ('email contains "A@"', ["a"]),
    ('email in ("b@example.com", "D@EXAMPLE.ORG")', ["b", "d"]),
    ('name = "Ann"', ["a"]),
    ("opened within 90 days", ["a"]),
    ("clicked within 30 days", ["b"]),
    ('(attributes.plan = "pro" or domain = "example.org") and not attributes.age > 35',
     ["a", "d"]),
    ("in_list('news')", ["c"]),
    ('attributes.name = "x\\"; DROP TABLE contacts; --"', []),
]


@pytest.mark.parametrize(("expression", "expected"), SEGMENT_CASES)
async def test_segments_compile_alike_on_both_backends(backend: Backend, expression: str,
                                                       expected: list[str]) -> None:
    async with backend.open() as store:
        a = await store.add_contact(ContactInput("a@example.com", "Ann", {
            "plan": "pro", "age": 31, "vip": True, "tags": ["beta", "x"]}))
        b = await store.add_contact(ContactInput("b@example.com", "Ben", {
            "plan": "free", "age": 25, "vip": False, "address": {"city": "Oslo"}}))
        c = await store.add_contact(ContactInput("c@example.org", "", {
            "age": 40.5, "tags": "beta tester"}))
        await store.add_contact(ContactInput("d@example.org", "", {"age": "40"}))
        now = backend.clock.now()
        await store.record_engagement(a.id, opened_at=now - timedelta(days=89))
        await store.record_engagement(b.id, opened_at=now - timedelta(days=91),
                                      clicked_at=now - timedelta(days=1))
        news = await store.create_list("news", opt_in=OptIn.SINGLE)
        await store.set_membership(c.id, news.id, status=MembershipStatus.CONFIRMED,
                                   evidence=IMPORT)
        segment = parse_segment(expression)
        found = await store.contacts_page(segment=segment)
        assert [x.email[0] for x in found] == expected
        assert await store.count_contacts(segment) == len(expected)
        assert len(await store.contacts_page()) == 4


async def test_segments_are_stored_by_name(backend: Backend) -> None:
    async with backend.open() as store:
        seg = await store.create_segment("pros", 'attributes.plan = "pro"')
        assert await store.get_segment("pros") == seg
        with pytest.raises(AlreadyExists):
            await store.create_segment("pros", "email exists")
        assert [s.name for s in await store.list_segments()] == ["pros"]
        assert await store.delete_segment("pros")
        assert not await store.delete_segment("pros")


async def test_export_and_erasure(backend: Backend) -> None:
    async with backend.open() as store:
        news = await store.create_list("news", opt_in=OptIn.SINGLE)
        bob = await store.add_contact(ContactInput("Bob@example.com", "Bob", {"city": "Oslo"}))
        await store.set_membership(bob.id, news.id, status=MembershipStatus.CONFIRMED,
                                   evidence=FORM)
        await store.append(EventKind.BOUNCED, QueueId("Q1"), "Bob@example.com",
                           "550 5.1.1 <bob@example.com>: unknown")
        await store.append(EventKind.DELIVERED, QueueId("Q2"), "carol@example.com")
        await store.suppress(Suppression("bob@example.com", "a.test", SuppressionReason.HARD_BOUNCE,
                                         backend.clock.now()))
        data = await store.contact_data("BOB@example.com")
        assert data.contact == bob and [lst.name for lst, _ in data.memberships] == ["news"]
        assert len(data.consent) == 2 and len(data.events) == 1 and len(data.suppressions) == 1

        hashed = email_hash("bob@example.com")
        result = await store.erase_contact("bob@EXAMPLE.com")
        assert (result.contact, result.memberships, result.events, result.suppressions) == (
            True, 1, 1, 1)
        assert result.consent_entries == 3  # given, confirmed, and the erasure's withdrawal
        assert await store.get_contact("bob@example.com") is None
        ledger = await store.consent_entries("bob@example.com")  # found by the hash
        assert {e.email for e in ledger} == {hashed} and {e.ip for e in ledger} == {""}
        assert ledger[-1].action is ConsentAction.WITHDRAWN
        assert ledger[-1].source is ConsentSource.ERASURE
        events = await store.list_events()
        bounced = next(e for e in events if e.kind is EventKind.BOUNCED)
        assert bounced.recipient == hashed and "bob@" not in bounced.detail.lower()
        assert any(e.recipient == "carol@example.com" for e in events)
        # Never mailed again: the hashed global entry matches the clear address anywhere.
        found = await store.find_suppression("BOB@example.com", "b.test")
        assert found is not None and found.address == hashed
        assert await store.find_suppression("carol@example.com") is None
        # Re-imported after erasure: a contact again, but never in a campaign audience.
        await store.upsert_contacts([ContactInput("bob@example.com")], mode=ImportMode.UPSERT,
                                    list_id=news.id, status=MembershipStatus.CONFIRMED,
                                    evidence=IMPORT)
        assert await store.audience([news.id]) == []
        # Erasing an address we never held still leaves the hashed suppression.
        result = await store.erase_contact("nobody@example.com")
        assert not result.contact
        assert await store.find_suppression("nobody@example.com") is not None


async def test_retention_deletes_old_events_and_finished_messages(backend: Backend) -> None:
    async with backend.open() as store:
        old_done, old_pending = new_queue_id(), new_queue_id()
        await store.accept(remote(old_done, "x@example.net"))
        await store.accept(remote(old_pending, "y@example.net"))
        jobs = await store.claim_due(backend.clock.now() + timedelta(seconds=1), 10, "w", 60)
        for job in jobs:
            if job.message.id == old_done:
                await store.record_outcomes(job, [RecipientOutcome(
                    job.recipients[0].id, RecipientStatus.DELIVERED, "250 ok")],
                    backend.clock.now())
        backend.clock.advance(86400 * 10)
        recent = new_queue_id()
        await store.accept(remote(recent, "z@example.net"))
        cutoff = backend.clock.now() - timedelta(days=5)
        assert await store.delete_finished_messages_before(cutoff) == 1
        assert await store.get_message(old_done) is None
        assert await store.get_message(old_pending) is not None  # still pending: kept
        assert await store.get_message(recent) is not None
        before = len(await store.list_events())
        assert await store.delete_events_before(cutoff, limit=1) == 1
        deleted = await store.delete_events_before(cutoff)
        assert len(await store.list_events()) == before - 1 - deleted
        assert all(e.at >= cutoff for e in await store.list_events())
