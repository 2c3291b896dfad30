"""The campaigns under way that use a segment or a template: while one does, the segment's
expression and the template's content are fixed (storage.sql.audience, storage.sql.templates).

A campaign under way (scheduled, sending, paused) was pre-flighted with what they said then, and
its dispatcher reads them again at each run (after a pause, a restart or a crash): a change
would send the rest of its audience something nobody checked, and not what the first part got.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.engine import Connection

from mailprime.domain.campaigns import CampaignStatus
from mailprime.storage.sql.schema import campaigns

UNDER_WAY = (CampaignStatus.SCHEDULED.value, CampaignStatus.SENDING.value,
             CampaignStatus.PAUSED.value)


def campaigns_under_way(conn: Connection, uses: ColumnElement[bool], limit: int = 3) -> list[str]:
    """The names of (at most `limit`) campaigns under way for which `uses` holds. Every
    campaign it holds for is read FOR SHARE (PostgreSQL), whatever its status: a start in
    flight holds its row locked with the status changed but not committed, and a filter on the
    status would skip it as it was (a draft) without waiting. The lock waits for that start and
    reads the status it committed; and a start that comes later waits for the caller's change
    to commit."""
    stmt = select(campaigns.c.name, campaigns.c.status).where(uses).order_by(campaigns.c.id)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update(read=True)
    return [name for name, status in conn.execute(stmt) if status in UNDER_WAY][:limit]


__all__ = ["UNDER_WAY", "campaigns_under_way"]
