"""Every error the HTTP layer answers is an RFC 9457 problem document (application/problem+json).

Theory of operation. Clients of the API should need one error parser, so nothing answers in
another shape: FastAPI's and Starlette's own HTTPExceptions, request validation errors (with one
entry per offending field, `errors: [{"field": "body.email", "message": ...}]`), our DomainErrors
(their `http_status` says which status), and anything unexpected (500, its text logged, never
sent: a stack trace tells an attacker more than it tells a client). `type` is "about:blank" when
the status says it all (RFC 9457 4.2.1), else a `urn:mailprime:problem:*` naming the kind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailprime.domain.errors import DomainError

log = logging.getLogger("mailprime.web")

PROBLEM_JSON = "application/problem+json"
VALIDATION_TYPE = "urn:mailprime:problem:validation"


class FieldError(BaseModel):
    field: str = Field(description='Where: "body.email", "query.limit", "path.email", "header.x".')
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[FieldError] | None = None


# What the OpenAPI schema says every error looks like.
PROBLEM_RESPONSE: dict[str, Any] = {"model": Problem, "content": {PROBLEM_JSON: {}},
                                    "description": "Problem details (RFC 9457)"}


def problem_response(status: int, detail: str = "", *, request: Request | None = None,
                     type_: str = "about:blank", errors: Sequence[FieldError] | None = None,
                     headers: Mapping[str, str] | None = None) -> JSONResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = Problem(type=type_, title=title, status=status, detail=detail,
                   instance=request.url.path if request is not None else "",
                   errors=list(errors) if errors is not None else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status,
                        media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        out.append(FieldError(field=".".join(loc) or "request", message=str(err.get("msg", ""))))
    return out


def install_problem_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else ""
        return problem_response(exc.status_code, detail, request=request, headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, "the request has invalid fields", request=request,
                                type_=VALIDATION_TYPE, errors=_field_errors(exc))

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        if exc.http_status >= 500:
            log.error("request %s failed: %s", request.url.path, exc.message)
            return problem_response(exc.http_status, "the server could not do this now",
                                    request=request)
        return problem_response(exc.http_status, exc.message, request=request)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", request.url.path, exc_info=exc)
        return problem_response(500, "internal error", request=request)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(Exception, unexpected)


__all__ = ["PROBLEM_JSON", "PROBLEM_RESPONSE", "FieldError", "Problem", "install_problem_handlers",
           "problem_response"]
