"""Campaign use cases (create, start, pause, resume, cancel) and the server's campaign runner.

Theory of operation
-------------------
The CLI and the API change a campaign only through these functions, and these only through the
store's `set_campaign_status`, which applies domain.campaigns.transition inside the write: the
state table is the one authority, and a refused move comes back as IllegalTransition (409).
Settings change (`update_campaign`) and a campaign is deleted (`delete_campaign`) only in the
states that allow it (domain.campaigns.EDITABLE, draft): the store checks them inside its write,
the one place that sees the status as it is. A change is checked (pre-flighted when the campaign
is scheduled) for the status the caller read, and the write is conditional on that status, so
a draft scheduled meanwhile is not changed without the pre-flight it now needs.

Starting runs the pre-flight (marketing.preflight) and refuses with every error it found; a
start time in the future makes the campaign scheduled, anything else sending. Nothing here
sends: a server process does, in `CampaignRunner`.

`CampaignRunner` is the server's task. Every `poll_seconds` it asks the store for due campaigns:
a scheduled one whose time has come becomes sending (only from scheduled, so an operator's
cancel in between wins), and every sending campaign without a dispatcher in this process gets
one, as a task. Several processes (workers, nodes) poll alike; the dispatcher's lease on the
campaign lets one of them send it (the others' `LeaseLost` ends their attempt quietly), and a
dead process's lease runs out so another resumes its campaign. A dispatcher that fails in a way
retrying cannot mend (DispatchError: the template was deleted, the links are not https) pauses
its campaign with reason `error` and the message, instead of failing again at every poll; a
storage failure is logged and retried at the next poll. `stop` cancels the dispatchers: what a
cancelled batch leaves pending is reconciled by the next run (marketing.dispatch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from mailprime.domain.campaigns import (
    EDITABLE,
    Campaign,
    CampaignDraft,
    CampaignError,
    CampaignStatus,
    IllegalTransition,
    PauseReason,
)
from mailprime.domain.clock import Clock
from mailprime.domain.errors import DomainError, NotFound
from mailprime.domain.ids import CampaignId
from mailprime.logline import emit
from mailprime.marketing.dispatch import Dispatcher, DispatchError, LeaseLost
from mailprime.marketing.preflight import Problem, SpamScorer, errors, preflight
from mailprime.marketing.rate import Sleep
from mailprime.storage.ports import Store

log = logging.getLogger("mailprime.campaigns")
S = CampaignStatus


async def create_campaign(store: Store, draft: CampaignDraft) -> Campaign:
    """Checks what the draft names exists, then stores it as a draft."""
    await _check_draft(store, draft)
    return await store.create_campaign(draft)


async def _check_draft(store: Store, draft: CampaignDraft) -> None:
    draft.check()
    if await store.get_template(draft.template_id) is None:
        raise NotFound(f"no template #{draft.template_id}")
    for list_id in draft.list_ids:
        if await store.get_list_by_id(list_id) is None:
            raise NotFound(f"no list #{list_id}")
    if draft.segment_id is not None and not any(
            s.id == draft.segment_id for s in await store.list_segments()):
        raise NotFound(f"no segment #{draft.segment_id}")


def draft_of(campaign: Campaign) -> CampaignDraft:
    """The campaign's settings as a draft: what an update starts from and changes."""
    return CampaignDraft(
        name=campaign.name, template_id=campaign.template_id, list_ids=campaign.list_ids,
        from_address=campaign.from_address, from_name=campaign.from_name,
        reply_to=campaign.reply_to, subject=campaign.subject, segment_id=campaign.segment_id,
        rate_per_minute=campaign.rate_per_minute, track_opens=campaign.track_opens,
        track_clicks=campaign.track_clicks, postal_address=campaign.postal_address)


async def update_campaign(store: Store, campaign: Campaign, draft: CampaignDraft, *,
                          base_url: str, spam: SpamScorer | None = None) -> Campaign:
    """Replaces the settings of a draft or a scheduled campaign (IllegalTransition from the
    store otherwise: what has started keeps the settings it started with). A scheduled
    campaign passed the pre-flight (with a spam score when `spam` is given, as a start) when
    it was scheduled and must still pass it with the new settings (PreflightFailed), or the
    runner would start at its time a campaign that would have been refused; it stays
    scheduled for the same time. The store writes only if the campaign is still in the
    status `campaign` has, the one the checks were made for (IllegalTransition otherwise)."""
    await _check_draft(store, draft)
    if campaign.status is S.SCHEDULED:
        changed = replace(campaign, name=draft.name, template_id=draft.template_id,
                          list_ids=draft.list_ids, segment_id=draft.segment_id,
                          from_address=draft.from_address, from_name=draft.from_name,
                          reply_to=draft.reply_to, subject=draft.subject,
                          rate_per_minute=draft.rate_per_minute, track_opens=draft.track_opens,
                          track_clicks=draft.track_clicks, postal_address=draft.postal_address)
        problems = await preflight(store, changed, base_url=base_url, spam=spam)
        if errors(problems):
            raise PreflightFailed(problems)
    return await store.update_campaign(campaign.id, draft,
                                       only_from=frozenset({campaign.status}))


async def delete_campaign(store: Store, campaign: Campaign) -> bool:
    """Deletes a draft (nothing was ever sent for it); IllegalTransition for any other state:
    a campaign that was scheduled or sent is cancelled instead, so its record stays."""
    return await store.delete_campaign(campaign.id, only_from=frozenset({S.DRAFT}))


