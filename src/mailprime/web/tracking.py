"""The open pixel (`GET /t/o/{token}.gif`) and the click redirect (`GET /t/c/{link}/{recipient}`,
and `GET /t/c/{token}` of mail sent before that form).

Theory of operation. A token (marketing.tokens) names the send: a campaign's contact, or a
queued message's recipient row. A valid pixel token (a TrackToken, or an OpenToken of older
mail) records an OPENED event. A click is a LinkToken (the campaign and the target, the same in
every recipient's message) and the recipient's TrackToken, which must name the same campaign;
older mail has one ClickToken (send and target). A valid click records a CLICKED event and
answers a 302 to the URL the link token signs, and nothing else: the target is never taken
from the request, so the endpoint cannot be made an open redirect. Each event says
whether a machine fetched it (marketing.machine_opens: privacy proxies and scanners) with
`machine=yes` and the reason; only fetches by people move the contact's last-opened and
last-clicked times (what engagement segments read), while the events keep everything.

The pixel answers the same 1x1 GIF whatever the token: a broken image in a reader's mail helps
nobody, and an answer that differed would tell a prober which tokens are real. It is never
cached (no-store), or a second open would not reach us. A bad click token is a 404: there is no
target to send the person to. Events name the recipient address when it can be found (the
contact, or the queue row while the message is still queued) and always the ids.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import RedirectResponse

from mailprime.domain.errors import DomainError
from mailprime.domain.ids import ContactId
from mailprime.domain.mail import EventKind
from mailprime.marketing.machine_opens import classify
from mailprime.marketing.tokens import (
    MAX_TOKEN,
    CampaignRecipient,
    ClickToken,
    LinkToken,
    OpenToken,
    Subject,
    TrackToken,
)
from mailprime.marketing.unsubscribe import subject_attrs, subject_queue  # the UNSUBSCRIBED ids too
from mailprime.web.deps import WebDeps
from mailprime.web.problems import problem_response

log = logging.getLogger("mailprime.web")

router = APIRouter(include_in_schema=False)

# The smallest transparent 1x1 GIF89a (43 octets).
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00"
         b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
            "Pragma": "no-cache", "Expires": "0"}
TokenPath = Annotated[str, Path(max_length=MAX_TOKEN)]


async def who(deps: WebDeps, subject: Subject) -> tuple[str | None, ContactId | None]:
    """The address and contact a subject stands for, as far as they are still known."""
    store = deps.store
    try:
        if isinstance(subject, CampaignRecipient):
            contact = await store.get_contact_by_id(subject.contact_id)
            return (contact.email_key if contact else None, subject.contact_id if contact else None)
        recipients = await store.get_recipients(subject.queue_id)
        address = next((r.address for r in recipients if r.id == subject.recipient_id), None)
        if address is None:
            return None, None
        found = await store.get_contact(address)
        return address.lower(), found.id if found else None
    except DomainError:  # an address the audience refuses: the event still counts
        return None, None


async def _record(request: Request, kind: EventKind, subject: Subject,
                  extra: tuple[tuple[str, str], ...] = ()) -> None:
    deps: WebDeps = request.app.state.deps
    reason = classify(request.headers.get("user-agent"),
                      request.client.host if request.client else None, deps.machine_networks)
    address, contact_id = await who(deps, subject)
    machine = (("machine", "yes"), ("machine_reason", reason.value)) if reason else (("machine", "no"),)
    await deps.store.append(kind, subject_queue(subject), address, "",
                            (*subject_attrs(subject), *machine, *extra))
    if reason is None and contact_id is not None:
        now = deps.clock.now()
        if kind is EventKind.OPENED:
            await deps.store.record_engagement(contact_id, opened_at=now)
        else:
            await deps.store.record_engagement(contact_id, opened_at=now, clicked_at=now)


@router.get("/t/o/{token}.gif")
async def open_pixel(request: Request, token: TokenPath) -> Response:
    deps: WebDeps = request.app.state.deps
    # verify() refuses another purpose before its HMAC: trying both kinds costs one.
    parsed = deps.signer.verify(token, TrackToken) or deps.signer.verify(token, OpenToken)
    if parsed is not None:
        await _record(request, EventKind.OPENED, parsed.subject)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/t/c/{token}")
async def click(request: Request, token: TokenPath) -> Response:
    deps: WebDeps = request.app.state.deps
    parsed = deps.signer.verify(token, ClickToken)
    if parsed is None:
        return problem_response(404, "this link is not valid", request=request, headers=NO_STORE)
    await _record(request, EventKind.CLICKED, parsed.subject, (("url", parsed.url),))
    return RedirectResponse(parsed.url, status_code=302, headers=NO_STORE)


@router.get("/t/c/{link}/{recipient}")
async def tracked_click(request: Request, link: TokenPath, recipient: TokenPath) -> Response:
    deps: WebDeps = request.app.state.deps
    target = deps.signer.verify(link, LinkToken)
    sent = deps.signer.verify(recipient, TrackToken) if target is not None else None
    if target is None or sent is None or not isinstance(sent.subject, CampaignRecipient) \
            or sent.subject.campaign_id != target.campaign_id:
        # A recipient token of another campaign would credit this click to a send that never
        # had the link: refused like a forged token.
        return problem_response(404, "this link is not valid", request=request, headers=NO_STORE)
    await _record(request, EventKind.CLICKED, sent.subject, (("url", target.url),))
    return RedirectResponse(target.url, status_code=302, headers=NO_STORE)


__all__ = ["PIXEL", "router", "who"]
