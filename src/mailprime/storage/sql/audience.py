"""Audience tables (the AudienceStore port): contacts, lists, memberships, consent, segments.

Theory of operation
-------------------
Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (store.py decides which). A membership change and the consent
ledger line that is its evidence are written in the same transaction, so the ledger can never
miss a change nor record one that did not happen.

The ledger is append-only: the only function that touches existing lines is `erase`, which
replaces the address by its hash and drops the IP (domain.audience explains why something is
kept). Erasure also leaves a hashed suppression entry and rewrites events naming the address, in
one transaction.

A campaign's audience and the send gate's facts are read in storage/sql/recipients.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from mailprime.domain.address import Address
from mailprime.domain.audience import (
    Attributes,
    ConsentAction,
    ConsentEntry,
    ConsentEvidence,
    ConsentSource,
    Contact,
    ContactData,
    ContactInput,
    ErasureResult,
    ImportMode,
    ImportResult,
    JsonValue,
    MailingList,
    Membership,
    MembershipStatus,
    OptIn,
    Segment,
    SegmentFilter,
    email_hash,
)
from mailprime.domain.deliverability import (
    GLOBAL_SCOPE,
    Suppression,
    SuppressionReason,
)
from mailprime.domain.errors import AlreadyExists, Conflict, NotFound
from mailprime.domain.ids import ContactId, ListId, QueueId, SegmentId
from mailprime.storage.sql import deliverability
from mailprime.storage.sql.audience_rows import (
    attributes_of,
    consent_of,
    contact_of,
    list_of,
    membership_of,
    segment_of,
)
from mailprime.storage.sql.rows import to_event
from mailprime.storage.sql.schema import (
    campaigns,
    consent_ledger,
    contacts,
    events,
    mailing_lists,
    memberships,
    segments,
    soft_bounces,
    suppressions,
)
from mailprime.storage.sql.segment_sql import compile_segment
from mailprime.storage.sql.under_way import UNDER_WAY, campaigns_under_way

c, ml, ms, cl = contacts.c, mailing_lists.c, memberships.c, consent_ledger.c

MAX_PAGE = 10_000  # rows one keyset page returns at most


def email_key(email: str) -> tuple[str, str, str]:
    """(email as stored, its key, its domain): the domain normalised (IDNA), the key all
    lower-case (domain.audience's module doc says why). Raises InvalidAddress."""
    address = Address.parse(email)
    return str(address), address.key, address.domain


# ---- contacts --------------------------------------------------------------------------------

def _contact_values(item: ContactInput, now: datetime) -> dict[str, object]:
    stored, key, domain = email_key(item.email)
    return {"email": stored, "email_key": key, "email_hash": email_hash(key), "domain": domain,
            "name": item.name, "attributes": dict(item.attributes), "created_at": now,
            "updated_at": now}


def add_contact(conn: Connection, item: ContactInput, now: datetime) -> Contact:
    values = _contact_values(item, now)
    if conn.execute(select(c.id).where(c.email_key == values["email_key"])).first():
        raise AlreadyExists(f"contact {values['email']} already exists")
    new_id = conn.execute(insert(contacts).values(values).returning(c.id)).scalar_one()
    return get_contact_by_id(conn, ContactId(new_id)) or _missing(values["email"])


def _missing(what: object) -> Contact:
    raise NotFound(f"no contact {what}")


def get_contact(conn: Connection, email: str) -> Contact | None:
    row = conn.execute(select(contacts).where(c.email_key == email_key(email)[1])).first()
    return contact_of(row) if row else None


def get_contact_by_id(conn: Connection, contact_id: ContactId) -> Contact | None:
    row = conn.execute(select(contacts).where(c.id == contact_id)).first()
    return contact_of(row) if row else None


def update_contact(conn: Connection, contact_id: ContactId, name: str | None,
                   attributes: Attributes | None, now: datetime) -> Contact:
    values: dict[str, object] = {"updated_at": now}
    if name is not None:
        values["name"] = name
    if attributes is not None:
        values["attributes"] = dict(attributes)
    if not conn.execute(update(contacts).where(c.id == contact_id).values(values)).rowcount:
        raise NotFound(f"no contact #{contact_id}")
    return get_contact_by_id(conn, contact_id) or _missing(contact_id)


def record_engagement(conn: Connection, contact_id: ContactId, *, opened_at: datetime | None,
                      clicked_at: datetime | None) -> None:
    values = {k: v for k, v in (("last_opened_at", opened_at), ("last_clicked_at", clicked_at))
              if v is not None}
    if values:
        conn.execute(update(contacts).where(c.id == contact_id).values(values))


def contacts_page(conn: Connection, segment: SegmentFilter | None, after: ContactId | None,
                  limit: int, now: datetime) -> list[Contact]:
    stmt = (select(contacts).where(compile_segment(segment, conn.dialect.name, now))
            .order_by(c.id).limit(min(limit, MAX_PAGE)))
    if after is not None:
        stmt = stmt.where(c.id > after)
    return [contact_of(r) for r in conn.execute(stmt)]


def count_contacts(conn: Connection, segment: SegmentFilter | None, now: datetime) -> int:
    stmt = select(func.count()).select_from(contacts).where(
        compile_segment(segment, conn.dialect.name, now))
    return int(conn.execute(stmt).scalar_one())


# One statement for a batch's existing contacts (executemany), built once.
_UPDATE_CONTACT = (update(contacts).where(c.id == bindparam("b_id"))
                   .values(name=bindparam("b_name"), attributes=bindparam("b_attributes"),
                           updated_at=bindparam("b_updated")))


def upsert_contacts(conn: Connection, items: Sequence[ContactInput], *, mode: ImportMode,
                    list_id: ListId | None, status: MembershipStatus,
                    evidence: ConsentEvidence, now: datetime) -> ImportResult:
    """One batch of an import, in one transaction. Items must have distinct addresses (the
    caller deduplicates a batch). Attributes of existing contacts are merged, new keys winning;
    an unsubscribed membership is never renewed by an import."""
    rows = {v["email_key"]: v for v in (_contact_values(i, now) for i in items)}
    existing = {r.email_key: r for r in conn.execute(
        select(c.id, c.email_key, c.attributes).where(c.email_key.in_(list(rows))))}
    new = [v for k, v in rows.items() if k not in existing]
    if new:
        conn.execute(insert(contacts), new)
    updated = skipped = 0
    if mode is ImportMode.UPSERT and existing:
        conn.execute(_UPDATE_CONTACT, [
            {"b_id": row.id, "b_name": rows[key]["name"], "b_updated": now,
             "b_attributes": {**attributes_of(row.attributes),
                              **cast(dict[str, JsonValue], rows[key]["attributes"])}}
            for key, row in existing.items()])
        updated = len(existing)
    else:
        skipped = len(existing)
    subscribed = 0
    if list_id is not None:
        mailing_list = get_list_by_id(conn, list_id)
        if mailing_list is None:
            raise NotFound(f"no list #{list_id}")
        keys = list(rows) if mode is ImportMode.UPSERT else [k for k in rows if k not in existing]
        ids = {r.email_key: r.id for r in conn.execute(select(c.email_key, c.id)
                                                         .where(c.email_key.in_(keys)))}
        subscribed = _subscribe_many(conn, ids, mailing_list=mailing_list, status=status,
                                     evidence=evidence, now=now)
    return ImportResult(created=len(new), updated=updated, skipped=skipped, subscribed=subscribed)


# ---- lists -----------------------------------------------------------------------------------

def create_list(conn: Connection, name: str, description: str, opt_in: OptIn,
                now: datetime) -> MailingList:
    if conn.execute(select(ml.id).where(ml.name == name)).first():
        raise AlreadyExists(f"list {name!r} already exists")
    new_id = conn.execute(insert(mailing_lists).values(
        name=name, description=description, opt_in=opt_in.value, created_at=now)
        .returning(ml.id)).scalar_one()
    return MailingList(ListId(new_id), name, description, opt_in, now)


def get_list(conn: Connection, name: str) -> MailingList | None:
    row = conn.execute(select(mailing_lists).where(ml.name == name)).first()
    return list_of(row) if row else None


def get_list_by_id(conn: Connection, list_id: ListId) -> MailingList | None:
    row = conn.execute(select(mailing_lists).where(ml.id == list_id)).first()
    return list_of(row) if row else None


def _lock_list(conn: Connection, list_id: ListId, *, share: bool) -> MailingList | None:
    """The list row, locked until the transaction ends (PostgreSQL; SQLite's writer holds the
    whole database already and has no FOR UPDATE). A sign-up takes it FOR SHARE, a change of
    the opt-in rule FOR UPDATE: on READ COMMITTED the membership a sign-up has inserted but not
    committed is invisible to the rule's check, and the foreign key's KEY SHARE lock does not
    make an UPDATE of the list wait; this lock does, so the check runs after the sign-up
    commits (and sees it), or the sign-up waits for the rule change (and reads the new rule)."""
    stmt = select(mailing_lists).where(ml.id == list_id)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update(read=share)
    row = conn.execute(stmt).first()
    return list_of(row) if row else None


def list_lists(conn: Connection) -> list[tuple[MailingList, dict[MembershipStatus, int]]]:
    counts: dict[int, dict[MembershipStatus, int]] = {}
    for list_id, status, n in conn.execute(select(ms.list_id, ms.status, func.count())
                                           .group_by(ms.list_id, ms.status)):
        counts.setdefault(list_id, {})[MembershipStatus(status)] = int(n)
    return [(list_of(r), counts.get(r.id, {}))
            for r in conn.execute(select(mailing_lists).order_by(ml.name))]


def update_list(conn: Connection, list_id: ListId, name: str | None, description: str | None,
                opt_in: OptIn | None) -> MailingList:
    """Changes what is given, inside the writer's transaction: the opt-in rule is checked
    against the members as they are at the write, not as a caller read them earlier. The
    check is in the UPDATE itself (NOT EXISTS an unconfirmed member): on PostgreSQL (READ
    COMMITTED) a sign-up committed between a count and the UPDATE would otherwise leave an
    unconfirmed member on a single opt-in list. The list row is read FOR UPDATE first: a
    sign-up still in flight (not committed, so not counted) holds it FOR SHARE (`_lock_list`),
    and the check waits for it."""
    current = _lock_list(conn, list_id, share=False)
    if current is None:
        raise NotFound(f"no list #{list_id}")
    values: dict[str, object] = {}
    guard: list[ColumnElement[bool]] = []
    if name is not None and name != current.name:
        if conn.execute(select(ml.id).where(ml.name == name, ml.id != list_id)).first():
            raise AlreadyExists(f"list {name!r} already exists")
        values["name"] = name
    if description is not None:
        values["description"] = description
    if opt_in is not None and opt_in is not current.opt_in:
        if opt_in is OptIn.SINGLE:
            # A single opt-in list mails its unconfirmed members: people who never confirmed
            # a double opt-in would start getting mail they did not agree to.
            if waiting := _waiting(conn, list_id):
                raise _unconfirmed(current, waiting)
            guard.append(~exists().where(ms.list_id == list_id,
                                         ms.status == MembershipStatus.UNCONFIRMED.value))
        values["opt_in"] = opt_in.value
    if values:
        try:
            with conn.begin_nested():
                done = conn.execute(update(mailing_lists).where(ml.id == list_id, *guard)
                                    .values(**values)).rowcount
        except IntegrityError as exc:  # a concurrent rename to the same name
            raise AlreadyExists(f"list {name!r} already exists") from exc
        if not done:  # someone signed up (or the list went) since the count
            if get_list_by_id(conn, list_id) is None:
                raise NotFound(f"no list #{list_id}")
            raise _unconfirmed(current, _waiting(conn, list_id))
    return get_list_by_id(conn, list_id) or current


def _waiting(conn: Connection, list_id: ListId) -> int:
    """The list's unconfirmed members."""
    return int(conn.execute(select(func.count()).select_from(memberships).where(
        ms.list_id == list_id, ms.status == MembershipStatus.UNCONFIRMED.value)).scalar_one())


def _unconfirmed(mailing_list: MailingList, waiting: int) -> Conflict:
    return Conflict(f"list {mailing_list.name!r} has {waiting} unconfirmed member(s): it "
                    "cannot become single opt-in (they would be mailed without having "
                    "confirmed)")


def delete_list(conn: Connection, name: str) -> int:
    """Removes the list and its memberships (the ledger keeps its lines); returns members."""
    mailing_list = get_list(conn, name)
    if mailing_list is None:
        raise NotFound(f"no list {name!r}")
    members = conn.execute(delete(memberships).where(ms.list_id == mailing_list.id)).rowcount
    conn.execute(delete(mailing_lists).where(ml.id == mailing_list.id))
    return int(members)


# ---- memberships and the consent ledger -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Subject:
    """Whom and what a ledger line is about."""

    key: str  # email_key
    contact_id: ContactId | None
    mailing_list: MailingList | None
    purpose: str = ""  # when not a list


def _ledger_row(who: _Subject, action: ConsentAction, evidence: ConsentEvidence,
                now: datetime) -> dict[str, object]:
    lst = who.mailing_list
    return {"email": who.key, "contact_id": who.contact_id, "list_id": lst.id if lst else None,
            "purpose": lst.name if lst else who.purpose, "action": action.value,
            "source": evidence.source.value, "wording_version": evidence.wording_version[:64],
            "ip": evidence.ip[:64], "at": now}


def _ledger(conn: Connection, who: _Subject, action: ConsentAction, evidence: ConsentEvidence,
            now: datetime) -> None:
    conn.execute(insert(consent_ledger).values(_ledger_row(who, action, evidence, now)))


_ACTION = {MembershipStatus.UNCONFIRMED: ConsentAction.GIVEN,
           MembershipStatus.CONFIRMED: ConsentAction.CONFIRMED,
           MembershipStatus.UNSUBSCRIBED: ConsentAction.WITHDRAWN}


def _subscribe_many(conn: Connection, ids: dict[str, int], *, mailing_list: MailingList,
                    status: MembershipStatus, evidence: ConsentEvidence, now: datetime) -> int:
    """Adds each contact's membership, or confirms an unconfirmed one; never renews an
    unsubscribed one (only the person can: `set_membership`). For a batch of an import (email
    key -> contact id): one read of their memberships and one write per kind of change, not
    several statements per contact (a list import of a million contacts took minutes that
    way). Returns how many changed. The list row is held FOR SHARE (`_lock_list`) so that a
    change to single opt-in waits for these sign-ups."""
    _lock_list(conn, mailing_list.id, share=True)
    rows = conn.execute(select(ms.contact_id, ms.status).where(
        ms.list_id == mailing_list.id, ms.contact_id.in_(list(ids.values()))))
    current: dict[int, str] = {row.contact_id: row.status for row in rows}
    added: list[dict[str, object]] = []
    confirmed: list[int] = []
    ledger: list[dict[str, object]] = []
    for key, contact_id in ids.items():
        who = _Subject(key, ContactId(contact_id), mailing_list)
        was = current.get(contact_id)
        if was is None:
            added.append({"contact_id": contact_id, "list_id": mailing_list.id,
                          "status": status.value, "created_at": now, "updated_at": now})
            ledger.append(_ledger_row(who, ConsentAction.GIVEN, evidence, now))
            if status is MembershipStatus.CONFIRMED:
                ledger.append(_ledger_row(who, ConsentAction.CONFIRMED, evidence, now))
        elif was == MembershipStatus.UNCONFIRMED.value and status is MembershipStatus.CONFIRMED:
            confirmed.append(contact_id)
            ledger.append(_ledger_row(who, ConsentAction.CONFIRMED, evidence, now))
    if added:
        conn.execute(insert(memberships), added)
    if confirmed:
        conn.execute(update(memberships).where(ms.list_id == mailing_list.id,
                                               ms.contact_id.in_(confirmed))
                     .values(status=status.value, updated_at=now))
    if ledger:
        conn.execute(insert(consent_ledger), ledger)
    return len(added) + len(confirmed)


def set_membership(conn: Connection, contact_id: ContactId, list_id: ListId, *,
                   status: MembershipStatus, evidence: ConsentEvidence,
                   now: datetime) -> Membership:
    """Sets the status (adding the membership if needed) and records the act in the ledger;
    a status that does not change records nothing."""
    contact = get_contact_by_id(conn, contact_id) or _missing(f"#{contact_id}")
    mailing_list = _lock_list(conn, list_id, share=True)  # see _lock_list: vs update_list
    if mailing_list is None:
        raise NotFound(f"no list #{list_id}")
    current = get_membership(conn, contact_id, list_id)
    who = _Subject(contact.email_key, contact_id, mailing_list)
    if current is None:
        conn.execute(insert(memberships).values(contact_id=contact_id, list_id=list_id,
                                                status=status.value, created_at=now,
                                                updated_at=now))
        if status is not MembershipStatus.UNSUBSCRIBED:
            _ledger(conn, who, ConsentAction.GIVEN, evidence, now)
    elif current.status is not status:
        conn.execute(update(memberships).where(ms.contact_id == contact_id, ms.list_id == list_id)
                     .values(status=status.value, updated_at=now))
    if current is None or current.status is not status:
        if status is not MembershipStatus.UNCONFIRMED:
            _ledger(conn, who, _ACTION[status], evidence, now)
        elif current is not None:  # re-subscribing after an unsubscribe: consent given again
            _ledger(conn, who, ConsentAction.GIVEN, evidence, now)
    return get_membership(conn, contact_id, list_id) or _no_membership()


def _no_membership() -> Membership:
    raise NotFound("membership vanished")


def get_membership(conn: Connection, contact_id: ContactId, list_id: ListId) -> Membership | None:
    row = conn.execute(select(memberships).where(ms.contact_id == contact_id,
                                                 ms.list_id == list_id)).first()
    return membership_of(row) if row else None


def contact_memberships(conn: Connection, contact_id: ContactId
                        ) -> list[tuple[MailingList, Membership]]:
    rows = conn.execute(select(mailing_lists, memberships)
                        .join(memberships, ms.list_id == ml.id)
                        .where(ms.contact_id == contact_id).order_by(ml.name))
    return [(list_of(r), membership_of(r)) for r in rows]


def list_members(conn: Connection, list_id: ListId, status: MembershipStatus | None,
                 after: ContactId | None, limit: int) -> list[tuple[Contact, Membership]]:
    stmt = (select(contacts, ms.contact_id, ms.list_id, ms.status,
                   ms.created_at.label("m_created"), ms.updated_at.label("m_updated"))
            .join(memberships, ms.contact_id == c.id).where(ms.list_id == list_id)
            .order_by(c.id).limit(min(limit, MAX_PAGE)))
    if status is not None:
        stmt = stmt.where(ms.status == status.value)
    if after is not None:
        stmt = stmt.where(c.id > after)
    out = []
    for row in conn.execute(stmt):
        m = row._mapping
        out.append((contact_of(row), Membership(ContactId(m["contact_id"]), ListId(m["list_id"]),
                                              MembershipStatus(m["status"]), m["m_created"],
                                              m["m_updated"])))
    return out


def record_consent(conn: Connection, email: str, *, purpose: str, action: ConsentAction,
                   evidence: ConsentEvidence, now: datetime) -> None:
    """A ledger line for a purpose other than a list (transactional mail, a form's terms)."""
    key = email_key(email)[1]
    contact_id = conn.execute(select(c.id).where(c.email_key == key)).scalar()
    who = _Subject(key, ContactId(contact_id) if contact_id is not None else None, None,
                   purpose[:200])
    _ledger(conn, who, action, evidence, now)


def consent_entries(conn: Connection, email: str) -> list[ConsentEntry]:
    key = email_key(email)[1]
    rows = conn.execute(select(consent_ledger).where(cl.email.in_((key, email_hash(key))))
                        .order_by(cl.id))
    return [consent_of(r) for r in rows]


# ---- segments --------------------------------------------------------------------------------

def create_segment(conn: Connection, name: str, expression: str, now: datetime) -> Segment:
    if conn.execute(select(segments.c.id).where(segments.c.name == name)).first():
        raise AlreadyExists(f"segment {name!r} already exists")
    try:
        new_id = conn.execute(insert(segments).values(name=name, expression=expression,
                                                      created_at=now)
                              .returning(segments.c.id)).scalar_one()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise AlreadyExists(f"segment {name!r} already exists") from exc
    return Segment(SegmentId(new_id), name, expression, now)


def get_segment(conn: Connection, name: str) -> Segment | None:
    row = conn.execute(select(segments).where(segments.c.name == name)).first()
    return segment_of(row) if row else None


def list_segments(conn: Connection) -> list[Segment]:
    return [segment_of(r) for r in conn.execute(select(segments).order_by(segments.c.name))]


def delete_segment(conn: Connection, name: str) -> bool:
    return bool(conn.execute(delete(segments).where(segments.c.name == name)).rowcount)


def update_segment(conn: Connection, segment_id: SegmentId, name: str | None,
                   expression: str | None) -> Segment:
    """Renames and/or replaces the expression (the caller parsed it), in one transaction with
    the check that no campaign under way uses the segment: such a campaign was pre-flighted
    with the old audience and resumes its walk with whatever the segment then says. The
    check is also in the UPDATE itself (NOT EXISTS such a campaign): on PostgreSQL (READ
    COMMITTED) a start committed between the first look and the UPDATE would otherwise change
    the audience of a campaign already scheduled or sending."""
    row = conn.execute(select(segments).where(segments.c.id == segment_id)).first()
    if row is None:
        raise NotFound(f"no segment #{segment_id}")
    current = segment_of(row)
    values: dict[str, object] = {}
    guard: list[ColumnElement[bool]] = []
    if name is not None and name != current.name:
        if conn.execute(select(segments.c.id).where(segments.c.name == name,
                                                    segments.c.id != segment_id)).first():
            raise AlreadyExists(f"segment {name!r} already exists")
        values["name"] = name
    if expression is not None and expression != current.expression:
        _refuse_if_used(conn, current)
        guard.append(~exists().where(campaigns.c.segment_id == segment_id,
                                     campaigns.c.status.in_(UNDER_WAY)))
        values["expression"] = expression
    if values:
        try:
            with conn.begin_nested():
                done = conn.execute(update(segments).where(segments.c.id == segment_id, *guard)
                                    .values(**values)).rowcount
        except IntegrityError as exc:  # a concurrent rename to the same name
            raise AlreadyExists(f"segment {name!r} already exists") from exc
        if not done:  # a campaign using it started (or the segment went) since the look
            if conn.execute(select(segments.c.id).where(segments.c.id == segment_id)).first() \
                    is None:
                raise NotFound(f"no segment #{segment_id}")
            _refuse_if_used(conn, current)
            raise Conflict(f"segment {current.name!r} changed meanwhile: read it again")
    updated = conn.execute(select(segments).where(segments.c.id == segment_id)).first()
    return segment_of(updated) if updated is not None else current


def _refuse_if_used(conn: Connection, segment: Segment) -> None:
    """Conflict if a campaign under way uses the segment (storage.sql.under_way)."""
    users = campaigns_under_way(conn, campaigns.c.segment_id == segment.id)
    if users:
        raise Conflict(f"segment {segment.name!r} is used by campaign(s) under way "
                       f"({', '.join(repr(u) for u in users)}): its expression cannot "
                       "change until they are sent or cancelled")


# ---- GDPR: export and erasure ----------------------------------------------------------------

def contact_data(conn: Connection, email: str, event_limit: int) -> ContactData:
    key = email_key(email)[1]
    contact = get_contact(conn, key)
    # Events name the address in `recipient` (as given, hence lower()); erased ones the hash.
    rows = conn.execute(select(events).where(
        func.lower(events.c.recipient).in_((key, email_hash(key))))
        .order_by(events.c.id).limit(event_limit))
    return ContactData(
        email=key, contact=contact,
        memberships=contact_memberships(conn, contact.id) if contact else [],
        consent=consent_entries(conn, key), events=[to_event(r) for r in rows],
        suppressions=_suppressions_of(conn, key))


def _suppressions_of(conn: Connection, key: str) -> list[Suppression]:
    rows = conn.execute(select(suppressions).where(
        suppressions.c.address.in_((key, email_hash(key)))).order_by(suppressions.c.scope))
    return [Suppression(address=r.address, scope=r.scope, reason=SuppressionReason(r.reason),
                        created_at=r.created_at, detail=r.detail,
                        queue_id=QueueId(r.queue_id) if r.queue_id else None) for r in rows]


def erase(conn: Connection, email: str, now: datetime) -> ErasureResult:
    """Removes the contact and its memberships, pseudonymises the ledger and the events, and
    leaves one hashed global suppression; mailboxes are not touched (issue 5)."""
    key = email_key(email)[1]
    hashed = email_hash(key)
    contact_id = conn.execute(select(c.id).where(c.email_key == key)).scalar()
    removed_members = 0
    if contact_id is not None:
        removed_members = int(conn.execute(delete(memberships)
                                           .where(ms.contact_id == contact_id)).rowcount)
        conn.execute(delete(contacts).where(c.id == contact_id))
    # The withdrawal itself, then every line's address and IP replaced: the ledger still proves
    # that consent existed and when it ended (GDPR Art. 7(1), 17(3)(e)), for nobody in particular.
    had_consent = conn.execute(select(cl.id).where(cl.email == key).limit(1)).first() is not None
    if had_consent:
        who = _Subject(key, None, None, "erasure")
        _ledger(conn, who, ConsentAction.WITHDRAWN, ConsentEvidence(ConsentSource.ERASURE), now)
    ledger = int(conn.execute(update(consent_ledger).where(cl.email == key)
                              .values(email=hashed, ip="", contact_id=None)).rowcount)
    # Events: the recipient, and the address wherever a detail quotes it (a bounce diagnostic).
    pattern = re.compile(re.escape(key), re.IGNORECASE)
    rows = conn.execute(select(events.c.id, events.c.detail)
                        .where(func.lower(events.c.recipient) == key)).all()
    for event_id, detail in rows:
        conn.execute(update(events).where(events.c.id == event_id)
                     .values(recipient=hashed, detail=pattern.sub(hashed, detail or "")))
    # Suppressions: clear entries become one hashed global entry (the strongest: every domain).
    clear = conn.execute(select(suppressions).where(suppressions.c.address == key)).all()
    reason = (SuppressionReason(clear[0].reason) if clear else SuppressionReason.MANUAL)
    conn.execute(delete(suppressions).where(suppressions.c.address == key))
    conn.execute(delete(soft_bounces).where(soft_bounces.c.address == key))
    deliverability.suppress(conn, Suppression(address=hashed, scope=GLOBAL_SCOPE, reason=reason,
                                              created_at=now, detail="erased on request (GDPR Art. 17)"))
    return ErasureResult(contact=contact_id is not None, memberships=removed_members,
                         consent_entries=ledger, events=len(rows), suppressions=len(clear))
