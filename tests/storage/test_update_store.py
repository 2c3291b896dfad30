"""The update methods on SQLite and PostgreSQL (see conftest.py): lists (rename, description,
the opt-in rule: never looser while someone has not confirmed), segments (rename, new
expression, refused while a campaign under way uses it), campaign settings (only while
editable, checked in the write), conditional campaign deletion, campaign keyset pages and the
send log pages."""

from __future__ import annotations

from dataclasses import replace
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
from mailprime.domain.campaigns import (
    CampaignDraft,
    CampaignStatus,
    IllegalTransition,
    SendRecord,
    SendStatus,
)
from mailprime.domain.errors import AlreadyExists, Conflict, NotFound
from mailprime.domain.ids import CampaignId, ListId, SegmentId, new_queue_id
from mailprime.domain.templates import TemplateFields

if TYPE_CHECKING:
    from mailprime.storage.sql import SqlStore
    from tests.storage.conftest import Backend

S = CampaignStatus
IMPORT = ConsentEvidence(ConsentSource.IMPORT, "v1")


async def draft(store: SqlStore, name: str = "april") -> CampaignDraft:
    template = await store.get_template_by_name("t") or await store.create_template(
        TemplateFields("t", "s", "<p>x</p>"))
    lists = [await store.get_list(n) or await store.create_list(n) for n in ("one", "two")]
    return CampaignDraft(name=name, template_id=template.id, list_ids=(lists[0].id,),
                         from_address="news@a.test", rate_per_minute=10)


async def test_update_list_name_description_and_opt_in_rule(backend: Backend) -> None:
    async with backend.open() as store:
        news = await store.create_list("news", description="old", opt_in=OptIn.DOUBLE)
        await store.create_list("taken")
        renamed = await store.update_list(news.id, name="letters", description="new")
        assert (renamed.id, renamed.name, renamed.description, renamed.opt_in) == (
            news.id, "letters", "new", OptIn.DOUBLE)
        assert await store.get_list("news") is None
        assert await store.update_list(news.id) == renamed  # nothing given: nothing changes
        assert await store.update_list(news.id, name="letters") == renamed  # its own name
        with pytest.raises(AlreadyExists):
            await store.update_list(news.id, name="taken")
        with pytest.raises(NotFound):
            await store.update_list(ListId(999_999), description="x")
        # An unconfirmed member keeps a double opt-in list from becoming single.
        await store.upsert_contacts([ContactInput("a@b.test"), ContactInput("c@b.test")],
                                    mode=ImportMode.UPSERT, list_id=news.id,
                                    status=MembershipStatus.UNCONFIRMED, evidence=IMPORT)
        with pytest.raises(Conflict, match="2 unconfirmed member"):
            await store.update_list(news.id, opt_in=OptIn.SINGLE)
        assert (await store.get_list("letters")).opt_in is OptIn.DOUBLE  # type: ignore[union-attr]
        for email in ("a@b.test", "c@b.test"):
            contact = await store.get_contact(email)
            assert contact is not None
            status = (MembershipStatus.CONFIRMED if email == "a@b.test"
                      else MembershipStatus.UNSUBSCRIBED)
            await store.set_membership(contact.id, news.id, status=status, evidence=IMPORT)
        single = await store.update_list(news.id, opt_in=OptIn.SINGLE)
        assert single.opt_in is OptIn.SINGLE
        # Stricter is always allowed, unconfirmed members or not; memberships are not touched.
        await store.upsert_contacts([ContactInput("d@b.test")], mode=ImportMode.UPSERT,
                                    list_id=news.id, status=MembershipStatus.UNCONFIRMED,
                                    evidence=IMPORT)
        double = await store.update_list(news.id, opt_in=OptIn.DOUBLE)
        assert double.opt_in is OptIn.DOUBLE
        counts = dict(next(c for lst, c in await store.list_lists() if lst.id == news.id))
        assert counts == {MembershipStatus.CONFIRMED: 1, MembershipStatus.UNSUBSCRIBED: 1,
                          MembershipStatus.UNCONFIRMED: 1}


async def test_update_segment_and_its_campaign_rule(backend: Backend) -> None:
    async with backend.open() as store:
        pros = await store.create_segment("pros", 'attributes.plan = "pro"')
        await store.create_segment("other", "email exists")
        renamed = await store.update_segment(pros.id, name="professionals")
        assert (renamed.id, renamed.name, renamed.expression) == (
            pros.id, "professionals", 'attributes.plan = "pro"')
        changed = await store.update_segment(pros.id, expression="email exists")
        assert changed.expression == "email exists" and changed.created_at == pros.created_at
        with pytest.raises(AlreadyExists):
            await store.update_segment(pros.id, name="other")
        with pytest.raises(NotFound):
            await store.update_segment(SegmentId(999_999), name="x")
        d = replace(await draft(store), segment_id=pros.id)
        campaign = await store.create_campaign(d)
        # A draft may still change its mind: the segment may change under it.
        assert (await store.update_segment(pros.id, expression='name = "x"')).expression \
            == 'name = "x"'
        await store.set_campaign_status(campaign.id, S.SENDING)
        with pytest.raises(Conflict, match="'april'"):
            await store.update_segment(pros.id, expression="email exists")
        assert (await store.update_segment(pros.id, name="renamed")).name == "renamed"
        same = await store.update_segment(pros.id, expression='name = "x"')  # unchanged: fine
        assert same.expression == 'name = "x"'
        await store.set_campaign_status(campaign.id, S.CANCELLED)
        assert (await store.update_segment(pros.id, expression="email exists")).expression \
            == "email exists"


