"""A campaign's recipients and the send gate's facts (the AudienceStore port's reads for
sending), on the audience tables of storage/sql/audience.py.

Campaign audiences are read by keyset pagination (contacts.id > after, ORDER BY id, LIMIT n): a
page costs the same at the millionth contact as at the first, and a dispatcher that crashes
resumes from the last id it handled. The suppression list is read in the same statement (storage
owns both tables), matching the clear address and its hash, so an address erased and re-imported
stays unmailed. The gate's facts for a batch are three statements per chunk of addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, exists, func, literal, or_, select, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from mailprime.domain.address import MAX_PATH
from mailprime.domain.audience import (
    Addressee,
    Contact,
    MembershipStatus,
    OptIn,
    SegmentFilter,
    email_hash,
)
from mailprime.domain.deliverability import (
    GLOBAL_SCOPE,
    Suppression,
    SuppressionReason,
    normalize_address,
)
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import ContactId, ListId, QueueId
from mailprime.storage.ports import AddressFacts, GateFacts
from mailprime.storage.sql.audience import MAX_PAGE, email_key
from mailprime.storage.sql.audience_rows import (
    RAW_CONTACT,
    attributes_of,
    contacts_of,
    list_of,
    timestamps_of,
)
from mailprime.storage.sql.bulk import placeholders
from mailprime.storage.sql.schema import contacts, mailing_lists, memberships, suppressions
from mailprime.storage.sql.segment_sql import compile_segment

c, ml, ms = contacts.c, mailing_lists.c, memberships.c


def _mailable(list_ids: Sequence[ListId]) -> ColumnElement[bool]:
    """A membership of one of `list_ids` that may be mailed (the module doc)."""
    return exists(select(literal(1)).select_from(
        memberships.join(mailing_lists, ml.id == ms.list_id)).where(
        ms.contact_id == c.id, ms.list_id.in_(list(list_ids)),
        or_(ms.status == MembershipStatus.CONFIRMED.value,
            and_(ml.opt_in == OptIn.SINGLE.value,
                 ms.status == MembershipStatus.UNCONFIRMED.value))))


def _unsuppressed(sending_domain: str) -> ColumnElement[bool]:
    return ~exists(select(literal(1)).select_from(suppressions).where(
        suppressions.c.address.in_((c.email_key, c.email_hash)),
        suppressions.c.scope.in_({GLOBAL_SCOPE, sending_domain.lower()})))


def _audience_select(conn: Connection, columns: Sequence[ColumnElement[Any]],
                     list_ids: Sequence[ListId], segment: SegmentFilter | None, *,
                     after: ContactId | None, limit: int, sending_domain: str,
                     now: datetime) -> Select[*tuple[Any, ...]]:
    stmt = (select(*columns).select_from(contacts)
            .where(_mailable(list_ids), _unsuppressed(sending_domain),
                   compile_segment(segment, conn.dialect.name, now))
            .order_by(c.id).limit(min(limit, MAX_PAGE)))
    return stmt.where(c.id > after) if after is not None else stmt


def audience(conn: Connection, list_ids: Sequence[ListId], segment: SegmentFilter | None, *,
             after: ContactId | None, limit: int, sending_domain: str,
             now: datetime) -> list[Contact]:
    if not list_ids:
        return []
    return contacts_of(conn, _audience_select(conn, RAW_CONTACT, list_ids, segment, after=after,
                                            limit=limit, sending_domain=sending_domain, now=now))


# An Addressee's columns as the driver gives them (see RAW_CONTACT).
_RAW_ADDRESSEE = RAW_CONTACT[:2] + RAW_CONTACT[3:5]


def audience_page(conn: Connection, list_ids: Sequence[ListId],
                  segment: SegmentFilter | None, *, after: ContactId | None, limit: int,
                  sending_domain: str, now: datetime) -> list[Addressee]:
    """`audience` as Addressees: no key, no timestamps (four conversions a contact, ~3 us of
    a dispatch read's ~10)."""
    if not list_ids:
        return []
    stmt = _audience_select(conn, _RAW_ADDRESSEE, list_ids, segment, after=after, limit=limit,
                            sending_domain=sending_domain, now=now)
    return [Addressee(ContactId(cid), email, name, attributes_of(attributes))
            for cid, email, name, attributes in conn.execute(stmt)]


def count_audience(conn: Connection, list_ids: Sequence[ListId], segment: SegmentFilter | None,
                   sending_domain: str, now: datetime) -> int:
    if not list_ids:
        return 0
    stmt = select(func.count()).select_from(contacts).where(
        _mailable(list_ids), _unsuppressed(sending_domain),
        compile_segment(segment, conn.dialect.name, now))
    return int(conn.execute(stmt).scalar_one())


GATE_CHUNK = 400  # addresses per IN (...): two bound values each (key and hash), under 999
_SUPPRESSION_COLUMNS = tuple(type_coerce(col, NullType()).label(col.name) for col in (
    suppressions.c.address, suppressions.c.scope, suppressions.c.reason,
    suppressions.c.created_at, suppressions.c.detail, suppressions.c.queue_id))
_MEMBERSHIP_STATUS = {s.value: s for s in MembershipStatus}


def _contacts_by_key(conn: Connection, sqlite: bool, keys: Sequence[str]) -> dict[str, ContactId]:
    if not keys:
        return {}
    if sqlite:
        rows: Iterable[Sequence[Any]] = conn.exec_driver_sql(
            f"SELECT id, email_key FROM contacts WHERE email_key IN ({placeholders(len(keys))})",  # noqa: S608
            tuple(keys))
    else:
        rows = conn.execute(select(c.id, c.email_key).where(c.email_key.in_(keys)))
    return {key: ContactId(cid) for cid, key in rows}


def _contact_ids(conn: Connection, sqlite: bool, addresses: Sequence[str]
                 ) -> tuple[list[str | None], dict[int, str], dict[str, ContactId]]:
    """(each address's email_key, None where it is not an address; why not, by index; the
    contacts that have those keys).

    Address.parse is most of the gate's CPU for an address, and a campaign asks about its
    contacts' addresses as stored, so they are looked up as they are first: an ASCII address
    of at most MAX_PATH octets that, lower-cased, is some contact's key is that contact's
    address. (Keys are only ever what `email_key` makes, and for such an address it would do
    no more than lower-case it: no white space or angle brackets around it, a local part valid
    whatever its case, a domain already in A-labels, lower-case, without a final dot, which
    normalize_domain leaves as it is.) The others go through `email_key`, as every address
    used to."""
    lowered = [a.lower() if a.isascii() and len(a) <= MAX_PATH else None for a in addresses]
    tried = {k for k in lowered if k is not None}
    ids = _contacts_by_key(conn, sqlite, list(tried))
    keys: list[str | None] = []
    invalid: dict[int, str] = {}
    for i, address in enumerate(addresses):
        known = lowered[i]
        if known is not None and known in ids:
            keys.append(known)
            continue
        try:
            keys.append(email_key(address)[1])
        except InvalidAddress as exc:
            keys.append(None)
            invalid[i] = exc.message
    rest = list({k for k in keys if k is not None and k not in tried})
    if rest:
        ids.update(_contacts_by_key(conn, sqlite, rest))
    return keys, invalid, ids


def send_gate_facts(conn: Connection, addresses: Sequence[str], sending_domain: str,
                    list_ids: Sequence[ListId]) -> GateFacts:
    """The send gate's facts for a batch (AudienceStore.send_gate_facts): three statements
    per chunk of addresses (suppressions, contacts, memberships) and one for the lists,
    where SendGate.check makes four per address. The suppression that applies is chosen as
    deliverability.find_suppression chooses it: the clear address or its hash, a global
    entry before the domain's.

    A dispatch batch asks about hundreds of addresses, so the three statements run on SQLite
    as SQL text with "?" for each value (SQLAlchemy's expansion of an IN list costs about a
    microsecond a value), and every backend's rows are read as the driver gives them."""
    lists = {ListId(r.id): list_of(r) for r in conn.execute(
        select(mailing_lists).where(ml.id.in_(list(set(list_ids)))))} if list_ids else {}
    scopes = sorted({GLOBAL_SCOPE, sending_domain.lower()})
    sqlite = conn.dialect.name == "sqlite"
    stamp = timestamps_of(conn.dialect)
    out: list[AddressFacts] = []
    for start in range(0, len(addresses), GATE_CHUNK):
        chunk = addresses[start:start + GATE_CHUNK]
        clear = [normalize_address(a) for a in chunk]
        hashed = {k: email_hash(k) for k in set(clear)}
        looked = [*hashed, *hashed.values()]
        if sqlite:
            rows: Iterable[Sequence[Any]] = conn.exec_driver_sql(
                "SELECT address, scope, reason, created_at, detail, queue_id FROM suppressions "  # noqa: S608
                f"WHERE address IN ({placeholders(len(looked))}) "
                f"AND scope IN ({placeholders(len(scopes))})", (*looked, *scopes))
        else:
            rows = conn.execute(select(*_SUPPRESSION_COLUMNS).where(
                suppressions.c.address.in_(looked), suppressions.c.scope.in_(scopes)))
        found: dict[str, list[Suppression]] = {}
        for address, scope, reason, created_at, detail, queue_id in rows:
            found.setdefault(address, []).append(Suppression(
                address=address, scope=scope, reason=SuppressionReason(reason),
                created_at=cast(datetime, stamp(created_at)), detail=detail,
                queue_id=QueueId(queue_id) if queue_id else None))
        keys, invalid, ids = _contact_ids(conn, sqlite, chunk)
        statuses: dict[ContactId, dict[ListId, MembershipStatus]] = {}
        if ids and lists:
            who, which = list(ids.values()), list(lists)
            if sqlite:
                rows = conn.exec_driver_sql(
                    "SELECT contact_id, list_id, status FROM memberships "  # noqa: S608
                    f"WHERE contact_id IN ({placeholders(len(who))}) "
                    f"AND list_id IN ({placeholders(len(which))})", (*who, *which))
            else:
                rows = conn.execute(select(ms.contact_id, ms.list_id, ms.status).where(
                    ms.contact_id.in_(who), ms.list_id.in_(which)))
            for contact_id, list_id, status in rows:
                statuses.setdefault(ContactId(contact_id), {})[ListId(list_id)] = \
                    _MEMBERSHIP_STATUS[status]
        for i, key in enumerate(clear):
            suppression = None
            if found:
                entries = found.get(key, []) + found.get(hashed[key], [])
                entries.sort(key=lambda e: e.scope != GLOBAL_SCOPE)
                suppression = entries[0] if entries else None
            contact_id = ids.get(keys[i] or "")
            out.append(AddressFacts(
                suppression=suppression, invalid=invalid.get(i, ""), contact_id=contact_id,
                memberships=statuses.get(contact_id, {}) if contact_id is not None else {}))
    return GateFacts(lists, out)
