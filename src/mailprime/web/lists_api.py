"""/api/v1/lists: create, read, change, delete mailing lists; list, add and remove members.

Theory of operation. A member is added through marketing.consent (the same rules as the CLI
and the subscribe form): a new member of a double opt-in list starts unconfirmed unless the
API caller vouches for a confirmation it obtained itself (`status: "confirmed"`, like an import
with --confirmed); either way the consent ledger records the act with source `api`, the
wording version the caller names and the key's name is in the event trail of the request.
A list's opt-in may become stricter at any time (single -> double), never looser while
someone on it has not confirmed (PATCH: the store refuses it inside the write, 409).
Removing a member is an unsubscribe, not a deletion: the membership stays, as `unsubscribed`,
and the ledger records the withdrawal, so a later campaign cannot mail the person through that
list and the record shows why. Member pages are keyset pages by contact id, like contacts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    MailingList,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.ids import ContactId, ListId
from mailprime.marketing.consent import join
from mailprime.marketing.contacts import MAX_NAME, add_contact
from mailprime.web.auth import require
from mailprime.web.contacts_api import ContactOut, contact_out
from mailprime.web.guards import HeaderText
from mailprime.web.models import (
    MAX_EMAIL,
    MAX_ID,
    After,
    Email,
    PageLimit,
    address,
    deps_of,
    field_error,
)

router = APIRouter(prefix="/lists", tags=["lists"])

MAX_LIST_NAME = 200
MAX_DESCRIPTION = 2000
MAX_WORDING = 64  # the ledger keeps 64 characters of a wording version

ListPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The list's id.")]
EmailPath = Annotated[str, Path(max_length=MAX_EMAIL)]


class ListOut(BaseModel):
    id: int
    name: str
    description: str
    opt_in: OptIn
    created_at: datetime
    members: dict[MembershipStatus, int] = Field(description="Member count per status.")


class ListIn(BaseModel):
    name: HeaderText = Field(min_length=1, max_length=MAX_LIST_NAME, description=(
        "Unique; may appear in a List-Id or subject, so no CR, LF or NUL."))
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    opt_in: OptIn = OptIn.DOUBLE


class ListPatch(BaseModel):
    name: HeaderText | None = Field(default=None, min_length=1, max_length=MAX_LIST_NAME,
                                    description="Unique; no CR, LF or NUL.")
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    opt_in: OptIn | None = Field(default=None, description=(
        "single -> double: always allowed (unconfirmed members stop being mailed until they "
        "confirm). double -> single: refused (409) while any member is unconfirmed: they "
        "would be mailed without having confirmed."))


class MemberOut(BaseModel):
    contact: ContactOut
    status: MembershipStatus
    since: datetime
    updated_at: datetime


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_after: int | None


class MemberIn(BaseModel):
    email: Email
    name: HeaderText = Field(default="", max_length=MAX_NAME,
                             description="Used only when the address is not a contact yet.")
    status: MembershipStatus | None = Field(default=None, description=(
        "Absent: unconfirmed on a double opt-in list, confirmed on a single one. "
        "`confirmed`: the caller vouches it obtained the confirmation. Not `unsubscribed`."))
    wording_version: str = Field(default="", max_length=MAX_WORDING, description=(
        "Which text of the consent notice the person agreed to (kept in the ledger)."))


def _list_out(lst: MailingList, counts: dict[MembershipStatus, int]) -> ListOut:
    return ListOut(id=lst.id, name=lst.name, description=lst.description, opt_in=lst.opt_in,
                   created_at=lst.created_at,
                   members={s: counts.get(s, 0) for s in MembershipStatus})


async def _get(request: Request, list_id: int) -> MailingList:
    found = await deps_of(request).store.get_list_by_id(ListId(list_id))
    if found is None:
        raise HTTPException(404, f"no list #{list_id}")
    return found


async def _counts(request: Request, list_id: ListId) -> dict[MembershipStatus, int]:
    for lst, counts in await deps_of(request).store.list_lists():
        if lst.id == list_id:
            return dict(counts)
    return {}


def _evidence(request: Request, wording: str = "") -> ConsentEvidence:
    return ConsentEvidence(source=ConsentSource.API, wording_version=wording,
                           ip=request.client.host if request.client else "")


@router.get("", response_model=list[ListOut], summary="Every list, with member counts")
async def list_lists(request: Request, _key: Annotated[ApiKey, Depends(require("lists:read"))]
                     ) -> list[ListOut]:
    return [_list_out(lst, dict(c)) for lst, c in await deps_of(request).store.list_lists()]


@router.post("", response_model=ListOut, status_code=201, summary="Create a list",
             responses={409: {"description": "The name is in use."}})
async def create_list(request: Request, body: ListIn,
                      _key: Annotated[ApiKey, Depends(require("lists:write"))]) -> ListOut:
    made = await deps_of(request).store.create_list(body.name.strip(),
                                                    description=body.description,
                                                    opt_in=body.opt_in)
    return _list_out(made, {})


@router.get("/{list_id}", response_model=ListOut, summary="Read a list")
async def get_list(request: Request, list_id: ListPath,
                   _key: Annotated[ApiKey, Depends(require("lists:read"))]) -> ListOut:
    found = await _get(request, list_id)
    return _list_out(found, await _counts(request, found.id))


@router.patch("/{list_id}", response_model=ListOut, summary="Change a list",
              responses={409: {"description": "The name is in use, or the opt-in change is "
                                              "refused (unconfirmed members)."}})
async def update_list(request: Request, list_id: ListPath, body: ListPatch,
                      _key: Annotated[ApiKey, Depends(require("lists:write"))]) -> ListOut:
    """Absent or null fields stay as they are. Memberships are never changed by this: a
    member's status is theirs (their consent), only the list's rule for mailing them moves."""
    name = body.name.strip() if body.name is not None else None
    if name == "":
        raise field_error("body.name", "a list name is not only white space")
    found = await _get(request, list_id)
    updated = await deps_of(request).store.update_list(
        found.id, name=name, description=body.description, opt_in=body.opt_in)
    return _list_out(updated, await _counts(request, updated.id))


@router.delete("/{list_id}", status_code=204, response_class=Response,
               summary="Delete a list and its memberships (the consent ledger keeps its lines)")
async def delete_list(request: Request, list_id: ListPath,
                      _key: Annotated[ApiKey, Depends(require("lists:write"))]) -> Response:
    found = await _get(request, list_id)
    await deps_of(request).store.delete_list(found.name)
    return Response(status_code=204)


@router.get("/{list_id}/members", response_model=MemberPage, summary="A list's members")
async def list_members(
        request: Request, list_id: ListPath,
        _key: Annotated[ApiKey, Depends(require("lists:read"))],
        status: Annotated[MembershipStatus | None, Query()] = None,
        after: After = None, limit: PageLimit = 100) -> MemberPage:
    found = await _get(request, list_id)
    rows = await deps_of(request).store.list_members(
        found.id, status=status, after=ContactId(after) if after is not None else None,
        limit=limit + 1)
    page = list(rows[:limit])
    return MemberPage(
        items=[MemberOut(contact=contact_out(c), status=m.status, since=m.created_at,
                         updated_at=m.updated_at) for c, m in page],
        next_after=page[-1][0].id if len(rows) > limit and page else None)


@router.post("/{list_id}/members", response_model=MemberOut, status_code=201,
             summary="Add a member (the contact is created if new)",
             responses={200: {"model": MemberOut,
                              "description": "Already a member: its status, unchanged or "
                                             "confirmed as asked."}})
async def add_member(request: Request, list_id: ListPath, body: MemberIn, response: Response,
                     _key: Annotated[ApiKey, Depends(require("lists:write"))]) -> MemberOut:
    if body.status is MembershipStatus.UNSUBSCRIBED:
        raise field_error("body.status", "use DELETE .../members/{email} to unsubscribe")
    store = deps_of(request).store
    found = await _get(request, list_id)
    email = address(body.email, "body.email")
    contact = await store.get_contact(email)
    if contact is None:
        contact = await add_contact(store, email, body.name)
    before = await store.get_membership(contact.id, found.id)
    evidence = _evidence(request, body.wording_version)
    membership = await join(store, contact.id, found, evidence)
    if body.status is MembershipStatus.CONFIRMED \
            and membership.status is not MembershipStatus.CONFIRMED:
        membership = await store.set_membership(contact.id, found.id,
                                                status=MembershipStatus.CONFIRMED,
                                                evidence=evidence)
    if before is not None and before.status is not MembershipStatus.UNSUBSCRIBED:
        response.status_code = 200
    return MemberOut(contact=contact_out(contact), status=membership.status,
                     since=membership.created_at, updated_at=membership.updated_at)


@router.delete("/{list_id}/members/{email}", status_code=204, response_class=Response,
               summary="Remove a member: the membership becomes unsubscribed")
async def remove_member(request: Request, list_id: ListPath, email: EmailPath,
                        _key: Annotated[ApiKey, Depends(require("lists:write"))]) -> Response:
    store = deps_of(request).store
    found = await _get(request, list_id)
    key = address(email, "path.email")
    contact = await store.get_contact(key)
    membership = (await store.get_membership(contact.id, found.id)
                  if contact is not None else None)
    if contact is None or membership is None:
        raise HTTPException(404, f"{key} is not on list #{list_id}")
    await store.set_membership(contact.id, found.id, status=MembershipStatus.UNSUBSCRIBED,
                               evidence=_evidence(request))
    return Response(status_code=204)


__all__ = ["router"]
