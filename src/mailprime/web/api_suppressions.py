"""/api/v1/suppressions: list, add and remove entries of the suppression list over HTTP.

The same operations as `mailprime suppression` (cli/suppression_cmd.py), with the same events
(SUPPRESSED / UNSUPPRESSED, source=api, the key's name) so the log tells who did what. Listing is
newest first with offset pagination; the store's port reads at most `offset + limit` rows, so
the offset is bounded (MAX_WINDOW) rather than letting one request read the whole table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from mailprime.domain.address import Address, normalize_domain
from mailprime.domain.api_keys import ApiKey
from mailprime.domain.deliverability import GLOBAL_SCOPE, Suppression, SuppressionReason
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.mail import EventKind
from mailprime.web.auth import require
from mailprime.web.deps import WebDeps
from mailprime.web.guards import HeaderText

router = APIRouter(prefix="/suppressions", tags=["suppressions"])

MAX_PAGE = 1000
MAX_WINDOW = 100_000  # offset + limit
MAX_NOTE = 500

ScopeQuery = Annotated[str | None, Query(
    max_length=255, description='"global", a sending domain, or absent for every list.')]


class SuppressionOut(BaseModel):
    email: str
    scope: str = Field(description='"global" or the sending domain whose own list it is on.')
    reason: SuppressionReason
    created_at: datetime
    detail: str
    queue_id: str | None = None


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")


class SuppressionIn(BaseModel):
    email: HeaderText = Field(max_length=320, description="The address (RFC 5321 4.5.3.1).")
    domain: HeaderText | None = Field(
        default=None, max_length=255,
        description="A sending domain's own list; absent: the global list (every domain).")
    note: HeaderText = Field(default="", max_length=MAX_NOTE, description="Why (kept as evidence).")


def _out(entry: Suppression) -> SuppressionOut:
    return SuppressionOut(email=entry.address, scope=entry.scope or "global", reason=entry.reason,
                          created_at=entry.created_at, detail=entry.detail,
                          queue_id=entry.queue_id)


def _address(text: str, where: str) -> str:
    try:
        return Address.parse(text).key
    except InvalidAddress as exc:
        raise HTTPException(422, f"{where}: {exc.message}") from None


def _scope(text: str | None, where: str) -> str | None:
    """None for "every list" (only when listing), "" for the global list, else a domain."""
    if text is None:
        return None
    if text in ("", "global"):
        return GLOBAL_SCOPE
    try:
        return normalize_domain(text)
    except InvalidAddress as exc:
        raise HTTPException(422, f"{where}: {exc.message}") from None


def _deps(request: Request) -> WebDeps:
    deps: WebDeps = request.app.state.deps
    return deps


@router.get("", response_model=SuppressionPage, summary="List suppressed addresses")
async def list_suppressions(
        request: Request, _key: Annotated[ApiKey, Depends(require("suppressions:read"))],
        scope: ScopeQuery = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_WINDOW - 1)] = 0) -> SuppressionPage:
    """Newest first. `offset + limit` may not pass 100,000."""
    if offset + limit > MAX_WINDOW:
        raise HTTPException(422, f"offset + limit: at most {MAX_WINDOW}")
    entries = await _deps(request).store.list_suppressions(
        _scope(scope, "scope"), limit=offset + limit + 1)
    page = entries[offset:offset + limit]
    more = len(entries) > offset + limit
    return SuppressionPage(items=[_out(e) for e in page],
                           next_offset=offset + limit if more else None)


@router.post("", response_model=SuppressionOut, status_code=201, summary="Suppress an address",
             responses={200: {"model": SuppressionOut,
                              "description": "Already suppressed: the first entry is kept."}})
async def add_suppression(request: Request, body: SuppressionIn, response: Response,
                          key: Annotated[ApiKey, Depends(require("suppressions:write"))]
                          ) -> SuppressionOut:
    deps = _deps(request)
    address = _address(body.email, "body.email")
    scope = _scope(body.domain, "body.domain") or GLOBAL_SCOPE
    entry = Suppression(address=address, scope=scope, reason=SuppressionReason.MANUAL,
                        created_at=deps.clock.now(), detail=body.note or f"added by API key {key.name}")
    if await deps.store.suppress(entry):
        await deps.store.append(EventKind.SUPPRESSED, None, address, entry.detail,
                                (("reason", "manual"), ("scope", scope or "global"),
                                 ("source", "api"), ("api_key", key.name)))
        return _out(entry)
    response.status_code = 200
    existing = await deps.store.find_suppression(address, scope)
    return _out(existing or entry)


@router.delete("/{email}", status_code=204, summary="Take an address off the suppression list",
               response_class=Response)
async def remove_suppression(
        request: Request, email: Annotated[str, Path(max_length=320)],
        key: Annotated[ApiKey, Depends(require("suppressions:write"))],
        scope: ScopeQuery = None) -> Response:
    """From the list `scope` names ("global" or a sending domain), or from every list when
    `scope` is absent. 404 if the address was on none of them."""
    deps = _deps(request)
    address = _address(email, "path.email")
    which = _scope(scope, "scope")
    removed = await deps.store.unsuppress(address, which)
    if not removed:
        raise HTTPException(404, f"{address} is not suppressed")
    await deps.store.append(EventKind.UNSUPPRESSED, None, address, f"removed by API key {key.name}",
                            (("scope", "all" if which is None else which or "global"),
                             ("source", "api"), ("api_key", key.name)))
    return Response(status_code=204)


__all__ = ["router"]
