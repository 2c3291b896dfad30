"""The audience tables' rows as domain objects (storage/sql/audience.py writes and reads them,
storage/sql/recipients.py reads a campaign's audience with them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import type_coerce
from sqlalchemy.engine import Connection, Dialect, Row
from sqlalchemy.sql import Select
from sqlalchemy.types import NullType

from mailprime.domain.audience import (
    Attributes,
    ConsentAction,
    ConsentEntry,
    ConsentSource,
    Contact,
    JsonValue,
    MailingList,
    Membership,
    MembershipStatus,
    OptIn,
    Segment,
)
from mailprime.domain.ids import ContactId, ListId, SegmentId
from mailprime.storage.sql.schema import contacts

c = contacts.c


def attributes_of(value: object) -> Attributes:
    if isinstance(value, str):  # some SQLite paths hand the JSON back as text
        value = json.loads(value)
    return cast(dict[str, JsonValue], value) if isinstance(value, dict) else {}


def contact_of(row: Row[Any]) -> Contact:
    m = row._mapping
    return Contact(id=ContactId(m["id"]), email=m["email"], email_key=m["email_key"],
                   name=m["name"], attributes=attributes_of(m["attributes"]),
                   created_at=m["created_at"], updated_at=m["updated_at"],
                   last_opened_at=m["last_opened_at"], last_clicked_at=m["last_clicked_at"])


# A Contact's columns as the driver gives them (no SQLAlchemy processing per value), for the
# reads of many contacts at once (`contacts_of`): a dispatch batch reads hundreds, and the
# per-value processors and the row mapping took more CPU than SQLite's own work for them.
_CONTACT_COLUMNS = (c.id, c.email, c.email_key, c.name, c.attributes, c.created_at, c.updated_at,
                    c.last_opened_at, c.last_clicked_at)
RAW_CONTACT = tuple(type_coerce(col, NullType()).label(col.name) for col in _CONTACT_COLUMNS)
_MISSING = object()


def timestamps_of(dialect: Dialect) -> Callable[[object], datetime | None]:
    """The UtcDateTime result processor of `dialect` (what reading a column through SQLAlchemy
    does to its value), each distinct value converted once: contacts imported together share
    their timestamps."""
    process = cast(Callable[[object], datetime | None] | None,
                   c.created_at.type.dialect_impl(dialect).result_processor(dialect, None))
    memo: dict[object, datetime | None] = {None: None}

    def read(raw: object) -> datetime | None:
        value = memo.get(raw, _MISSING)
        if value is _MISSING:
            value = memo[raw] = process(raw) if process is not None else cast(datetime, raw)
        return cast(datetime | None, value)

    return read


def contacts_of(conn: Connection, stmt: Select[*tuple[Any, ...]]) -> list[Contact]:
    """The contacts `stmt` (a select of `RAW_CONTACT`) finds, in its order."""
    stamp = timestamps_of(conn.dialect)
    return [Contact(ContactId(cid), email, key, name, attributes_of(attributes),
                    cast(datetime, stamp(created)), cast(datetime, stamp(updated)),
                    stamp(opened), stamp(clicked))
            for cid, email, key, name, attributes, created, updated, opened, clicked
            in conn.execute(stmt)]


def list_of(row: Row[Any]) -> MailingList:
    m = row._mapping
    return MailingList(id=ListId(m["id"]), name=m["name"], description=m["description"],
                       opt_in=OptIn(m["opt_in"]), created_at=m["created_at"])


def membership_of(row: Row[Any]) -> Membership:
    m = row._mapping
    return Membership(contact_id=ContactId(m["contact_id"]), list_id=ListId(m["list_id"]),
                      status=MembershipStatus(m["status"]), created_at=m["created_at"],
                      updated_at=m["updated_at"])


def consent_of(row: Row[Any]) -> ConsentEntry:
    m = row._mapping
    return ConsentEntry(
        id=int(m["id"]), email=m["email"],
        contact_id=ContactId(m["contact_id"]) if m["contact_id"] is not None else None,
        list_id=ListId(m["list_id"]) if m["list_id"] is not None else None,
        purpose=m["purpose"], action=ConsentAction(m["action"]), source=ConsentSource(m["source"]),
        wording_version=m["wording_version"], ip=m["ip"], at=m["at"])


def segment_of(row: Row[Any]) -> Segment:
    m = row._mapping
    return Segment(id=SegmentId(m["id"]), name=m["name"], expression=m["expression"],
                   created_at=m["created_at"])
