"""AudienceStore delegation (issue 5): contacts, lists, memberships, consent, segments, retention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from mailprime.domain import audience as au
from mailprime.domain.ids import ContactId, ListId, SegmentId
from mailprime.storage.ports import GateFacts
from mailprime.storage.sql import audience, recipients, retention
from mailprime.storage.sql.access import SqlAccess


class AudienceSql(SqlAccess):
    """The AudienceStore port's methods, on the writer and the read pool."""

    async def add_contact(self, item: au.ContactInput) -> au.Contact:
        now = self._clock.now()
        return await self._writer.run(lambda c: audience.add_contact(c, item, now))

    async def get_contact(self, email: str) -> au.Contact | None:
        return await self._read(lambda c: audience.get_contact(c, email))

    async def get_contact_by_id(self, contact_id: ContactId) -> au.Contact | None:
        return await self._read(lambda c: audience.get_contact_by_id(c, contact_id))

    async def update_contact(self, contact_id: ContactId, *, name: str | None = None,
                             attributes: au.Attributes | None = None) -> au.Contact:
        now = self._clock.now()
        return await self._writer.run(
            lambda c: audience.update_contact(c, contact_id, name, attributes, now))

    async def record_engagement(self, contact_id: ContactId, *, opened_at: datetime | None = None,
                                clicked_at: datetime | None = None) -> None:
        await self._writer.run(lambda c: audience.record_engagement(
            c, contact_id, opened_at=opened_at, clicked_at=clicked_at))

    async def contacts_page(self, *, segment: au.SegmentFilter | None = None,
                            after: ContactId | None = None, limit: int = 1000
                            ) -> Sequence[au.Contact]:
        now = self._clock.now()
        return await self._read(lambda c: audience.contacts_page(c, segment, after, limit, now))

    async def count_contacts(self, segment: au.SegmentFilter | None = None) -> int:
        now = self._clock.now()
        return await self._read(lambda c: audience.count_contacts(c, segment, now))

    async def upsert_contacts(self, items: Sequence[au.ContactInput], *, mode: au.ImportMode,
                              list_id: ListId | None = None,
                              status: au.MembershipStatus = au.MembershipStatus.UNCONFIRMED,
                              evidence: au.ConsentEvidence) -> au.ImportResult:
        now = self._clock.now()
        return await self._writer.run(lambda c: audience.upsert_contacts(
            c, items, mode=mode, list_id=list_id, status=status, evidence=evidence, now=now))

    async def create_list(self, name: str, *, description: str = "",
                          opt_in: au.OptIn = au.OptIn.DOUBLE) -> au.MailingList:
        now = self._clock.now()
        return await self._writer.run(
            lambda c: audience.create_list(c, name, description, opt_in, now))

    async def get_list(self, name: str) -> au.MailingList | None:
        return await self._read(lambda c: audience.get_list(c, name))

    async def get_list_by_id(self, list_id: ListId) -> au.MailingList | None:
        return await self._read(lambda c: audience.get_list_by_id(c, list_id))

    async def list_lists(self) -> Sequence[tuple[au.MailingList, Mapping[au.MembershipStatus, int]]]:
        return await self._read(audience.list_lists)

    async def delete_list(self, name: str) -> int:
        return await self._writer.run(lambda c: audience.delete_list(c, name))

    async def update_list(self, list_id: ListId, *, name: str | None = None,
                          description: str | None = None,
                          opt_in: au.OptIn | None = None) -> au.MailingList:
        return await self._writer.run(
            lambda c: audience.update_list(c, list_id, name, description, opt_in))

    async def set_membership(self, contact_id: ContactId, list_id: ListId, *,
                             status: au.MembershipStatus, evidence: au.ConsentEvidence
                             ) -> au.Membership:
        now = self._clock.now()
        return await self._writer.run(lambda c: audience.set_membership(
            c, contact_id, list_id, status=status, evidence=evidence, now=now))

    async def get_membership(self, contact_id: ContactId, list_id: ListId) -> au.Membership | None:
        return await self._read(lambda c: audience.get_membership(c, contact_id, list_id))

    async def contact_memberships(self, contact_id: ContactId
                                  ) -> Sequence[tuple[au.MailingList, au.Membership]]:
        return await self._read(lambda c: audience.contact_memberships(c, contact_id))

    async def list_members(self, list_id: ListId, *, status: au.MembershipStatus | None = None,
                           after: ContactId | None = None, limit: int = 1000
                           ) -> Sequence[tuple[au.Contact, au.Membership]]:
        return await self._read(lambda c: audience.list_members(c, list_id, status, after, limit))

    async def record_consent(self, email: str, *, purpose: str, action: au.ConsentAction,
                             evidence: au.ConsentEvidence) -> None:
        now = self._clock.now()
        await self._writer.run(lambda c: audience.record_consent(
            c, email, purpose=purpose, action=action, evidence=evidence, now=now))

    async def consent_entries(self, email: str) -> Sequence[au.ConsentEntry]:
        return await self._read(lambda c: audience.consent_entries(c, email))

    async def audience(self, list_ids: Sequence[ListId], *, segment: au.SegmentFilter | None = None,
                       after: ContactId | None = None, limit: int = 1000,
                       sending_domain: str = "") -> Sequence[au.Contact]:
        now = self._clock.now()
        return await self._read(lambda c: recipients.audience(
            c, list_ids, segment, after=after, limit=limit, sending_domain=sending_domain, now=now))

    async def audience_page(self, list_ids: Sequence[ListId], *,
                            segment: au.SegmentFilter | None = None,
                            after: ContactId | None = None, limit: int = 1000,
                            sending_domain: str = "") -> Sequence[au.Addressee]:
        now = self._clock.now()
        return await self._read(lambda c: recipients.audience_page(
            c, list_ids, segment, after=after, limit=limit, sending_domain=sending_domain, now=now))

    async def count_audience(self, list_ids: Sequence[ListId], *,
                             segment: au.SegmentFilter | None = None,
                             sending_domain: str = "") -> int:
        now = self._clock.now()
        return await self._read(
            lambda c: recipients.count_audience(c, list_ids, segment, sending_domain, now))

    async def send_gate_facts(self, addresses: Sequence[str], *, sending_domain: str,
                              list_ids: Sequence[ListId]) -> GateFacts:
        return await self._read(lambda c: recipients.send_gate_facts(
            c, addresses, sending_domain, list_ids))

    async def create_segment(self, name: str, expression: str) -> au.Segment:
        now = self._clock.now()
        return await self._writer.run(lambda c: audience.create_segment(c, name, expression, now))

    async def get_segment(self, name: str) -> au.Segment | None:
        return await self._read(lambda c: audience.get_segment(c, name))

    async def list_segments(self) -> Sequence[au.Segment]:
        return await self._read(audience.list_segments)

    async def delete_segment(self, name: str) -> bool:
        return await self._writer.run(lambda c: audience.delete_segment(c, name))

    async def update_segment(self, segment_id: SegmentId, *, name: str | None = None,
                             expression: str | None = None) -> au.Segment:
        return await self._writer.run(
            lambda c: audience.update_segment(c, segment_id, name, expression))

    async def contact_data(self, email: str, *, event_limit: int = 100_000) -> au.ContactData:
        return await self._read(lambda c: audience.contact_data(c, email, event_limit))

    async def erase_contact(self, email: str) -> au.ErasureResult:
        now = self._clock.now()
        return await self._writer.run(lambda c: audience.erase(c, email, now))

    async def delete_events_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        return await self._writer.run(lambda c: retention.delete_events_before(c, cutoff, limit))

    async def delete_finished_messages_before(self, cutoff: datetime, *,
                                              limit: int = 1_000) -> int:
        count, paths = await self._writer.run(
            lambda c: retention.delete_finished_messages_before(c, cutoff, limit))
        await self._unlink(paths)
        return count
