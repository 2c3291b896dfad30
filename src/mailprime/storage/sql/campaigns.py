"""Campaign tables (the CampaignStore port): campaigns, their lists, their per-contact sends.

Theory of operation
-------------------
Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (campaign_store.py decides which).

A status change, a settings change and a conditional delete read the row with FOR UPDATE and
decide on what they read (domain.campaigns.transition, EDITABLE, `only_from`): on PostgreSQL
(READ COMMITTED) a plain read would let another process commit its move (the runner's
scheduled -> sending) between our read and our write, which would then rewrite the From of a
campaign that is sending, or delete it with its send log; the lock makes that process wait
for our commit, or makes our read wait for its commit and see its result. On SQLite the
writer holds the database write lock from BEGIN IMMEDIATE on, and FOR UPDATE is not emitted.
So two callers (an operator's pause, the dispatcher finishing) cannot both move from the same
state: the second sees the first's result and is refused by the table.

Send rows are what makes dispatch exactly-once (marketing.dispatch explains the protocol): they
are inserted ignoring conflicts on (campaign, contact), and the caller gets back the rows as they
now are, so a contact someone else (another process, an earlier run) already has a row for is
recognised by its queue id not being the one the caller chose.

Counters are derived, never kept: sends by status from campaign_sends, hard bounces and
complaints from the events whose queue id is one of the campaign's sends (the bounce and
complaint handling in services/delivery writes those events with the queue id; they cannot know
about campaigns, the layers keep them apart). A contact is counted once per kind however many
reports name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from mailprime.domain.campaigns import (
    EDITABLE,
    MAX_DETAIL,
    Campaign,
    CampaignCounters,
    CampaignDraft,
    CampaignStats,
    CampaignStatus,
    IllegalTransition,
    PauseReason,
    SendRecord,
    SendStatus,
    transition,
)
from mailprime.domain.errors import AlreadyExists, Conflict, NotFound
from mailprime.domain.ids import CampaignId, ContactId, ListId, QueueId, SegmentId, TemplateId
from mailprime.domain.mail import EventKind
from mailprime.storage.sql.bulk import BulkInsert, BulkUpdate, stamp
from mailprime.storage.sql.schema import (
    campaign_lists,
    campaign_sends,
    campaigns,
    events,
    queue_messages,
    templates,
)

cp, cs, ev = campaigns.c, campaign_sends.c, events.c
MAX_LIST = 10_000
MAX_IN = 900  # ids in one IN (...) list (SQLite's default limit of bound variables is 999)


def _lists(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[ListId, ...]]:
    out: dict[int, list[ListId]] = {}
    if not ids:
        return {}
    stmt = (select(campaign_lists.c.campaign_id, campaign_lists.c.list_id)
            .where(campaign_lists.c.campaign_id.in_(ids))
            .order_by(campaign_lists.c.campaign_id, campaign_lists.c.position))
    for row in conn.execute(stmt):
        out.setdefault(row.campaign_id, []).append(ListId(row.list_id))
    return {k: tuple(v) for k, v in out.items()}


def _to_campaign(row: Row[Any], list_ids: tuple[ListId, ...]) -> Campaign:
    return Campaign(
        id=CampaignId(row.id), name=row.name, template_id=TemplateId(row.template_id),
        list_ids=list_ids,
        segment_id=SegmentId(row.segment_id) if row.segment_id is not None else None,
        from_address=row.from_address, from_name=row.from_name, reply_to=row.reply_to,
        subject=row.subject, status=CampaignStatus(row.status),
        rate_per_minute=row.rate_per_minute, scheduled_at=row.scheduled_at,
        track_opens=bool(row.track_opens), track_clicks=bool(row.track_clicks),
        postal_address=row.postal_address, created_at=row.created_at,
        updated_at=row.updated_at, started_at=row.started_at, finished_at=row.finished_at,
        pause_reason=PauseReason(row.pause_reason) if row.pause_reason else None,
        pause_detail=row.pause_detail,
        cursor=ContactId(row.cursor) if row.cursor is not None else None)


def _select(conn: Connection, *where: Any, limit: int = MAX_LIST,
            lock: bool = False) -> list[Campaign]:
    stmt = select(campaigns).where(*where).order_by(cp.id).limit(max(1, min(limit, MAX_LIST)))
    rows = conn.execute(stmt.with_for_update() if lock else stmt).all()
    lists = _lists(conn, [r.id for r in rows])
    return [_to_campaign(r, lists.get(r.id, ())) for r in rows]


def get(conn: Connection, campaign_id: CampaignId) -> Campaign | None:
    found = _select(conn, cp.id == campaign_id)
    return found[0] if found else None


def _locked(conn: Connection, campaign_id: CampaignId) -> Campaign | None:
    """The campaign, its row locked until the commit (see the module doc)."""
    found = _select(conn, cp.id == campaign_id, lock=True)
    return found[0] if found else None


def get_by_name(conn: Connection, name: str) -> Campaign | None:
    found = _select(conn, cp.name == name)
    return found[0] if found else None


def list_all(conn: Connection, status: CampaignStatus | None, limit: int,
             after: CampaignId | None = None) -> list[Campaign]:
    where = [cp.status == status.value] if status is not None else []
    if after is not None:
        where.append(cp.id > after)
    return _select(conn, *where, limit=limit)


def create(conn: Connection, draft: CampaignDraft, now: datetime) -> Campaign:
    if conn.execute(select(cp.id).where(cp.name == draft.name)).first() is not None:
        raise AlreadyExists(f"a campaign named {draft.name!r} already exists")
    try:
        with conn.begin_nested():
            new_id = conn.execute(insert(campaigns).values(
                name=draft.name, template_id=draft.template_id, segment_id=draft.segment_id,
                from_address=draft.from_address, from_name=draft.from_name,
                reply_to=draft.reply_to, subject=draft.subject,
                status=CampaignStatus.DRAFT.value, rate_per_minute=draft.rate_per_minute,
                track_opens=draft.track_opens, track_clicks=draft.track_clicks,
                postal_address=draft.postal_address, pause_detail="", created_at=now,
                updated_at=now).returning(cp.id)).scalar_one()
    except IntegrityError as exc:
        raise AlreadyExists(f"a campaign named {draft.name!r} already exists") from exc
    conn.execute(insert(campaign_lists), [
        {"campaign_id": new_id, "list_id": list_id, "position": n}
        for n, list_id in enumerate(draft.list_ids)])
    created = get(conn, CampaignId(new_id))
    assert created is not None
    return created


def update_settings(conn: Connection, campaign_id: CampaignId, draft: CampaignDraft,
                    now: datetime, only_from: frozenset[CampaignStatus] | None = None
                    ) -> Campaign:
    """Replaces the settings of a campaign that is still EDITABLE and, with `only_from`, still
    in one of those states (the one the caller checked the change for: a scheduled campaign's
    change is pre-flighted, a draft's is not). The row is read FOR UPDATE, so a start (or the
    runner's scheduled -> sending) that won the race is seen and the change refused, never
    applied to a campaign that is sending; one that comes later waits for this commit."""
    current = _locked(conn, campaign_id)
    if current is None:
        raise NotFound(f"no campaign #{campaign_id}")
    if current.status not in EDITABLE:
        raise IllegalTransition(f"campaign {current.name!r} is {current.status}: only a "
                                f"{' or a '.join(sorted(EDITABLE))} campaign can be changed")
    if only_from is not None and current.status not in only_from:
        raise IllegalTransition(f"campaign {current.name!r} became {current.status} while the "
                                "change was being checked: read it again and retry")
    if draft.name != current.name and conn.execute(
            select(cp.id).where(cp.name == draft.name, cp.id != campaign_id)).first():
        raise AlreadyExists(f"a campaign named {draft.name!r} already exists")
    try:
        with conn.begin_nested():
            conn.execute(update(campaigns).where(cp.id == campaign_id).values(
                name=draft.name, template_id=draft.template_id, segment_id=draft.segment_id,
                from_address=draft.from_address, from_name=draft.from_name,
                reply_to=draft.reply_to, subject=draft.subject,
                rate_per_minute=draft.rate_per_minute, track_opens=draft.track_opens,
                track_clicks=draft.track_clicks, postal_address=draft.postal_address,
                updated_at=now))
    except IntegrityError as exc:  # a concurrent create or rename to the same name
        raise AlreadyExists(f"a campaign named {draft.name!r} already exists") from exc
    if tuple(draft.list_ids) != current.list_ids:
        conn.execute(delete(campaign_lists).where(campaign_lists.c.campaign_id == campaign_id))
        conn.execute(insert(campaign_lists), [
            {"campaign_id": campaign_id, "list_id": list_id, "position": n}
            for n, list_id in enumerate(draft.list_ids)])
    updated = get(conn, campaign_id)
    assert updated is not None
    return updated


def set_status(conn: Connection, campaign_id: CampaignId, to: CampaignStatus, now: datetime, *,
               reason: PauseReason | None, detail: str, scheduled_at: datetime | None,
               only_from: frozenset[CampaignStatus] | None,
               unchanged_since: datetime | None = None,
               template_unchanged_since: datetime | None = None) -> Campaign:
    """With `unchanged_since` (the `updated_at` of the campaign a caller checked, e.g. the
    start's pre-flight), the move is refused (IllegalTransition) if the campaign was written
    since: checked under the row lock, so a PATCH landing while a slow pre-flight ran does
    not start settings nobody checked. `template_unchanged_since` does the same for its
    template: read FOR SHARE, so a template replace in flight (which reads the campaigns using
    the template FOR SHARE, storage.sql.templates) is either seen committed here or waits for
    this move and then finds the campaign under way. A move to cancelled settles the pending
    rows no dispatcher holds, in the same transaction (`settle_cancelled`)."""
    current = _locked(conn, campaign_id)  # the move is decided on what is read: see the doc
    if current is None:
        raise NotFound(f"no campaign #{campaign_id}")
    if only_from is not None and current.status not in only_from:
        return current  # the caller's precondition no longer holds: nothing to do
    if unchanged_since is not None and current.updated_at != unchanged_since:
        raise IllegalTransition(f"campaign {current.name!r} changed during the pre-flight: "
                                "start again")
    if template_unchanged_since is not None:
        stmt = select(templates.c.updated_at).where(templates.c.id == current.template_id)
        if conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update(read=True)
        if conn.execute(stmt).scalar() != template_unchanged_since:
            raise IllegalTransition(f"the template of campaign {current.name!r} changed during "
                                    "the pre-flight: start again")
    moved = transition(current, to, at=now, reason=reason, detail=detail)
    values: dict[str, object] = {
        "status": moved.status.value, "updated_at": now,
        "pause_reason": moved.pause_reason.value if moved.pause_reason else None,
        "pause_detail": moved.pause_detail, "started_at": moved.started_at,
        "finished_at": moved.finished_at, "scheduled_at": moved.scheduled_at}
    if to is CampaignStatus.SCHEDULED:
        values["scheduled_at"] = scheduled_at
    conn.execute(update(campaigns).where(cp.id == campaign_id).values(**values))
    if moved.status is CampaignStatus.CANCELLED:
        # In the move's transaction: no run will come to reconcile what a crash left pending,
        # and a crash between the move and a later settle would leave that to the runner's
        # poll. With a live lease this does nothing; the dispatcher settles its own batch.
        settle_cancelled(conn, campaign_id, now)
    updated = get(conn, campaign_id)
    assert updated is not None
    return updated


def due(conn: Connection, now: datetime) -> list[Campaign]:
    return _select(conn, or_(cp.status == CampaignStatus.SENDING.value,
                             and_(cp.status == CampaignStatus.SCHEDULED.value,
                                  cp.scheduled_at <= now)))


def claim(conn: Connection, campaign_id: CampaignId, owner: str, now: datetime,
          until: datetime) -> bool:
    result = conn.execute(update(campaigns).where(
        cp.id == campaign_id, cp.status == CampaignStatus.SENDING.value,
        or_(cp.lease_owner.is_(None), cp.lease_owner == owner, cp.lease_until < now))
        .values(lease_owner=owner, lease_until=until))
    return result.rowcount > 0


def release(conn: Connection, campaign_id: CampaignId, owner: str) -> None:
    conn.execute(update(campaigns).where(cp.id == campaign_id, cp.lease_owner == owner)
                 .values(lease_owner=None, lease_until=None))


def _send(row: Row[Any]) -> SendRecord:
    return SendRecord(campaign_id=CampaignId(row.campaign_id), contact_id=ContactId(row.contact_id),
                      email=row.email, status=SendStatus(row.status),
                      queue_id=QueueId(row.queue_id) if row.queue_id is not None else None,
                      reason=row.reason, detail=row.detail, at=row.at)


def _sends_of(conn: Connection, campaign_id: CampaignId,
              contact_ids: Sequence[ContactId]) -> list[SendRecord]:
    out: list[SendRecord] = []
    for start in range(0, len(contact_ids), MAX_IN):
        chunk = contact_ids[start:start + MAX_IN]
        out.extend(_send(r) for r in conn.execute(select(campaign_sends).where(
            cs.campaign_id == campaign_id, cs.contact_id.in_(chunk))))
    return out


_INSERT_SENDS = BulkInsert(
    campaign_sends, ("campaign_id", "contact_id", "email", "status", "queue_id", "reason", "detail",
                     "at"), ignore_conflicts_on=("campaign_id", "contact_id"))
_INSERT_SENDS_RETURNING = _INSERT_SENDS.statement.returning(cs.contact_id)


def _insert_sends(conn: Connection, campaign_id: CampaignId, rows: Sequence[SendRecord],
                  now: datetime) -> int:
    """Inserts the rows whose contact has none in the campaign yet; how many went in."""
    at = stamp(conn.dialect.name, now)
    params = [(campaign_id, r.contact_id, r.email, r.status.value, r.queue_id, r.reason[:32],
               r.detail[:MAX_DETAIL], at) for r in rows]
    if conn.dialect.name == "sqlite":
        return _INSERT_SENDS(conn, params)  # the driver counts the rows that went in
    return len(conn.execute(_INSERT_SENDS_RETURNING, _INSERT_SENDS.dicts(params)).all())


def record_sends(conn: Connection, campaign_id: CampaignId, rows: Sequence[SendRecord],
                 now: datetime) -> list[SendRecord]:
    """Inserts the rows whose contact has none yet; returns every given contact's row as it is.

    When every row went in (a batch of contacts new to the campaign: the usual case), the rows
    as they are now are the ones given, as written: nothing is read back. Otherwise (a contact
    has a row from an earlier run or another process, or is twice in `rows`) they are read."""
    if not rows:
        return []
    if _insert_sends(conn, campaign_id, rows, now) != len(rows):
        return _sends_of(conn, campaign_id, [r.contact_id for r in rows])
    written = now.astimezone(UTC)  # as the column gives it back
    return [SendRecord(campaign_id, r.contact_id, r.email, r.status, r.queue_id, r.reason[:32],
                       r.detail[:MAX_DETAIL], written) for r in rows]


class SendsTaken(Conflict):
    """`insert_new_sends`: a contact of the batch already has a row in the campaign."""


def insert_new_sends(conn: Connection, campaign_id: CampaignId, rows: Sequence[SendRecord],
                     cursor: ContactId | None, now: datetime) -> None:
    """The rows, all of them, and the cursor to `cursor`; SendsTaken (after which the caller's
    transaction is rolled back) when a contact already has a row in the campaign."""
    inserted = _insert_sends(conn, campaign_id, rows, now)
    if inserted != len(rows):
        raise SendsTaken(f"campaign {campaign_id}: {len(rows) - inserted} of the batch's "
                         "contacts already have a send row")
    _move_cursor(conn, campaign_id, cursor)


_SETTLE = BulkUpdate(
    "UPDATE campaign_sends SET status = ?, reason = ?, detail = ?, at = ? "
    "WHERE campaign_id = ? AND contact_id = ? AND status = ?",
    update(campaign_sends)
    .where(cs.campaign_id == bindparam("b_campaign"), cs.contact_id == bindparam("b_contact"),
           cs.status == bindparam("b_pending"))
    .values(status=bindparam("b_status"), reason=bindparam("b_reason"),
            detail=bindparam("b_detail"), at=bindparam("b_at")),
    ("b_status", "b_reason", "b_detail", "b_at", "b_campaign", "b_contact", "b_pending"))
_PENDING = SendStatus.PENDING.value


def settle_sends(conn: Connection, campaign_id: CampaignId,
                 updates: Sequence[tuple[ContactId, SendStatus, str, str]],
                 cursor: ContactId | None, now: datetime) -> None:
    """Moves pending rows to their outcome (queued, failed), and the walk's cursor forward."""
    if updates:  # one executemany: a dispatch batch settles hundreds of rows at once
        at = stamp(conn.dialect.name, now)
        _SETTLE(conn, [(status.value, reason[:32], detail[:MAX_DETAIL], at, campaign_id,
                        contact_id, _PENDING) for contact_id, status, reason, detail in updates])
    _move_cursor(conn, campaign_id, cursor)


def _move_cursor(conn: Connection, campaign_id: CampaignId, cursor: ContactId | None) -> None:
    """The walk's cursor forward to `cursor` (never back)."""
    if cursor is not None:
        conn.execute(update(campaigns).where(
            cp.id == campaign_id, or_(cp.cursor.is_(None), cp.cursor < cursor))
            .values(cursor=cursor))


# What a pending row of a cancelled campaign becomes when its message never reached the queue.
CANCELLED_REASON = "cancelled"
_CANCELLED_DETAIL = "the campaign was cancelled before this message was queued"


def settle_cancelled(conn: Connection, campaign_id: CampaignId, now: datetime) -> int:
    """Settles the pending rows of a cancelled campaign that no dispatcher holds: a row whose
    accept committed becomes queued, any other failed ("cancelled"). Returns how many.

    Pending rows are what a dispatch batch leaves between writing its rows and settling them;
    a run settles them itself, or the next run of the campaign does (dispatch's reconcile). A
    cancelled campaign has no next run, so a crash in that gap would leave them pending for
    ever (in its stats, and in a contact's history). While a live lease names a dispatcher,
    nothing is done: it settles its own batch at its next checkpoint; once the lease is
    released or has run out, no accept of the campaign can still commit (the claim protocol's
    promise), so what is not accepted by now never will be. The campaign row is locked
    (PostgreSQL) so that two callers settle once."""
    held = conn.execute(
        select(cp.id).where(cp.id == campaign_id, cp.status == CampaignStatus.CANCELLED.value,
                            or_(cp.lease_owner.is_(None), cp.lease_until < now))
        .with_for_update()).first()
    if held is None:
        return 0
    rows = conn.execute(select(cs.contact_id, cs.queue_id).where(
        cs.campaign_id == campaign_id, cs.status == SendStatus.PENDING.value)).all()
    accepted = accepted_queue_ids(conn, [QueueId(r.queue_id) for r in rows
                                         if r.queue_id is not None])
    updates = [(ContactId(r.contact_id), SendStatus.QUEUED, "", "")
               if r.queue_id is not None and r.queue_id in accepted
               else (ContactId(r.contact_id), SendStatus.FAILED, CANCELLED_REASON,
                     _CANCELLED_DETAIL) for r in rows]
    settle_sends(conn, campaign_id, updates, None, now)
    return len(updates)


def cancelled_with_pending(conn: Connection) -> list[CampaignId]:
    """The cancelled campaigns that still have pending rows (`settle_cancelled`): one index
    probe (campaign_id, status) per cancelled campaign."""
    pending = (select(cs.contact_id).where(cs.campaign_id == cp.id,
                                          cs.status == SendStatus.PENDING.value).exists())
    return [CampaignId(i) for i in conn.execute(
        select(cp.id).where(cp.status == CampaignStatus.CANCELLED.value, pending)
        .order_by(cp.id).limit(MAX_LIST)).scalars()]


def sends_page(conn: Connection, campaign_id: CampaignId, status: SendStatus | None,
               after: ContactId | None, limit: int) -> list[SendRecord]:
    stmt = (select(campaign_sends).where(cs.campaign_id == campaign_id)
            .order_by(cs.contact_id).limit(max(1, min(limit, MAX_LIST))))
    if status is not None:
        stmt = stmt.where(cs.status == status.value)
    if after is not None:
        stmt = stmt.where(cs.contact_id > after)
    return [_send(r) for r in conn.execute(stmt)]


def pending_sends(conn: Connection, campaign_id: CampaignId, after: ContactId | None,
                  limit: int) -> list[SendRecord]:
    stmt = (select(campaign_sends).where(cs.campaign_id == campaign_id,
                                         cs.status == SendStatus.PENDING.value)
            .order_by(cs.contact_id).limit(max(1, min(limit, MAX_LIST))))
    if after is not None:
        stmt = stmt.where(cs.contact_id > after)
    return [_send(r) for r in conn.execute(stmt)]


def accepted_queue_ids(conn: Connection, queue_ids: Sequence[QueueId]) -> set[QueueId]:
    """Those of `queue_ids` an accept committed: the message is queued, or (delivered and
    cleaned up since) its QUEUED event, appended in the accept's transaction, is there; or,
    for a message to local mailboxes only (never queued), its STORED event, appended alike."""
    found: set[QueueId] = set()
    for start in range(0, len(queue_ids), MAX_IN):
        chunk = list(queue_ids[start:start + MAX_IN])
        found.update(QueueId(q) for q in conn.execute(
            select(queue_messages.c.id).where(queue_messages.c.id.in_(chunk))).scalars())
        rest = [q for q in chunk if q not in found]
        if rest:
            found.update(QueueId(q) for q in conn.execute(
                select(ev.queue_id).where(ev.queue_id.in_(rest), ev.kind.in_(
                    (EventKind.QUEUED.value, EventKind.STORED.value)))).scalars())
    return found


def get_send(conn: Connection, campaign_id: CampaignId, contact_id: ContactId) -> SendRecord | None:
    found = _sends_of(conn, campaign_id, [contact_id])
    return found[0] if found else None


def _attr(name: str, value: str) -> str:
    # rows.attrs_json writes json.dumps(dict(attrs)): '"name": "value"' with these separators.
    return f'%"{name}": "{value}"%'


def _event_contacts(conn: Connection, campaign_id: CampaignId, kind: EventKind,
                    attr: tuple[str, str] | None = None) -> int:
    """Distinct contacts of the campaign's sends with an event of `kind` on their queue id."""
    where = [cs.campaign_id == campaign_id, ev.kind == kind.value]
    if attr is not None:
        where.append(ev.attrs.like(_attr(*attr)))
    stmt = (select(func.count(func.distinct(cs.contact_id)))
            .select_from(campaign_sends.join(events, ev.queue_id == cs.queue_id)).where(*where))
    return int(conn.execute(stmt).scalar_one())


def counters(conn: Connection, campaign_id: CampaignId) -> CampaignCounters:
    by_status: dict[str, int] = {row[0]: row[1] for row in conn.execute(
        select(cs.status, func.count()).where(cs.campaign_id == campaign_id)
        .group_by(cs.status))}
    return CampaignCounters(
        pending=by_status.get(SendStatus.PENDING.value, 0),
        queued=by_status.get(SendStatus.QUEUED.value, 0),
        skipped=by_status.get(SendStatus.SKIPPED.value, 0),
        failed=by_status.get(SendStatus.FAILED.value, 0),
        hard_bounces=_event_contacts(conn, campaign_id, EventKind.BOUNCED, ("class", "hard")),
        complaints=_event_contacts(conn, campaign_id, EventKind.COMPLAINED))


def _tracked(conn: Connection, campaign_id: CampaignId, kind: EventKind,
             machine: bool | None = None) -> int:
    """Distinct recipients of tracking events (their tokens carry the campaign id, not a
    queue id: the pixel and the links are the same for every message of a contact)."""
    where = [ev.kind == kind.value, ev.attrs.like(_attr("campaign_id", str(campaign_id)))]
    if machine is True:
        where.append(ev.attrs.like(_attr("machine", "yes")))
    elif machine is False:
        where.append(~ev.attrs.like(_attr("machine", "yes")))
    stmt = select(func.count(func.distinct(func.coalesce(ev.recipient, ev.attrs)))).where(*where)
    return int(conn.execute(stmt).scalar_one())


def stats(conn: Connection, campaign_id: CampaignId) -> CampaignStats:
    def by_reason(status: SendStatus) -> dict[str, int]:
        return {row[0]: row[1] for row in conn.execute(
            select(cs.reason, func.count()).where(cs.campaign_id == campaign_id,
                                                   cs.status == status.value)
            .group_by(cs.reason).order_by(cs.reason))}

    return CampaignStats(
        counters=counters(conn, campaign_id),
        skipped_by_reason=by_reason(SendStatus.SKIPPED),
        failed_by_reason=by_reason(SendStatus.FAILED),
        delivered=_event_contacts(conn, campaign_id, EventKind.DELIVERED),
        bounced=_event_contacts(conn, campaign_id, EventKind.BOUNCED),
        opened=_tracked(conn, campaign_id, EventKind.OPENED, machine=False),
        clicked=_tracked(conn, campaign_id, EventKind.CLICKED, machine=False),
        unsubscribed=_tracked(conn, campaign_id, EventKind.UNSUBSCRIBED),
        machine_opens=_tracked(conn, campaign_id, EventKind.OPENED, machine=True))


def remove(conn: Connection, campaign_id: CampaignId,
           only_from: frozenset[CampaignStatus] | None = None) -> bool:
    """Deletes a campaign with its lists and sends; with `only_from`, only in those states
    (read FOR UPDATE: a start that won the race keeps its campaign, one that comes later
    waits for this commit and finds nothing to start)."""
    if only_from is not None:
        current = _locked(conn, campaign_id)
        if current is None:
            return False
        if current.status not in only_from:
            raise IllegalTransition(f"campaign {current.name!r} is {current.status}: only a "
                                    f"{' or '.join(sorted(only_from))} campaign can be deleted "
                                    "(cancel it instead)")
    return conn.execute(delete(campaigns).where(cp.id == campaign_id)).rowcount > 0


__all__ = [
    "accepted_queue_ids",
    "cancelled_with_pending",
    "claim",
    "counters",
    "create",
    "due",
    "get",
    "get_by_name",
    "get_send",
    "list_all",
    "pending_sends",
    "record_sends",
    "release",
    "remove",
    "sends_page",
    "set_status",
    "settle_cancelled",
    "settle_sends",
    "stats",
    "update_settings",
]
