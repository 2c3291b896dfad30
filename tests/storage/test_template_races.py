"""A template replace against a campaign start committed by another process between the
replace's read of the campaigns using the template and its write (tests/storage/interleave.py),
on SQLite and PostgreSQL. What must hold: a campaign under way never has its template's content
changed under it; either the replace sees the start and refuses (Conflict naming the
campaign), or the start waits for the replace and starts with (and is pre-flighted on) the new
content. On PostgreSQL that takes the FOR SHARE read of the campaigns (storage.sql.under_way):
a plain read would see a start in flight as the draft it was and not wait for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.campaigns import CampaignDraft, CampaignStatus
from mailprime.domain.errors import Conflict
from mailprime.domain.templates import TemplateFields
from mailprime.storage.sql import campaigns, templates
from tests.storage.interleave import interleave

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from mailprime.domain.campaigns import Campaign
    from mailprime.domain.templates import Template
    from mailprime.storage.sql import SqlStore
    from tests.storage.conftest import Backend

S = CampaignStatus
OLD, NEW = "<p>pre-flighted</p>", "<p>never checked</p>"


async def _draft(store: SqlStore) -> Campaign:
    template = await store.create_template(TemplateFields("t", "s", OLD))
    news = await store.create_list("news")
    return await store.create_campaign(CampaignDraft(
        name="april", template_id=template.id, list_ids=(news.id,), from_address="news@a.test",
        from_name="News"))


def _start(campaign: Campaign, backend: Backend) -> Callable[[Connection], Campaign]:
    def start(conn: Connection) -> Campaign:
        return campaigns.set_status(conn, campaign.id, S.SENDING, backend.clock.now(),
                                    reason=None, detail="", scheduled_at=None, only_from=None)
    return start


def _replace(campaign: Campaign, backend: Backend) -> Callable[[Connection], Template]:
    def replace(conn: Connection) -> Template:
        return templates.replace(conn, campaign.template_id, TemplateFields("t", "s", NEW),
                                 backend.clock.now())
    return replace


async def _html(store: SqlStore, campaign: Campaign) -> str:
    template = await store.get_template(campaign.template_id)
    assert template is not None
    return template.html


async def test_a_template_replace_racing_a_start(backend: Backend) -> None:
    async with backend.open() as store:
        draft = await _draft(store)
        outcome = interleave(backend.url, _replace(draft, backend),
                             _start(draft, backend),
                             at="UPDATE templates")
        assert outcome.fired
        if outcome.other_committed:  # started first: its content stays what was checked
            assert isinstance(outcome.result, Conflict), outcome.result
            assert "'april'" in outcome.result.message
            assert await _html(store, draft) == OLD
        else:  # the start waited for the replace: it starts with the new content
            assert await _html(store, draft) == NEW


async def test_a_template_replace_while_a_start_is_in_flight(backend: Backend) -> None:
    # The start has written `sending`, not committed: a plain read sees the draft it was and
    # does not wait; the replace must wait for the start and then refuse.
    async with backend.open() as store:
        draft = await _draft(store)
        outcome = interleave(backend.url, _start(draft, backend),
                             _replace(draft, backend),
                             at="UPDATE campaigns", after=True)
        assert outcome.fired
        started = await store.get_campaign(draft.id)
        assert started is not None and started.status is S.SENDING
        assert not outcome.other_committed
        assert await _html(store, draft) == OLD  # what it started with
        with pytest.raises(Conflict, match="'april'"):  # and refused now it is seen
            await store.update_template(draft.template_id, TemplateFields("t", "s", NEW))
