"""The FastAPI application: /api/v1 (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs),
the tracking and unsubscribe endpoints, and /healthz.

Theory of operation. `create_app(deps)` builds a fresh app from what the composition root hands
it (store, settings, clock, token signer: web/deps.py), so tests and the server build it the
same way and nothing is global. Every response passes GuardMiddleware (body limit, security
headers); every error is a problem document (web/problems.py); the API routes declare that in
the schema, so a client generated from it knows the error shape too.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from mailprime import __version__
from mailprime.web import (
    api_suppressions,
    campaigns_api,
    contacts_api,
    lists_api,
    messages_api,
    segments_api,
    subscribe,
    templates_api,
    tracking,
    unsubscribe,
    webhooks_api,
)
from mailprime.web.auth import KeyChecker
from mailprime.web.deps import WebDeps
from mailprime.web.guards import GuardMiddleware
from mailprime.web.models import FieldProblem, field_problem_handler
from mailprime.web.problems import PROBLEM_RESPONSE, install_problem_handlers

API_PREFIX = "/api/v1"

DESCRIPTION = """The mailprime HTTP API.

Authenticate with an API key (`mailprime apikey create NAME --scope ...`) sent as
`Authorization: Bearer mp_<prefix>_<secret>`. Each operation needs one scope
(`resource:action`, `resource:*` or `*`). Errors are RFC 9457 problem documents
(`application/problem+json`); validation errors list the offending fields in `errors`.
"""


class Health(BaseModel):
    status: str
    version: str


def create_app(deps: WebDeps) -> FastAPI:
    app = FastAPI(
        title="mailprime", version=__version__, description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None,
        # Responses every API operation may give, documented once for all.
        responses={401: PROBLEM_RESPONSE, 403: PROBLEM_RESPONSE, 413: PROBLEM_RESPONSE,
                   422: PROBLEM_RESPONSE},
    )
    app.state.deps = deps
    app.state.keys = KeyChecker(deps)
    install_problem_handlers(app)
    app.add_exception_handler(FieldProblem, field_problem_handler)  # one field named in errors

    api = APIRouter(prefix=API_PREFIX, responses={404: PROBLEM_RESPONSE, 503: PROBLEM_RESPONSE})
    api.include_router(api_suppressions.router)
    for resource in (contacts_api, lists_api, segments_api, templates_api, campaigns_api,
                     messages_api, webhooks_api):
        api.include_router(resource.router)
    app.include_router(api)
    app.include_router(tracking.router)
    app.include_router(unsubscribe.router)
    app.include_router(subscribe.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Health:
        await deps.store.list_domains()  # a StorageError answers 503: the database is away
        return Health(status="ok", version=__version__)

    app.add_middleware(GuardMiddleware, max_body=deps.settings.http.max_request_size,
                       https=deps.settings.http.base_url.startswith("https://"))
    return app


__all__ = ["API_PREFIX", "create_app"]
