"""/api/v1/webhooks: subscribe URLs to events, and read each webhook's delivery log.

A webhook is created with a random secret (shown once, in the 201 answer: keep it to verify the
X-Mailprime-Signature of each payload; services.webhooks explains the signature). Scopes:
webhooks:read for listing and the log, webhooks:write for the rest. A new webhook gets the events
that happen from its creation on; deleting it deletes its log. The event names it may ask for are
domain.messaging.WEBHOOK_EVENTS (delivered, bounced, complained, opened, clicked, unsubscribed,
replied, deferred, expired, suppressed); "*" stands for all of them as they are at creation.

The URL is anything http(s) the operator's key holder names, internal addresses included: only
a key with webhooks:write can point the server at one, so treat that scope like an admin's.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.messaging import WEBHOOK_EVENTS, DeliveryStatus, Webhook, WebhookId
from mailprime.web.auth import require
from mailprime.web.deps import WebDeps

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

MAX_URL = 2048
MAX_WEBHOOKS = 100  # per server: each one is a cursor read every poll
EventName = Annotated[str, Field(max_length=16, description=f"One of {', '.join(WEBHOOK_EVENTS)}, "
                                                              "or * for all.")]
WebhookPath = Annotated[int, Path(ge=1, le=2**31 - 1)]


class WebhookIn(BaseModel):
    url: str = Field(max_length=MAX_URL, description="http:// or https:// (recommended).")
    events: list[EventName] = Field(min_length=1, max_length=len(WEBHOOK_EVENTS) + 1)
    description: str = Field(default="", max_length=500)
    active: bool = True


class WebhookPatch(BaseModel):
    url: str | None = Field(default=None, max_length=MAX_URL)
    events: list[EventName] | None = Field(default=None, min_length=1,
                                           max_length=len(WEBHOOK_EVENTS) + 1)
    description: str | None = Field(default=None, max_length=500)
    active: bool | None = None


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signs every payload; shown only here.")


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    type: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_response: str = Field(description="The start of the receiver's answer, or why none.")


def _deps(request: Request) -> WebDeps:
    deps: WebDeps = request.app.state.deps
    return deps


def _out(hook: Webhook) -> WebhookOut:
    return WebhookOut(id=hook.id, url=hook.url, events=sorted(hook.events),
                      description=hook.description, active=hook.active,
                      created_at=hook.created_at)


def _url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment \
            or not url.isascii() or any(c in url for c in " \r\n\t\0<>\""):
        raise HTTPException(422, "body.url: an http:// or https:// URL of printable ASCII, "
                                 "without a fragment")
    try:
        _ = parts.port
    except ValueError:
        raise HTTPException(422, "body.url: the port is not a number of 1-65535") from None
    return url


def _events(names: list[str]) -> frozenset[str]:
    if "*" in names:
        return frozenset(WEBHOOK_EVENTS)
    unknown = sorted(set(names) - set(WEBHOOK_EVENTS))
    if unknown:
        raise HTTPException(422, f"body.events: unknown {', '.join(unknown)}; known: "
                                 f"{', '.join(WEBHOOK_EVENTS)}")
    return frozenset(names)


async def _get(deps: WebDeps, webhook_id: int) -> Webhook:
    hook = await deps.store.get_webhook(WebhookId(webhook_id))
    if hook is None:
        raise HTTPException(404, f"no webhook #{webhook_id}")
    return hook


@router.post("", status_code=201, response_model=WebhookCreated, summary="Create a webhook")
async def create_webhook(request: Request, body: WebhookIn,
                         _key: Annotated[ApiKey, Depends(require("webhooks:write"))]
                         ) -> WebhookCreated:
    deps = _deps(request)
    url, kinds = _url(body.url), _events(body.events)
    if len(await deps.store.list_webhooks()) >= MAX_WEBHOOKS:
        raise HTTPException(409, f"at most {MAX_WEBHOOKS} webhooks; delete one first")
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = await deps.store.add_webhook(url, secret, kinds, active=body.active,
                                        description=body.description,
                                        created_at=deps.clock.now())
    return WebhookCreated(**_out(hook).model_dump(), secret=secret)


@router.get("", response_model=list[WebhookOut], summary="List webhooks")
async def list_webhooks(request: Request,
                        _key: Annotated[ApiKey, Depends(require("webhooks:read"))]
                        ) -> list[WebhookOut]:
    return [_out(h) for h in await _deps(request).store.list_webhooks()]


@router.get("/{webhook_id}", response_model=WebhookOut, summary="Show a webhook")
async def get_webhook(request: Request, webhook_id: WebhookPath,
                      _key: Annotated[ApiKey, Depends(require("webhooks:read"))]) -> WebhookOut:
    return _out(await _get(_deps(request), webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut, summary="Change a webhook")
async def update_webhook(request: Request, webhook_id: WebhookPath, body: WebhookPatch,
                         _key: Annotated[ApiKey, Depends(require("webhooks:write"))]
                         ) -> WebhookOut:
    deps = _deps(request)
    hook = await _get(deps, webhook_id)
    updated = await deps.store.update_webhook(
        hook.id, url=_url(body.url) if body.url is not None else hook.url,
        events=_events(body.events) if body.events is not None else hook.events,
        active=body.active if body.active is not None else hook.active,
        description=body.description if body.description is not None else hook.description)
    return _out(updated)


@router.delete("/{webhook_id}", status_code=204, response_class=Response,
               summary="Delete a webhook and its delivery log")
async def delete_webhook(request: Request, webhook_id: WebhookPath,
                         _key: Annotated[ApiKey, Depends(require("webhooks:write"))]) -> Response:
    if not await _deps(request).store.delete_webhook(WebhookId(webhook_id)):
        raise HTTPException(404, f"no webhook #{webhook_id}")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut],
            summary="The delivery log of a webhook, newest first")
async def list_deliveries(request: Request, webhook_id: WebhookPath,
                          _key: Annotated[ApiKey, Depends(require("webhooks:read"))],
                          status: DeliveryStatus | None = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeliveryOut]:
    deps = _deps(request)
    hook = await _get(deps, webhook_id)
    rows = await deps.store.list_webhook_deliveries(hook.id, limit=limit, status=status)
    return [DeliveryOut(id=d.id, event_id=d.event_id, type=d.event_kind, status=d.status,
                        attempts=d.attempts, created_at=d.created_at,
                        next_attempt_at=d.next_attempt_at, last_attempt_at=d.last_attempt_at,
                        last_status_code=d.last_status_code, last_response=d.last_response)
            for d in rows]


__all__ = ["router"]
