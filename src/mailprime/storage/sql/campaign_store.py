"""CampaignStore delegation (issue 5): campaigns and their per-recipient send records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailprime.domain.campaigns import (
    Campaign,
    CampaignCounters,
    CampaignDraft,
    CampaignStats,
    CampaignStatus,
    PauseReason,
    SendRecord,
    SendStatus,
)
from mailprime.domain.ids import CampaignId, ContactId, QueueId
from mailprime.domain.mail import Acceptance
from mailprime.storage.sql import campaigns as sql
from mailprime.storage.sql.access import SqlAccess


class CampaignSql(SqlAccess):
    """The CampaignStore port's methods, on the writer and the read pool."""

    async def create_campaign(self, draft: CampaignDraft) -> Campaign:
        draft.check()
        now = self._clock.now()
        return await self._writer.run(lambda c: sql.create(c, draft, now))

    async def get_campaign(self, campaign_id: CampaignId) -> Campaign | None:
        return await self._read(lambda c: sql.get(c, campaign_id))

    async def get_campaign_by_name(self, name: str) -> Campaign | None:
        return await self._read(lambda c: sql.get_by_name(c, name))

    async def list_campaigns(self, *, status: CampaignStatus | None = None,
                             limit: int = 1000, after: CampaignId | None = None
                             ) -> Sequence[Campaign]:
        return await self._read(lambda c: sql.list_all(c, status, limit, after))

    async def update_campaign(self, campaign_id: CampaignId, draft: CampaignDraft, *,
                              only_from: frozenset[CampaignStatus] | None = None) -> Campaign:
        draft.check()
        now = self._clock.now()
        return await self._writer.run(lambda c: sql.update_settings(c, campaign_id, draft, now,
                                                                    only_from))

    async def set_campaign_status(self, campaign_id: CampaignId, to: CampaignStatus, *,
                                  reason: PauseReason | None = None, detail: str = "",
                                  scheduled_at: datetime | None = None,
                                  only_from: frozenset[CampaignStatus] | None = None,
                                  unchanged_since: datetime | None = None,
                                  template_unchanged_since: datetime | None = None) -> Campaign:
        now = self._clock.now()
        return await self._writer.run(lambda c: sql.set_status(
            c, campaign_id, to, now, reason=reason, detail=detail, scheduled_at=scheduled_at,
            only_from=only_from, unchanged_since=unchanged_since,
            template_unchanged_since=template_unchanged_since))

    async def delete_campaign(self, campaign_id: CampaignId, *,
                              only_from: frozenset[CampaignStatus] | None = None) -> bool:
        return await self._writer.run(lambda c: sql.remove(c, campaign_id, only_from))

    async def due_campaigns(self, now: datetime) -> Sequence[Campaign]:
        return await self._read(lambda c: sql.due(c, now))

    async def claim_campaign(self, campaign_id: CampaignId, owner: str, now: datetime,
                             until: datetime) -> bool:
        return await self._writer.run(lambda c: sql.claim(c, campaign_id, owner, now, until))

    async def release_campaign(self, campaign_id: CampaignId, owner: str) -> None:
        await self._writer.run(lambda c: sql.release(c, campaign_id, owner))

    async def record_sends(self, campaign_id: CampaignId,
                           rows: Sequence[SendRecord]) -> Sequence[SendRecord]:
        now = self._clock.now()
        return await self._writer.run(lambda c: sql.record_sends(c, campaign_id, rows, now))

    async def queue_sends(self, campaign_id: CampaignId, rows: Sequence[SendRecord],
                          acceptances: Sequence[Acceptance], cursor: ContactId | None) -> None:
        now = self._clock.now()
        await self._accept_together(acceptances, before=lambda conn: sql.insert_new_sends(
            conn, campaign_id, rows, cursor, now))

    async def settle_sends(self, campaign_id: CampaignId,
                           updates: Sequence[tuple[ContactId, SendStatus, str, str]],
                           cursor: ContactId | None = None) -> None:
        now = self._clock.now()
        await self._writer.run(lambda c: sql.settle_sends(c, campaign_id, updates, cursor, now))

    async def settle_cancelled(self, campaign_id: CampaignId) -> int:
        now = self._clock.now()
        return await self._writer.run(lambda c: sql.settle_cancelled(c, campaign_id, now))

    async def cancelled_with_pending(self) -> Sequence[CampaignId]:
        return await self._read(sql.cancelled_with_pending)

    async def pending_sends(self, campaign_id: CampaignId, *, after: ContactId | None = None,
                            limit: int = 1000) -> Sequence[SendRecord]:
        return await self._read(lambda c: sql.pending_sends(c, campaign_id, after, limit))

    async def get_send(self, campaign_id: CampaignId, contact_id: ContactId) -> SendRecord | None:
        return await self._read(lambda c: sql.get_send(c, campaign_id, contact_id))

    async def list_sends(self, campaign_id: CampaignId, *, status: SendStatus | None = None,
                         after: ContactId | None = None, limit: int = 1000
                         ) -> Sequence[SendRecord]:
        return await self._read(lambda c: sql.sends_page(c, campaign_id, status, after, limit))

    async def accepted_queue_ids(self, queue_ids: Sequence[QueueId]) -> set[QueueId]:
        return await self._read(lambda c: sql.accepted_queue_ids(c, queue_ids))

    async def campaign_counters(self, campaign_id: CampaignId) -> CampaignCounters:
        return await self._read(lambda c: sql.counters(c, campaign_id))

    async def campaign_stats(self, campaign_id: CampaignId) -> CampaignStats:
        return await self._read(lambda c: sql.stats(c, campaign_id))
