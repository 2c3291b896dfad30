"""Read-then-write storage functions against another process's commit between their read and
their write (tests/storage/interleave.py), on SQLite and PostgreSQL (see conftest.py).

On PostgreSQL (READ COMMITTED) a plain read lets the other commit land in between: a sending
campaign's From and lists rewritten, a sending campaign deleted with its send log, a
cancelled campaign started, a segment's expression changed under a scheduled campaign, a
list made single opt-in while someone waits to confirm. What must hold instead: either the
other process waits (a lock taken by the read) and our write is applied before its change,
or its change is seen and our write refused. On SQLite the writer's BEGIN IMMEDIATE makes
the other process wait; the same assertions hold there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    Contact,
    ContactInput,
    ImportMode,
    MailingList,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.campaigns import CampaignDraft, CampaignStatus, IllegalTransition
from mailprime.domain.errors import Conflict
from mailprime.domain.ids import ListId
from mailprime.domain.templates import TemplateFields
from mailprime.storage.sql import audience, campaigns
from tests.storage.interleave import interleave

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from mailprime.domain.campaigns import Campaign
    from mailprime.storage.sql import SqlStore
    from tests.storage.conftest import Backend

S = CampaignStatus
IMPORT = ConsentEvidence(ConsentSource.IMPORT, "v1")


async def _campaign(store: SqlStore, backend: Backend, status: CampaignStatus, *,
                    segment: bool = False) -> Campaign:
    template = await store.create_template(TemplateFields("t", "s", "<p>x</p>"))
    news = await store.create_list("news")
    pros = await store.create_segment("pros", 'attributes.plan = "pro"') if segment else None
    made = await store.create_campaign(CampaignDraft(
        name="april", template_id=template.id, list_ids=(news.id,), from_address="news@a.test",
        from_name="News", segment_id=pros.id if pros else None))
    if status is S.SCHEDULED:
        at = backend.clock.now() + timedelta(days=1)
        return await store.set_campaign_status(made.id, S.SCHEDULED, scheduled_at=at)
    return made


def _move(campaign: Campaign, to: CampaignStatus, backend: Backend, *,
          only_from: frozenset[CampaignStatus] | None = None) -> Callable[[Connection], Campaign]:
    """A status change (what the runner or another process commits), through the storage
    function they use."""
    return lambda conn: campaigns.set_status(conn, campaign.id, to, backend.clock.now(),
                                             reason=None, detail="", scheduled_at=None,
                                             only_from=only_from)


async def test_a_settings_change_racing_the_runners_start(backend: Backend) -> None:
    async with backend.open() as store:
        scheduled = await _campaign(store, backend, S.SCHEDULED)
        new_list = await store.create_list("other")
        change = CampaignDraft(name="april", template_id=scheduled.template_id,
                               list_ids=(new_list.id,), from_address="ceo@a.test",
                               from_name="Changed")
        outcome = interleave(
            backend.url,
            lambda conn: campaigns.update_settings(conn, scheduled.id, change,
                                                   backend.clock.now(), frozenset({S.SCHEDULED})),
            _move(scheduled, S.SENDING, backend, only_from=frozenset({S.SCHEDULED})),
            at="UPDATE campaigns")
        assert outcome.fired
        now = await store.get_campaign(scheduled.id)
        assert now is not None
        if outcome.other_committed:  # the runner's start landed first: the change is refused
            assert isinstance(outcome.result, IllegalTransition), outcome.result
            assert (now.status, now.from_address, now.from_name, now.list_ids) == (
                S.SENDING, "news@a.test", "News", scheduled.list_ids)
        else:  # the runner had to wait for the change
            assert (now.status, now.from_address, now.list_ids) == (
                S.SCHEDULED, "ceo@a.test", (new_list.id,))


async def test_a_change_checked_for_a_draft_is_not_written_to_a_scheduled_campaign(
        backend: Backend) -> None:
    async with backend.open() as store:
        scheduled = await _campaign(store, backend, S.SCHEDULED)
        draft = CampaignDraft(name="april", template_id=scheduled.template_id,
                              list_ids=scheduled.list_ids, from_address="x@a.test")
        with pytest.raises(IllegalTransition, match="became scheduled while the change"):
            await store.update_campaign(scheduled.id, draft, only_from=frozenset({S.DRAFT}))
        assert (await store.update_campaign(scheduled.id, draft, only_from=frozenset(
            {S.SCHEDULED}))).from_address == "x@a.test"


async def test_a_draft_deletion_racing_a_start(backend: Backend) -> None:
    async with backend.open() as store:
        draft = await _campaign(store, backend, S.DRAFT)
        outcome = interleave(
            backend.url, lambda conn: campaigns.remove(conn, draft.id, frozenset({S.DRAFT})),
            _move(draft, S.SENDING, backend), at="DELETE FROM campaigns")
        assert outcome.fired
        now = await store.get_campaign(draft.id)
        if outcome.other_committed:  # started first: it keeps its campaign (and send log)
            assert isinstance(outcome.result, IllegalTransition), outcome.result
            assert now is not None and now.status is S.SENDING
        else:
            assert outcome.result is True and now is None


async def test_the_runners_start_racing_a_cancel(backend: Backend) -> None:
    async with backend.open() as store:
        scheduled = await _campaign(store, backend, S.SCHEDULED)
        outcome = interleave(
            backend.url,
            _move(scheduled, S.SENDING, backend, only_from=frozenset({S.SCHEDULED})),
            _move(scheduled, S.CANCELLED, backend), at="UPDATE campaigns")
        assert outcome.fired
        now = await store.get_campaign(scheduled.id)
        assert now is not None
        if outcome.other_committed:  # cancelled first: the runner finds nothing to start
            assert now.status is S.CANCELLED and now.started_at is None
        else:
            assert now.status is S.SENDING


async def test_a_segment_change_racing_a_start(backend: Backend) -> None:
    async with backend.open() as store:
        draft = await _campaign(store, backend, S.DRAFT, segment=True)
        assert draft.segment_id is not None
        segment_id = draft.segment_id
        outcome = interleave(
            backend.url,
            lambda conn: audience.update_segment(conn, segment_id, None, "email exists"),
            _move(draft, S.SENDING, backend), at="UPDATE segments")
        assert outcome.fired
        expression = next(s.expression for s in await store.list_segments()
                          if s.id == segment_id)
        if outcome.other_committed:  # started first: its audience stays what it started with
            assert isinstance(outcome.result, Conflict), outcome.result
            assert "'april'" in outcome.result.message
            assert expression == 'attributes.plan = "pro"'
        else:
            assert expression == "email exists"


async def _double_list_and_late_contact(store: SqlStore) -> tuple[MailingList, Contact]:
    news = await store.create_list("news", opt_in=OptIn.DOUBLE)
    await store.upsert_contacts([ContactInput("late@b.test")], mode=ImportMode.UPSERT,
                                evidence=IMPORT)
    late = await store.get_contact("late@b.test")
    assert late is not None
    return news, late


async def _list_state(store: SqlStore, list_id: ListId
                      ) -> tuple[MailingList, dict[MembershipStatus, int]]:
    """The list as it is now and its member counts by status."""
    now = await store.get_list("news")
    assert now is not None and now.id == list_id
    return now, dict(next(c for lst, c in await store.list_lists() if lst.id == list_id))


async def test_single_opt_in_racing_a_sign_up(backend: Backend) -> None:
    async with backend.open() as store:
        news, late = await _double_list_and_late_contact(store)
        outcome = interleave(
            backend.url, lambda conn: audience.update_list(conn, news.id, None, None, OptIn.SINGLE),
            lambda conn: audience.set_membership(conn, late.id, news.id,
                                                 status=MembershipStatus.UNCONFIRMED,
                                                 evidence=IMPORT, now=backend.clock.now()),
            at="UPDATE mailing_lists")
        assert outcome.fired
        now, counts = await _list_state(store, news.id)
        if outcome.other_committed:  # signed up first: still waiting to confirm, so refused
            assert isinstance(outcome.result, Conflict), outcome.result
            assert "1 unconfirmed member" in outcome.result.message
            assert (now.opt_in, counts) == (OptIn.DOUBLE, {MembershipStatus.UNCONFIRMED: 1})
        else:
            assert (now.opt_in, counts) == (OptIn.SINGLE, {})
        # Never a single opt-in list with someone who has not confirmed.
        assert not (now.opt_in is OptIn.SINGLE and counts.get(MembershipStatus.UNCONFIRMED))



# ---- the other way round: `first` is in flight (written, not committed) when `other` acts ----

def _no_unconfirmed_on_single(opt_in: OptIn, counts: dict[MembershipStatus, int]) -> None:
    assert not (opt_in is OptIn.SINGLE and counts.get(MembershipStatus.UNCONFIRMED)), (
        "a single opt-in list with a member who never confirmed")


async def test_single_opt_in_while_a_sign_up_is_in_flight(backend: Backend) -> None:
    # The sign-up has inserted its unconfirmed membership, not committed: on PostgreSQL the
    # rule change's NOT EXISTS does not see it, so it must wait for it (the list row lock).
    async with backend.open() as store:
        news, late = await _double_list_and_late_contact(store)
        outcome = interleave(
            backend.url,
            lambda conn: audience.set_membership(conn, late.id, news.id,
                                                 status=MembershipStatus.UNCONFIRMED,
                                                 evidence=IMPORT, now=backend.clock.now()),
            lambda conn: audience.update_list(conn, news.id, None, None, OptIn.SINGLE),
            at="INSERT INTO memberships", after=True)
        assert outcome.fired
        now, counts = await _list_state(store, news.id)
        assert not outcome.other_committed  # it waited for the sign-up
        assert (now.opt_in, counts) == (OptIn.DOUBLE, {MembershipStatus.UNCONFIRMED: 1})
        _no_unconfirmed_on_single(now.opt_in, counts)


async def test_single_opt_in_while_an_import_to_the_list_is_in_flight(backend: Backend) -> None:
    async with backend.open() as store:
        news = await store.create_list("news", opt_in=OptIn.DOUBLE)
        outcome = interleave(
            backend.url,
            lambda conn: audience.upsert_contacts(
                conn, [ContactInput("a@b.test"), ContactInput("b@b.test")],
                mode=ImportMode.UPSERT, list_id=news.id, status=MembershipStatus.UNCONFIRMED,
                evidence=IMPORT, now=backend.clock.now()),
            lambda conn: audience.update_list(conn, news.id, None, None, OptIn.SINGLE),
            at="INSERT INTO memberships", after=True)
        assert outcome.fired
        now, counts = await _list_state(store, news.id)
        assert not outcome.other_committed
        assert (now.opt_in, counts) == (OptIn.DOUBLE, {MembershipStatus.UNCONFIRMED: 2})
        _no_unconfirmed_on_single(now.opt_in, counts)


async def test_a_segment_change_while_a_start_is_in_flight(backend: Backend) -> None:
    # The start has written `sending`, not committed: a filter on the status reads the draft
    # it was and does not wait; the segment change must wait for the start and then refuse.
    async with backend.open() as store:
        draft = await _campaign(store, backend, S.DRAFT, segment=True)
        assert draft.segment_id is not None
        segment_id = draft.segment_id
        outcome = interleave(
            backend.url, _move(draft, S.SENDING, backend),
            lambda conn: audience.update_segment(conn, segment_id, None, "email exists"),
            at="UPDATE campaigns", after=True)
        assert outcome.fired
        started = await store.get_campaign(draft.id)
        assert started is not None and started.status is S.SENDING
        expression = next(s.expression for s in await store.list_segments()
                          if s.id == segment_id)
        assert not outcome.other_committed
        assert expression == 'attributes.plan = "pro"'  # what it started with
        with pytest.raises(Conflict, match="'april'"):  # and refused now it is seen
            await store.update_segment(segment_id, expression="email exists")


async def test_a_start_is_refused_if_the_campaign_changed_since_it_was_checked(
        backend: Backend) -> None:
    async with backend.open() as store:
        draft = await _campaign(store, backend, S.DRAFT)
        backend.clock.advance(1)
        changed = await store.update_campaign(draft.id, CampaignDraft(
            name="april", template_id=draft.template_id, list_ids=draft.list_ids,
            from_address="other@a.test"))
        with pytest.raises(IllegalTransition, match="changed during the pre-flight"):
            await store.set_campaign_status(draft.id, S.SENDING,
                                            unchanged_since=draft.updated_at)
        still = await store.get_campaign(draft.id)
        assert still is not None and still.status is S.DRAFT
        moved = await store.set_campaign_status(draft.id, S.SENDING,
                                                unchanged_since=changed.updated_at)
        assert moved.status is S.SENDING
