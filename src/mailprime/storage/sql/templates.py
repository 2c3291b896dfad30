"""Template operations (the TemplateStore port): create, get, list, update, delete.

Each function takes a connection inside a transaction: writes run on the group-commit writer
thread, reads on the read pool (store.py decides which). A name is unique: the check before the
insert gives the friendly error, the UNIQUE constraint settles two writers racing (on SQLite
there is one writer; on PostgreSQL the loser's IntegrityError becomes AlreadyExists too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mailprime.domain.errors import AlreadyExists, Conflict, NotFound
from mailprime.domain.ids import TemplateId
from mailprime.domain.templates import Template, TemplateFields
from mailprime.storage.sql.schema import campaigns, templates
from mailprime.storage.sql.under_way import campaigns_under_way

MAX_LIST = 10_000


def _to_template(row: Any) -> Template:
    return Template(id=TemplateId(row.id), name=row.name, subject=row.subject, html=row.html,
                    text=row.text, created_at=row.created_at, updated_at=row.updated_at)


def _by_name(conn: Connection, name: str) -> Template | None:
    row = conn.execute(select(templates).where(templates.c.name == name)).first()
    return _to_template(row) if row is not None else None


def get(conn: Connection, template_id: TemplateId) -> Template | None:
    row = conn.execute(select(templates).where(templates.c.id == template_id)).first()
    return _to_template(row) if row is not None else None


def get_by_name(conn: Connection, name: str) -> Template | None:
    return _by_name(conn, name)


def _values(fields: TemplateFields) -> dict[str, object]:
    return {"name": fields.name, "subject": fields.subject, "html": fields.html,
            "text": fields.text}


def create(conn: Connection, fields: TemplateFields, now: datetime) -> Template:
    if _by_name(conn, fields.name) is not None:
        raise AlreadyExists(f"a template named {fields.name!r} already exists")
    try:
        with conn.begin_nested():
            new_id = conn.execute(insert(templates).values(
                **_values(fields), created_at=now, updated_at=now)).inserted_primary_key
    except IntegrityError as exc:
        raise AlreadyExists(f"a template named {fields.name!r} already exists") from exc
    assert new_id is not None
    created = get(conn, TemplateId(int(new_id[0])))
    assert created is not None
    return created


def list_all(conn: Connection, limit: int) -> list[Template]:
    stmt = select(templates).order_by(templates.c.name).limit(max(1, min(limit, MAX_LIST)))
    return [_to_template(row) for row in conn.execute(stmt)]


def _refuse_if_under_way(conn: Connection, template_id: TemplateId, doing: str) -> None:
    """Conflict if a campaign under way uses the template (storage.sql.under_way)."""
    users = campaigns_under_way(conn, campaigns.c.template_id == template_id)
    if users:
        raise Conflict(f"the template is used by campaign(s) under way "
                       f"({', '.join(repr(u) for u in users)}): it cannot be {doing} until "
                       "they are sent or cancelled. Make a new template, and point a "
                       "scheduled campaign at it; a paused or sending one keeps its content")


def replace(conn: Connection, template_id: TemplateId, fields: TemplateFields,
            now: datetime) -> Template:
    """Replaces the template; only its name may change while a campaign under way uses it
    (`_refuse_if_under_way`)."""
    current = get(conn, template_id)
    if current is None:
        raise NotFound(f"no template {template_id}")
    if (fields.subject, fields.html, fields.text) != (current.subject, current.html,
                                                      current.text):
        _refuse_if_under_way(conn, template_id, "changed")
    other = _by_name(conn, fields.name)
    if other is not None and other.id != template_id:
        raise AlreadyExists(f"a template named {fields.name!r} already exists")
    try:
        with conn.begin_nested():
            conn.execute(update(templates).where(templates.c.id == template_id)
                         .values(**_values(fields), updated_at=now))
    except IntegrityError as exc:
        raise AlreadyExists(f"a template named {fields.name!r} already exists") from exc
    updated = get(conn, template_id)
    assert updated is not None
    return updated


def remove(conn: Connection, template_id: TemplateId) -> bool:
    _refuse_if_under_way(conn, template_id, "deleted")
    return conn.execute(delete(templates).where(templates.c.id == template_id)).rowcount > 0


__all__ = ["create", "get", "get_by_name", "list_all", "remove", "replace"]
