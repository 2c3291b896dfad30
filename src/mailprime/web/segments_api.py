"""/api/v1/segments: create, list, read, change, delete saved filters; count who matches one.

Theory of operation. A segment is stored only once its expression parses
(marketing.segments), so a campaign never finds a broken one; a refusal is a 422 problem whose
`errors` entry names `body.expression` and whose `column` member (an RFC 9457 extension) is the
1-based column of the fault, so an editor can put the cursor on it. A count compiles the stored
expression again (storage compiles the tree to SQL with bound parameters) and counts every
contact matching it, whatever their lists: a campaign's own audience count also applies its
lists and suppressions. A change of expression is parsed like a new one, and refused (409)
while a campaign under way uses the segment (storage checks it inside the write). Segments
are few (an operator's saved filters), so one is found by id in the store's listing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.audience import Segment, SegmentError
from mailprime.domain.ids import SegmentId
from mailprime.marketing.segments import MAX_LENGTH, parse_segment
from mailprime.web.auth import require
from mailprime.web.models import MAX_ID, FieldProblem, deps_of, field_error

router = APIRouter(prefix="/segments", tags=["segments"])

MAX_SEGMENT_NAME = 200
SegmentPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The segment's id.")]


class SegmentOut(BaseModel):
    id: int
    name: str
    expression: str
    created_at: datetime


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_SEGMENT_NAME)
    expression: str = Field(min_length=1, max_length=MAX_LENGTH, description=(
        'A filter, e.g. `attributes.plan = "pro" and opened within 90 days` (docs/marketing.md).'))


class SegmentPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=MAX_SEGMENT_NAME)
    expression: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH,
                                   description="Parsed again before it is stored (422 with "
                                               "`column`).")


class SegmentCount(BaseModel):
    id: int
    count: int = Field(description="Contacts matching the expression (any list).")


def _out(segment: Segment) -> SegmentOut:
    return SegmentOut(id=segment.id, name=segment.name, expression=segment.expression,
                      created_at=segment.created_at)


def parse_or_422(expression: str, where: str = "body.expression") -> None:
    """Raises a 422 problem with the column if `expression` is not a valid filter."""
    try:
        parse_segment(expression)
    except SegmentError as exc:
        raise FieldProblem(422, where, exc.message, column=exc.position) from None


async def _get(request: Request, segment_id: int) -> Segment:
    for segment in await deps_of(request).store.list_segments():
        if segment.id == SegmentId(segment_id):
            return segment
    raise HTTPException(404, f"no segment #{segment_id}")


@router.get("", response_model=list[SegmentOut], summary="Every segment, by name")
async def list_segments(request: Request,
                        _key: Annotated[ApiKey, Depends(require("segments:read"))]
                        ) -> list[SegmentOut]:
    return [_out(s) for s in await deps_of(request).store.list_segments()]


@router.post("", response_model=SegmentOut, status_code=201, summary="Save a segment",
             responses={409: {"description": "The name is in use."}})
async def create_segment(request: Request, body: SegmentIn,
                         _key: Annotated[ApiKey, Depends(require("segments:write"))]
                         ) -> SegmentOut:
    parse_or_422(body.expression)
    made = await deps_of(request).store.create_segment(body.name.strip(), body.expression)
    return _out(made)


@router.get("/{segment_id}", response_model=SegmentOut, summary="Read a segment")
async def get_segment(request: Request, segment_id: SegmentPath,
                      _key: Annotated[ApiKey, Depends(require("segments:read"))]) -> SegmentOut:
    return _out(await _get(request, segment_id))


@router.patch("/{segment_id}", response_model=SegmentOut, summary="Change a segment",
              responses={409: {"description": "The name is in use, or a campaign under way "
                                              "uses the segment (for a new expression)."}})
async def update_segment(request: Request, segment_id: SegmentPath, body: SegmentPatch,
                         _key: Annotated[ApiKey, Depends(require("segments:write"))]
                         ) -> SegmentOut:
    """Absent or null fields stay as they are. A new expression is refused while a scheduled,
    sending or paused campaign uses the segment: it was checked with the old audience."""
    name = body.name.strip() if body.name is not None else None
    if name == "":
        raise field_error("body.name", "a segment name is not only white space")
    if body.expression is not None:
        parse_or_422(body.expression)
    found = await _get(request, segment_id)
    updated = await deps_of(request).store.update_segment(found.id, name=name,
                                                          expression=body.expression)
    return _out(updated)


@router.delete("/{segment_id}", status_code=204, response_class=Response,
               summary="Delete a segment")
async def delete_segment(request: Request, segment_id: SegmentPath,
                         _key: Annotated[ApiKey, Depends(require("segments:write"))]
                         ) -> Response:
    found = await _get(request, segment_id)
    if not await deps_of(request).store.delete_segment(found.name):
        raise HTTPException(404, f"no segment #{segment_id}")
    return Response(status_code=204)


@router.get("/{segment_id}/count", response_model=SegmentCount,
            summary="How many contacts match a segment")
async def count_segment(request: Request, segment_id: SegmentPath,
                        _key: Annotated[ApiKey, Depends(require("segments:read"))]
                        ) -> SegmentCount:
    found = await _get(request, segment_id)
    try:
        tree = parse_segment(found.expression)
    except SegmentError as exc:  # stored before a grammar change: say so, do not crash
        raise FieldProblem(422, "segment.expression", exc.message, column=exc.position) from None
    count = await deps_of(request).store.count_contacts(tree)
    return SegmentCount(id=found.id, count=count)


__all__ = ["parse_or_422", "router"]