async def test_update_campaign_only_while_editable(backend: Backend) -> None:
    async with backend.open() as store:
        d = await draft(store)
        campaign = await store.create_campaign(d)
        await store.create_campaign(await draft(store, "taken"))
        two = await store.get_list("two")
        assert two is not None
        new = replace(d, name="april 2", list_ids=(two.id, d.list_ids[0]), from_name="News",
                      subject="Hi {{ name }}", rate_per_minute=0, track_opens=False,
                      reply_to="help@a.test", postal_address="1 Main St")
        backend.clock.advance(5)
        updated = await store.update_campaign(campaign.id, new)
        assert (updated.name, updated.list_ids, updated.from_name, updated.subject,
                updated.rate_per_minute, updated.track_opens, updated.reply_to,
                updated.postal_address, updated.status) == (
            "april 2", (two.id, d.list_ids[0]), "News", "Hi {{ name }}", 0, False,
            "help@a.test", "1 Main St", S.DRAFT)
        assert updated.updated_at == backend.clock.now() and updated.created_at \
            == campaign.created_at
        assert await store.get_campaign(campaign.id) == updated
        with pytest.raises(AlreadyExists):
            await store.update_campaign(campaign.id, replace(new, name="taken"))
        with pytest.raises(NotFound):
            await store.update_campaign(CampaignId(999_999), new)
        at = backend.clock.now() + timedelta(days=1)
        await store.set_campaign_status(campaign.id, S.SCHEDULED, scheduled_at=at)
        still = await store.update_campaign(campaign.id, replace(new, from_name="Other"))
        assert (still.status, still.scheduled_at, still.from_name) == (S.SCHEDULED, at, "Other")
        await store.set_campaign_status(campaign.id, S.SENDING)
        with pytest.raises(IllegalTransition, match="is sending: only a draft or a scheduled"):
            await store.update_campaign(campaign.id, replace(new, from_name="Late"))
        assert (await store.get_campaign(campaign.id)).from_name == "Other"  # type: ignore[union-attr]


async def test_delete_only_from_and_keyset_pages(backend: Backend) -> None:
    async with backend.open() as store:
        made = [await store.create_campaign(await draft(store, f"c{n}")) for n in range(5)]
        await store.set_campaign_status(made[1].id, S.SENDING)
        await store.set_campaign_status(made[3].id, S.SENDING)
        seen: list[CampaignId] = []
        after = None
        for _ in range(10):
            page = await store.list_campaigns(limit=2, after=after)
            seen += [c.id for c in page]
            if len(page) < 2:
                break
            after = page[-1].id
        assert seen == [c.id for c in made]
        sending = await store.list_campaigns(status=S.SENDING, after=made[1].id)
        assert [c.id for c in sending] == [made[3].id]
        drafts_only = frozenset({S.DRAFT})
        with pytest.raises(IllegalTransition, match="is sending: only a draft campaign can be "
                                                    "deleted"):
            await store.delete_campaign(made[1].id, only_from=drafts_only)
        assert await store.get_campaign(made[1].id) is not None
        assert await store.delete_campaign(made[0].id, only_from=drafts_only) is True
        assert await store.delete_campaign(made[0].id, only_from=drafts_only) is False
        assert await store.get_campaign(made[0].id) is None


async def test_list_sends_pages_and_filters(backend: Backend) -> None:
    async with backend.open() as store:
        campaign = await store.create_campaign(await draft(store))
        await store.upsert_contacts([ContactInput(f"u{n}@b.test") for n in range(5)],
                                    mode=ImportMode.UPSERT, evidence=IMPORT)
        contacts = list(await store.contacts_page(limit=10))
        rows = [SendRecord(campaign.id, c.id, c.email, SendStatus.PENDING, new_queue_id())
                for c in contacts]
        await store.record_sends(campaign.id, rows)
        await store.settle_sends(campaign.id, [
            (contacts[1].id, SendStatus.SKIPPED, "suppressed", "on the list"),
            (contacts[3].id, SendStatus.QUEUED, "", "")])
        pages: list[list[str]] = []
        after = None
        for _ in range(10):
            page = await store.list_sends(campaign.id, after=after, limit=2)
            pages.append([r.email for r in page])
            if len(page) < 2:
                break
            after = page[-1].contact_id
        assert pages == [["u0@b.test", "u1@b.test"], ["u2@b.test", "u3@b.test"], ["u4@b.test"]]
        skipped = await store.list_sends(campaign.id, status=SendStatus.SKIPPED)
        assert [(r.email, r.reason, r.detail) for r in skipped] == [
            ("u1@b.test", "suppressed", "on the list")]
        assert [r.email for r in await store.list_sends(
            campaign.id, status=SendStatus.PENDING, after=contacts[0].id)] == [
            "u2@b.test", "u4@b.test"]
        assert await store.list_sends(CampaignId(999_999)) == []