class PreflightFailed(CampaignError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("the campaign cannot start: "
                         + "; ".join(p.message for p in errors(list(problems))))
        self.problems = tuple(problems)


async def start_campaign(store: Store, campaign: Campaign, *, base_url: str, now: datetime,
                         at: datetime | None = None, spam: SpamScorer | None = None
                         ) -> tuple[Campaign, list[Problem]]:
    """Pre-flight (with a spam score when `spam` is given), then sending (or scheduled for
    `at`). PreflightFailed lists the errors. The move is made only if the campaign is still
    the one the pre-flight checked (its `updated_at`, compared under the store's row lock):
    a change landing while the pre-flight ran (a spam scorer can take seconds) is refused
    with IllegalTransition, not started unchecked."""
    # The template as it was before the pre-flight read it: changed since, the start is refused
    # (a replace that lands first would otherwise start content nobody checked).
    template = await store.get_template(campaign.template_id)
    template_seen = template.updated_at if template is not None else None
    problems = await preflight(store, campaign, base_url=base_url, spam=spam)
    if errors(problems):
        raise PreflightFailed(problems)
    seen = campaign.updated_at
    if at is not None and at > now:
        if campaign.status is S.SCHEDULED:  # re-scheduling: back to draft, then forward
            campaign = await store.set_campaign_status(campaign.id, S.DRAFT,
                                                       unchanged_since=seen)
            seen = campaign.updated_at  # our own write
        moved = await store.set_campaign_status(campaign.id, S.SCHEDULED, scheduled_at=at,
                                                unchanged_since=seen,
                                                template_unchanged_since=template_seen)
    else:
        moved = await store.set_campaign_status(campaign.id, S.SENDING, unchanged_since=seen,
                                                template_unchanged_since=template_seen)
    return moved, problems


async def pause_campaign(store: Store, campaign: Campaign, detail: str = "") -> Campaign:
    return await store.set_campaign_status(campaign.id, S.PAUSED, reason=PauseReason.OPERATOR,
                                           detail=detail or "paused by the operator")


async def resume_campaign(store: Store, campaign: Campaign) -> Campaign:
    """Paused -> sending. Not from a draft or a scheduled campaign: the table has that move,
    but it is a start, and a start runs the pre-flight first (start_campaign). Other states
    are refused by the table itself."""
    if campaign.status in EDITABLE:
        raise IllegalTransition(f"campaign {campaign.name!r} is {campaign.status}: only a "
                                "paused campaign is resumed (start this one)")
    return await store.set_campaign_status(campaign.id, S.SENDING)


async def cancel_campaign(store: Store, campaign: Campaign) -> Campaign:
    """Cancels. The store settles, in the same transaction, the pending rows a crashed run
    left (no run will come to do it): accepted -> queued, else failed "cancelled". While a
    dispatcher still holds the campaign, it settles its own batch, and the runner's poll
    settles whatever a dispatcher dying after the cancel leaves."""
    return await store.set_campaign_status(campaign.id, S.CANCELLED)


class CampaignRunner:
    """The server's campaign task (see the module doc)."""

    def __init__(self, store: Store, make_dispatcher: Callable[[], Dispatcher], *, clock: Clock,
                 poll_seconds: float = 5.0, sleep: Sleep = asyncio.sleep,
                 on_stop: Callable[[], None] | None = None) -> None:
        """`on_stop`: what `stop` ends once the dispatchers have (the server's build pool)."""
        self.store = store
        self._on_stop = on_stop
        self._make = make_dispatcher
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self._tasks: dict[CampaignId, asyncio.Task[None]] = {}

    @property
    def running(self) -> frozenset[CampaignId]:
        return frozenset(self._tasks)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except DomainError as exc:
                emit(log, "campaigns", logging.WARNING, status="poll failed", reason=exc.message)
            await self._sleep(self.poll_seconds)

    async def tick(self) -> None:
        """One poll: start what is due, dispatch what is sending, settle what a cancelled
        campaign's dead dispatcher left pending (see `cancel_campaign`)."""
        for cancelled in await self.store.cancelled_with_pending():
            settled = await self.store.settle_cancelled(cancelled)
            if settled:
                emit(log, f"campaign {cancelled}", status="cancelled", settled=settled)
        for due in await self.store.due_campaigns(self.clock.now()):
            campaign = due
            if campaign.status is S.SCHEDULED:
                campaign = await self.store.set_campaign_status(
                    campaign.id, S.SENDING, only_from=frozenset({S.SCHEDULED}))
                emit(log, f"campaign {campaign.id}", status=campaign.status.value,
                     why="scheduled time reached")
            if campaign.status is S.SENDING and campaign.id not in self._tasks:
                self._tasks[campaign.id] = asyncio.create_task(
                    self._dispatch(campaign.id), name=f"campaign-{campaign.id}")

    async def _dispatch(self, campaign_id: CampaignId) -> None:
        try:
            await self._make().run(campaign_id)
        except LeaseLost:
            pass  # another process sends it
        except DispatchError as exc:
            emit(log, f"campaign {campaign_id}", logging.ERROR, status="paused",
                 reason="error", detail=exc.message)
            with contextlib.suppress(DomainError):
                await self.store.set_campaign_status(
                    campaign_id, S.PAUSED, reason=PauseReason.ERROR, detail=exc.message,
                    only_from=frozenset({S.SENDING}))
        except DomainError as exc:  # storage trouble: the next poll tries again
            emit(log, f"campaign {campaign_id}", logging.WARNING, status="dispatch failed",
                 reason=exc.message)
        finally:
            self._tasks.pop(campaign_id, None)

    async def wait_idle(self) -> None:
        """Until the dispatchers running now have returned (tests, graceful stop)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._on_stop is not None:
            self._on_stop()


__all__ = [
    "CampaignRunner",
    "PreflightFailed",
    "cancel_campaign",
    "create_campaign",
    "delete_campaign",
    "draft_of",
    "pause_campaign",
    "resume_campaign",
    "start_campaign",
    "update_campaign",
]
