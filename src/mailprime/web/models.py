"""What the /api/v1 resource routers share: limits on JSON attributes, address and id checks,
keyset page parameters, and problem answers that carry extension members.

Theory of operation. A request is checked twice, for different reasons. Pydantic checks shape
and size at the door (lengths, counts, numbers in range), so a handler never sees an absurd
value and the OpenAPI schema states every limit. What needs the domain's knowledge (is this an
address email-validator accepts, does this list exist) is checked in the handler and refused
with the same problem shape, naming the field (`body.email`, `path.email`): a client learns
which field to fix whichever layer refused it.

Attributes are free-form JSON, the one input with no natural shape; so they are bounded by
size (MAX_ATTRIBUTES_JSON octets serialised, the store's own limit), nesting (MAX_DEPTH levels:
a deeply nested value costs recursion everywhere it is read) and key length (MAX_KEY, what a
segment expression can name).
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Annotated

from fastapi import HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, JsonValue

from mailprime.domain.errors import InvalidAddress
from mailprime.marketing.contacts import MAX_ATTRIBUTES_JSON, check_email
from mailprime.web.deps import WebDeps
from mailprime.web.problems import PROBLEM_JSON, VALIDATION_TYPE, FieldError, Problem

MAX_DEPTH = 8  # levels of nesting in a contact's attributes
MAX_KEY = 64  # characters of an attribute name (segments name attributes up to this length)
MAX_PAGE = 1000  # rows in one page of a listing
MAX_EMAIL = 320  # RFC 5321 4.5.3.1.1 + 4.5.3.1.2: 64 + 1 + 255
MAX_ID = 2**63 - 1  # ids are SQL BIGINTs: anything larger cannot name a row


def _depth(value: JsonValue, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level - 1


def _check_keys(value: JsonValue) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not key or len(key) > MAX_KEY:
                raise ValueError(f"an attribute name is 1 to {MAX_KEY} characters")
            _check_keys(item)
    elif isinstance(value, list):
        for item in value:
            _check_keys(item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")


def check_attributes(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"attributes nest at most {MAX_DEPTH} levels deep")
    _check_keys(value)
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > MAX_ATTRIBUTES_JSON:
        raise ValueError(f"attributes are at most {MAX_ATTRIBUTES_JSON} octets as JSON "
                         f"(these are {size})")
    return value


AttributesIn = Annotated[dict[str, JsonValue], AfterValidator(check_attributes)]
Email = Annotated[str, Field(min_length=3, max_length=MAX_EMAIL,
                             description="An email address (RFC 5321 4.5.3.1: at most 320).")]
EmailPath = Annotated[str, Field(max_length=MAX_EMAIL)]
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"At most {MAX_PAGE}.")]
After = Annotated[int | None, Query(ge=0, le=MAX_ID, description=(
    "Keyset pagination: the `next_after` of the previous page (absent: the first page)."))]


class ErasureOut(BaseModel):
    erased: bool = Field(description="A contact row was removed.")
    memberships: int
    consent_entries: int = Field(description="Ledger lines now naming the address's hash.")
    events: int
    suppressions: int


def deps_of(request: Request) -> WebDeps:
    deps: WebDeps = request.app.state.deps
    return deps


def address(text: str, where: str) -> str:
    """The address in normal form, or a 422 naming the field `where`."""
    try:
        return check_email(text)
    except InvalidAddress as exc:
        raise field_error(where, exc.message) from None


def field_error(where: str, message: str, status: int = 422) -> HTTPException:
    """A refusal of one field; answered as a problem whose `errors` names it (see install)."""
    return FieldProblem(status, where, message)


class FieldProblem(HTTPException):
    def __init__(self, status: int, where: str, message: str, **extensions: object) -> None:
        super().__init__(status, f"{where}: {message}")
        self.where = where
        self.message = message
        self.extensions = extensions


def problem_with(request: Request, status: int, detail: str, errors: list[FieldError],
                 **extensions: object) -> JSONResponse:
    body = Problem(type=VALIDATION_TYPE if status == 422 else "about:blank",
                   title=HTTPStatus(status).phrase, status=status,
                   detail=detail, instance=request.url.path, errors=errors)
    payload: dict[str, object] = {**body.model_dump(exclude_none=True), **extensions}
    return JSONResponse(payload, status_code=status, media_type=PROBLEM_JSON)


async def field_problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldProblem)
    return problem_with(request, exc.status_code, exc.detail,
                        [FieldError(field=exc.where, message=exc.message)], **exc.extensions)


__all__ = ["MAX_DEPTH", "MAX_KEY", "MAX_PAGE", "After", "AttributesIn", "Email", "ErasureOut",
           "FieldProblem", "PageLimit", "address", "check_attributes", "deps_of",
           "field_error", "field_problem_handler", "problem_with"]
