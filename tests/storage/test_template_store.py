"""The TemplateStore port on SQLite and PostgreSQL (see conftest.py): create, get (by id and
name), list by name, update (renaming included), delete; names unique."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mailprime.domain.campaigns import CampaignDraft, CampaignStatus, PauseReason
from mailprime.domain.errors import AlreadyExists, Conflict, NotFound
from mailprime.domain.ids import TemplateId
from mailprime.domain.templates import TemplateFields

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

S = CampaignStatus
HTML = '<p>Hello {{ name }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a> «ü»'


async def test_create_get_and_list(backend: Backend) -> None:
    async with backend.open() as store:
        assert list(await store.list_templates()) == []
        created = await store.create_template(TemplateFields("welcome", "Hi {{ name }}", HTML))
        assert (created.name, created.subject, created.html, created.text) == (
            "welcome", "Hi {{ name }}", HTML, None)
        assert created.created_at == created.updated_at == backend.clock.now()
        other = await store.create_template(TemplateFields("april", "News", "<p>x</p>", "x\n"))
        assert other.text == "x\n" and other.id != created.id
        assert await store.get_template(created.id) == created
        assert await store.get_template_by_name("april") == other
        assert await store.get_template_by_name("Welcome") is None  # names are exact
        assert await store.get_template(TemplateId(999_999)) is None
        assert [t.name for t in await store.list_templates()] == ["april", "welcome"]
        assert [t.name for t in await store.list_templates(limit=1)] == ["april"]
        with pytest.raises(AlreadyExists):
            await store.create_template(TemplateFields("welcome", "s", "<p>h</p>"))


async def test_update_and_delete(backend: Backend) -> None:
    async with backend.open() as store:
        first = await store.create_template(TemplateFields("a", "s", "<p>a</p>", "a"))
        second = await store.create_template(TemplateFields("b", "s", "<p>b</p>"))
        backend.clock.advance(60)
        updated = await store.update_template(first.id, TemplateFields("a2", "new", "<p>n</p>"))
        assert (updated.id, updated.name, updated.subject, updated.html, updated.text) == (
            first.id, "a2", "new", "<p>n</p>", None)
        assert updated.created_at == first.created_at
        assert updated.updated_at == backend.clock.now() != first.updated_at
        with pytest.raises(AlreadyExists):
            await store.update_template(first.id, TemplateFields("b", "s", "<p>x</p>"))
        same_name = await store.update_template(second.id, TemplateFields("b", "s2", "<p>b</p>"))
        assert same_name.subject == "s2"
        with pytest.raises(NotFound):
            await store.update_template(TemplateId(999_999), TemplateFields("z", "s", "<p>z</p>"))
        assert await store.delete_template(first.id) is True
        assert await store.delete_template(first.id) is False
        assert [t.name for t in await store.list_templates()] == ["b"]
        # a deleted template's id is never handed to a new one (campaigns keep ids)
        third = await store.create_template(TemplateFields("c", "s", "<p>c</p>"))
        assert third.id > second.id


async def test_templates_survive_reopen(backend: Backend) -> None:
    async with backend.open() as store:
        created = await store.create_template(TemplateFields("kept", "Grüße", HTML, "t"))
    async with backend.open() as store:
        assert await store.get_template(created.id) == created


async def test_a_template_used_by_a_campaign_under_way_keeps_its_content(
        backend: Backend) -> None:
    """Scheduled, sending or paused: the rest of the audience gets what was pre-flighted and what
    the first part got. Renaming stays allowed; a draft's or a finished campaign's template is
    free to change or go."""
    async with backend.open() as store:
        template = await store.create_template(TemplateFields("t", "s", "<p>one</p>"))
        spare = await store.create_template(TemplateFields("spare", "s", "<p>x</p>"))
        mailing_list = await store.create_list("news")
        campaign = await store.create_campaign(CampaignDraft(
            name="april", template_id=template.id, list_ids=(mailing_list.id,),
            from_address="news@a.test", from_name="News"))
        changed = TemplateFields("t", "s", "<p>two</p>")
        assert (await store.update_template(template.id, changed)).html == "<p>two</p>"  # draft
        for status in (S.SENDING, S.PAUSED):
            await store.set_campaign_status(campaign.id, status, reason=PauseReason.OPERATOR
                                            if status is S.PAUSED else None)
            with pytest.raises(Conflict, match="'april'"):
                await store.update_template(template.id, TemplateFields("t", "s", "<p>3</p>"))
            with pytest.raises(Conflict, match="cannot be deleted"):
                await store.delete_template(template.id)
            kept = await store.get_template(template.id)
            assert kept is not None and kept.html == "<p>two</p>"
        renamed = await store.update_template(template.id, TemplateFields("t2", "s", "<p>two</p>"))
        assert renamed.name == "t2"
        await store.set_campaign_status(campaign.id, S.CANCELLED)
        assert (await store.update_template(template.id, TemplateFields("t2", "s", "<p>4</p>"))
                ).html == "<p>4</p>"
        assert await store.delete_template(template.id) is True
        assert await store.delete_template(spare.id) is True
