"""/api/v1/contacts: list (keyset pages, filtered by address or list), read, create, update,
GDPR export and erasure.

Theory of operation. A contact is named in paths by its address, as people and the CLI name
it (`mailprime contact show EMAIL`); the id is what keyset pagination walks: a page ends with
`next_after`, the last id it holds, and the next page starts after it, so a listing of a million
contacts costs the same per page at the end as at the start, and a contact added meanwhile is
neither skipped nor shown twice (offsets would do both).

The address filter and the list filter are segment conditions (`email contains ...`,
`in_list(...)`) compiled to SQL by storage like any segment: no second query language.

Deleting is erasure (GDPR Art. 17, `?erase=true`), the only deletion there is: the contact and
memberships go, the ledger lines and events keep only the address's hash, and a hashed
suppression keeps it from being mailed again. A plain delete that left the ledger naming the
person, or forgot that they must not be mailed, would be worse than either keeping or erasing;
so the request must say `erase=true`, knowing it cannot be undone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field, JsonValue

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.audience import (
    And,
    Contact,
    ContactData,
    Contains,
    FieldRef,
    InList,
    MembershipStatus,
    SegmentFilter,
)
from mailprime.domain.audience import Field as ContactField
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import ContactId, ListId
from mailprime.marketing.contacts import MAX_NAME, add_contact
from mailprime.web.auth import require
from mailprime.web.guards import HeaderText
from mailprime.web.models import (
    MAX_EMAIL,
    After,
    AttributesIn,
    Email,
    ErasureOut,
    PageLimit,
    address,
    check_attributes,
    deps_of,
    field_error,
)

router = APIRouter(prefix="/contacts", tags=["contacts"])

EmailPath = Annotated[str, Path(max_length=MAX_EMAIL, description="The contact's address.")]


class MembershipOut(BaseModel):
    list_id: int
    list_name: str
    status: MembershipStatus
    since: datetime
    updated_at: datetime


class ContactOut(BaseModel):
    id: int
    email: str
    name: str
    attributes: dict[str, JsonValue]
    created_at: datetime
    updated_at: datetime
    last_opened_at: datetime | None = None
    last_clicked_at: datetime | None = None
    memberships: list[MembershipOut] | None = Field(
        default=None, description="Only when one contact is read.")


class ContactPage(BaseModel):
    items: list[ContactOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null: last.")


class ContactIn(BaseModel):
    email: Email
    name: HeaderText = Field(default="", max_length=MAX_NAME,
                             description="Shown in the To: field: no CR, LF or NUL.")
    attributes: AttributesIn = Field(default_factory=dict)


class ContactPatch(BaseModel):
    name: HeaderText | None = Field(default=None, max_length=MAX_NAME)
    attributes: AttributesIn | None = Field(default=None, description=(
        "Merged into the stored attributes (RFC 7396 style): a key set to null is removed."))


class ConsentOut(BaseModel):
    action: str
    purpose: str
    source: str
    wording_version: str
    ip: str
    at: datetime


class EventOut(BaseModel):
    kind: str
    at: datetime
    queue_id: str | None
    detail: str
    attrs: dict[str, str]


class SuppressionHeld(BaseModel):
    scope: str
    reason: str
    detail: str
    since: datetime


class ContactExport(BaseModel):
    """Everything held about one address (GDPR Art. 15 and 20)."""

    email: str
    contact: ContactOut | None
    consent: list[ConsentOut]
    events: list[EventOut]
    suppressions: list[SuppressionHeld]


def contact_out(c: Contact) -> ContactOut:
    return ContactOut(id=c.id, email=c.email, name=c.name,
                      attributes=dict(c.attributes),
                      created_at=c.created_at, updated_at=c.updated_at,
                      last_opened_at=c.last_opened_at, last_clicked_at=c.last_clicked_at)


async def _contact(request: Request, email: str) -> Contact:
    key = address(email, "path.email")
    try:
        found = await deps_of(request).store.get_contact(key)
    except InvalidAddress as exc:
        raise field_error("path.email", exc.message) from None
    if found is None:
        raise HTTPException(404, f"no contact {key}")
    return found


@router.get("", response_model=ContactPage, summary="List contacts (keyset pages)")
async def list_contacts(
        request: Request, _key: Annotated[ApiKey, Depends(require("contacts:read"))],
        email: Annotated[str | None, Query(max_length=MAX_EMAIL, description=(
            "Only addresses containing this text (case-insensitive)."))] = None,
        list_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description=(
            "Only members of this list who have not unsubscribed."))] = None,
        after: After = None, limit: PageLimit = 100) -> ContactPage:
    store = deps_of(request).store
    conditions: list[SegmentFilter] = []
    if email:
        conditions.append(Contains(FieldRef(ContactField.EMAIL), email))
    if list_id is not None:
        mailing_list = await store.get_list_by_id(ListId(list_id))
        if mailing_list is None:
            raise HTTPException(404, f"no list #{list_id}")
        conditions.append(InList(mailing_list.name))
    segment = (None if not conditions else conditions[0] if len(conditions) == 1
               else And(tuple(conditions)))
    rows = await store.contacts_page(segment=segment, limit=limit + 1,
                                     after=ContactId(after) if after is not None else None)
    page = list(rows[:limit])
    more = len(rows) > limit
    return ContactPage(items=[contact_out(c) for c in page],
                       next_after=page[-1].id if more and page else None)


@router.post("", response_model=ContactOut, status_code=201, summary="Create a contact",
             responses={409: {"description": "The address is a contact already."}})
async def create_contact(request: Request, body: ContactIn,
                         _key: Annotated[ApiKey, Depends(require("contacts:write"))]
                         ) -> ContactOut:
    email = address(body.email, "body.email")
    made = await add_contact(deps_of(request).store, email, body.name, body.attributes)
    return contact_out(made)


@router.get("/{email}", response_model=ContactOut, summary="Read a contact and its lists")
async def get_contact(request: Request, email: EmailPath,
                      _key: Annotated[ApiKey, Depends(require("contacts:read"))]) -> ContactOut:
    found = await _contact(request, email)
    out = contact_out(found)
    out.memberships = [
        MembershipOut(list_id=lst.id, list_name=lst.name, status=m.status, since=m.created_at,
                      updated_at=m.updated_at)
        for lst, m in await deps_of(request).store.contact_memberships(found.id)]
    return out


@router.patch("/{email}", response_model=ContactOut, summary="Change a contact's name or attributes")
async def update_contact(request: Request, email: EmailPath, body: ContactPatch,
                         _key: Annotated[ApiKey, Depends(require("contacts:write"))]
                         ) -> ContactOut:
    found = await _contact(request, email)
    attributes = None
    if body.attributes is not None:
        merged: dict[str, JsonValue] = dict(found.attributes)
        for name, value in body.attributes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        try:
            attributes = check_attributes(merged)
        except ValueError as exc:
            raise field_error("body.attributes", str(exc)) from None
    updated = await deps_of(request).store.update_contact(
        found.id, name=body.name.strip() if body.name is not None else None,
        attributes=attributes)
    return contact_out(updated)


@router.delete("/{email}", response_model=ErasureOut, summary="Erase a contact (GDPR Art. 17)",
               responses={404: {"description": "Nothing is held about the address."}})
async def erase_contact(
        request: Request, email: EmailPath,
        _key: Annotated[ApiKey, Depends(require("contacts:write"))],
        erase: Annotated[bool, Query(description=(
            "Must be true: deleting a contact is erasure, and cannot be undone."))] = False,
) -> ErasureOut:
    """Removes the contact and its memberships, rewrites its consent ledger lines and events
    with the address's hash (IP dropped), and leaves one hashed global suppression so the
    address is never mailed again. Mailboxes are not touched."""
    if not erase:
        raise field_error("query.erase", "deleting a contact erases it everywhere (GDPR Art. "
                          "17) and cannot be undone: send erase=true to confirm")
    key = address(email, "path.email")
    store = deps_of(request).store
    held = await store.contact_data(key, event_limit=1)
    if held.contact is None and not held.consent and not held.events and not held.suppressions:
        raise HTTPException(404, f"nothing is held about {key}")
    result = await store.erase_contact(key)
    return ErasureOut(erased=result.contact, memberships=result.memberships,
                      consent_entries=result.consent_entries, events=result.events,
                      suppressions=result.suppressions)


@router.get("/{email}/export", response_model=ContactExport,
            summary="Everything held about an address (GDPR Art. 15/20)")
async def export_contact(request: Request, email: EmailPath,
                         _key: Annotated[ApiKey, Depends(require("contacts:read"))]
                         ) -> ContactExport:
    key = address(email, "path.email")
    data = await deps_of(request).store.contact_data(key)
    if data.contact is None and not data.consent and not data.events and not data.suppressions:
        raise HTTPException(404, f"nothing is held about {key}")
    return _export(data)


def _export(data: ContactData) -> ContactExport:
    contact = None
    if data.contact is not None:
        contact = contact_out(data.contact)
        contact.memberships = [
            MembershipOut(list_id=lst.id, list_name=lst.name, status=m.status, since=m.created_at,
                          updated_at=m.updated_at) for lst, m in data.memberships]
    return ContactExport(
        email=data.email, contact=contact,
        consent=[ConsentOut(action=e.action.value, purpose=e.purpose, source=e.source.value,
                            wording_version=e.wording_version, ip=e.ip, at=e.at)
                 for e in data.consent],
        events=[EventOut(kind=e.kind.value, at=e.at, queue_id=e.queue_id, detail=e.detail,
                         attrs=dict(e.attrs)) for e in data.events],
        suppressions=[SuppressionHeld(scope=s.scope or "global", reason=s.reason.value,
                                      detail=s.detail, since=s.created_at)
                      for s in data.suppressions])


__all__ = ["ContactOut", "contact_out", "router"]
