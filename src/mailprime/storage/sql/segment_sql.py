"""Segment filters (domain.audience syntax tree) compiled to SQLAlchemy Core expressions.

Theory of operation
-------------------
marketing.segments turns the operator's text into a syntax tree; this module turns the tree into
a WHERE clause over `contacts`. Nothing here concatenates SQL: every value, and every attribute
path, is a bound parameter, so a filter can never change the statement's shape.

JSON attributes are read per backend: on SQLite with json_extract/json_type and a "$.a.b" path
(keys quoted), on PostgreSQL with the JSONB operators #> and #>> and a text[] path. A comparison
only matches values of its own JSON type: `attributes.age >= 30` is false for an age stored as
the string "30" or missing, on both backends (SQLite would otherwise compare text with numbers by
its affinity rules, and PostgreSQL's cast would fail on "abc"; on PostgreSQL the cast sits inside
a CASE so it runs only on numbers). `!=` is the negation of `=` and so also matches contacts that
lack the attribute; that is what an operator writing `plan != "pro"` expects.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    Float,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from mailprime.domain.audience import (
    And,
    Compare,
    CompareOp,
    Contains,
    Engaged,
    Engagement,
    Exists,
    Field,
    FieldRef,
    InList,
    InValues,
    MembershipStatus,
    Not,
    Or,
    Scalar,
    SegmentFilter,
)
from mailprime.storage.sql.schema import contacts, mailing_lists, memberships

Cond = ColumnElement[bool]


class SegmentCompiler:
    """One compiler per statement: it knows the backend and the time "within N days" counts from."""

    def __init__(self, dialect_name: str, now: datetime) -> None:
        self._pg = dialect_name == "postgresql"
        self._now = now

    def compile(self, node: SegmentFilter) -> Cond:
        if isinstance(node, And):
            return and_(*(self.compile(i) for i in node.items))
        if isinstance(node, Or):
            return or_(*(self.compile(i) for i in node.items))
        if isinstance(node, Not):
            return not_(self.compile(node.item))
        if isinstance(node, InList):
            return exists(select(literal(1)).select_from(
                memberships.join(mailing_lists, mailing_lists.c.id == memberships.c.list_id)
            ).where(memberships.c.contact_id == contacts.c.id, mailing_lists.c.name == node.name,
                    memberships.c.status != MembershipStatus.UNSUBSCRIBED.value))
        if isinstance(node, Engaged):
            column = (contacts.c.last_opened_at if node.kind is Engagement.OPENED
                      else contacts.c.last_clicked_at)
            return _known(column >= self._now - timedelta(days=node.days))
        if node.ref.field is Field.ATTRIBUTE:
            return _known(self._attribute(node))
        return self._column(node)

    # ---- plain columns (email, domain, name) -------------------------------------------------

    def _column(self, node: Compare | Contains | InValues | Exists) -> Cond:
        field = node.ref.field
        column = {Field.EMAIL: contacts.c.email_key, Field.DOMAIN: contacts.c.domain,
                  Field.NAME: contacts.c.name}[field]
        fold = field is not Field.NAME  # email_key and domain are stored lower-cased

        def text(value: Scalar) -> str:
            return str(value).lower() if fold else str(value)

        if isinstance(node, Exists):
            return column != "" if field is Field.NAME else true()
        if isinstance(node, Contains):
            return func.lower(column).contains(str(node.value).lower(), autoescape=True)
        if isinstance(node, InValues):
            return column.in_([text(v) for v in node.values])
        return _compare(column, node.op, text(node.value))

    # ---- JSON attributes -----------------------------------------------------------------------

    def _attribute(self, node: Compare | Contains | InValues | Exists) -> Cond:
        path = node.ref.path
        if isinstance(node, Exists):
            return self._json_type(path).is_not(None)
        if isinstance(node, InValues):
            return or_(false(), *(self._equals(path, v) for v in node.values))
        if isinstance(node, Contains):
            return self._contains(path, node.value)
        if node.op is CompareOp.EQ:
            return self._equals(path, node.value)
        if node.op is CompareOp.NE:
            return not_(_known(self._equals(path, node.value)))
        if isinstance(node.value, bool):
            return false()  # order has no meaning for true/false (the parser refuses it too)
        if isinstance(node.value, str):
            return and_(self._is_string(path), _compare(self._text(path), node.op, node.value))
        return and_(self._is_number(path), _compare(self._number(path), node.op, node.value))

    def _equals(self, path: tuple[str, ...], value: Scalar) -> Cond:
        if isinstance(value, bool):
            wanted = ("boolean",) if self._pg else ("true",) if value else ("false",)
            check = self._json_type(path).in_(wanted)
            if self._pg:
                return and_(check, self._text(path) == ("true" if value else "false"))
            return check
        if isinstance(value, str):
            return and_(self._is_string(path), self._text(path) == value)
        return and_(self._is_number(path), self._number(path) == value)

    def _contains(self, path: tuple[str, ...], value: Scalar) -> Cond:
        """A string holding `value` (case-insensitive), or an array with `value` as an element."""
        in_string = and_(self._is_string(path),
                         func.lower(self._text(path)).contains(str(value).lower(), autoescape=True))
        if self._pg:
            element = func.jsonb_build_array(cast(value, Text) if isinstance(value, str) else value)
            in_array = and_(self._json_type(path) == "array", self._json(path).op("@>")(element))
        else:
            each = func.json_each(contacts.c.attributes, _sqlite_path(path)).table_valued("value")
            in_array = and_(self._json_type(path) == "array",
                            exists(select(literal(1)).select_from(each)
                                   .where(each.c.value == value)))
        return or_(in_string, in_array)

    # -- per-backend JSON access --

    def _json(self, path: tuple[str, ...]) -> ColumnElement[object]:
        return contacts.c.attributes.op("#>")(cast(list(path), ARRAY(Text)))  # PostgreSQL only

    def _json_type(self, path: tuple[str, ...]) -> ColumnElement[str]:
        if self._pg:
            return func.jsonb_typeof(self._json(path))
        return func.json_type(contacts.c.attributes, _sqlite_path(path))

    def _text(self, path: tuple[str, ...]) -> ColumnElement[str]:
        if self._pg:
            return contacts.c.attributes.op("#>>", return_type=Text)(cast(list(path), ARRAY(Text)))
        return func.json_extract(contacts.c.attributes, _sqlite_path(path), type_=Text)

    def _number(self, path: tuple[str, ...]) -> ColumnElement[float]:
        if self._pg:  # the cast only ever sees numbers (see the module doc)
            return case((self._is_number(path), cast(self._text(path), Float)), else_=None)
        return func.json_extract(contacts.c.attributes, _sqlite_path(path), type_=Float)

    def _is_string(self, path: tuple[str, ...]) -> Cond:
        return self._json_type(path) == ("string" if self._pg else "text")

    def _is_number(self, path: tuple[str, ...]) -> Cond:
        if self._pg:
            return self._json_type(path) == "number"
        return self._json_type(path).in_(("integer", "real"))


def _known(condition: Cond) -> Cond:
    """SQL's NULL (a missing attribute, a contact never opened) made false, so that `not`
    means not: NOT (NULL) would be NULL and drop the row from both a filter and its negation."""
    return func.coalesce(condition, false(), type_=Boolean)


def _sqlite_path(path: tuple[str, ...]) -> str:
    # Keys are [A-Za-z0-9_-] (marketing.segments), so quoting them cannot break the path; it is
    # bound as a parameter all the same.
    return "$" + "".join(f'."{key}"' for key in path)


def _compare(left: ColumnElement[str] | ColumnElement[float], op: CompareOp,
             value: str | int | float) -> Cond:
    if op is CompareOp.EQ:
        return left == value
    if op is CompareOp.NE:
        return left != value
    if op is CompareOp.LT:
        return left < value
    if op is CompareOp.LE:
        return left <= value
    if op is CompareOp.GT:
        return left > value
    return left >= value


def compile_segment(node: SegmentFilter | None, dialect_name: str, now: datetime) -> Cond:
    """The WHERE condition over `contacts` for `node` (everyone for None)."""
    return true() if node is None else SegmentCompiler(dialect_name, now).compile(node)


__all__ = ["FieldRef", "SegmentCompiler", "compile_segment"]
