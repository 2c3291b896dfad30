"""Double opt-in: the public subscribe endpoint and the confirmation link.

Theory of operation
-------------------
`POST /subscribe` is public (no API key: a sign-up form on the sender's site posts to it), so
it is built for strangers:

* Input: an HTML form (`application/x-www-form-urlencoded`) or JSON, the same fields: email,
  name, the lists (ids or names), the consent wording version the form showed. Bounded: the
  body (MAX_BODY), each field, MAX_LISTS lists.
* Abuse: a per-IP token bucket (RATE_BURST requests, one more every RATE_SECONDS), in memory,
  per process, bounded to MAX_TRACKED addresses: it keeps one client from mail-bombing
  someone through confirmation messages; a distributed attack needs the reverse proxy's
  limits. A hidden honeypot field (`website`) that a person never fills: a bot that fills it
  gets the same answer as everyone and nothing is done.
* Answers say nothing about the address: known, new, suppressed or already confirmed, the
  reply is the same ("check your inbox", 202), so the form cannot be used to learn who is
  subscribed. Only a malformed request (a bad address, an unknown list) is refused (422).

Each list is joined through marketing.consent.join with evidence (source `form` or `api`, the
IP, the wording version): a single opt-in list confirms at once (ledger: given + confirmed); on
a double opt-in list the membership is unconfirmed (ledger: given) and one confirmation
message for all such lists is queued through the injector like any locally made mail (DKIM
signed when the From domain has a key; To a suppressed address nothing is sent). Its link is
`/subscribe/confirm/{token}`, a signed CONFIRM token (marketing.tokens) naming the contact, the
lists and an expiry (CONFIRM_TTL).

Following the link shows a page with one button; the button's POST confirms. A GET never
confirms, for the reason a GET never unsubscribes (web/unsubscribe.py): mail scanners fetch
every link in a message, and a GET that confirmed would let a scanner confirm a subscription
that a stranger made in the victim's name, which is what double opt-in exists to prevent. The
POST confirms each still-unconfirmed membership (ledger: confirmed, with the IP of the click);
doing it twice is harmless. An expired or altered link gets a page saying so.
"""

from __future__ import annotations

import html
import json
import logging
from collections import OrderedDict
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    Contact,
    MailingList,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.errors import DomainError
from mailprime.domain.ids import ListId
from mailprime.domain.mail import Priority
from mailprime.marketing.consent import confirm_joined, join
from mailprime.marketing.contacts import MAX_NAME, add_contact
from mailprime.marketing.gate import Purpose, SendGate
from mailprime.marketing.tokens import MAX_CONFIRM_LISTS, MAX_TOKEN, ConfirmToken
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.inject import Injector
from mailprime.web.deps import WebDeps
from mailprime.web.guards import HeaderText
from mailprime.web.models import MAX_EMAIL, address, deps_of, field_error, problem_with
from mailprime.web.problems import FieldError
from mailprime.web.tracking import NO_STORE

log = logging.getLogger("mailprime.web")

router = APIRouter(include_in_schema=False)

MAX_BODY = 16 * 1024  # a sign-up form is a few hundred octets
MAX_LISTS = MAX_CONFIRM_LISTS
MAX_LIST_REF = 200  # characters of a list name in the request
MAX_WORDING = 64  # the ledger keeps 64 characters of a wording version
CONFIRM_TTL = 7 * 86400  # seconds a confirmation link works
RATE_BURST = 10  # subscribe requests one IP may make at once...
RATE_SECONDS = 60.0  # ...and one more each this many seconds
MAX_TRACKED = 10_000  # IPs the limiter remembers (the least recently seen are forgotten)
HONEYPOT = "website"
TokenPath = Annotated[str, Path(max_length=MAX_TOKEN)]


class SubscribeIn(BaseModel):
    email: str = Field(min_length=3, max_length=MAX_EMAIL)
    name: HeaderText = Field(default="", max_length=MAX_NAME)
    lists: list[int | str] = Field(min_length=1, max_length=MAX_LISTS, description=(
        "List ids, or list names."))
    wording_version: str = Field(default="", max_length=MAX_WORDING)
    website: str = Field(default="", max_length=1000, description="The honeypot: leave empty.")


class RateLimiter:
    """Per-IP token buckets: RATE_BURST at once, refilled one per RATE_SECONDS."""

    def __init__(self, burst: int = RATE_BURST, seconds: float = RATE_SECONDS,
                 max_tracked: int = MAX_TRACKED) -> None:
        self.burst = burst
        self.seconds = seconds
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # ip -> (tokens, t)

    def allow(self, ip: str, now: float) -> bool:
        tokens, last = self._buckets.pop(ip, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) / self.seconds)
        allowed = tokens >= 1.0
        self._buckets[ip] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, ip: str) -> int:
        tokens, _ = self._buckets.get(ip, (0.0, 0.0))
        return max(1, round((1.0 - tokens) * self.seconds))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;
color:#222}}button{{font-size:1em;padding:.6em 1.2em;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers=NO_STORE)


def _state(request: Request) -> tuple[RateLimiter, Injector]:
    """The app's limiter and injector, made on first use (one per app, hence per process)."""
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "subscribe_limiter", None)
    if limiter is None:
        limiter = state.subscribe_limiter = RateLimiter()
    # The injector runtime gave the app (it wakes the delivery worker), shared with
    # POST /messages; an app built without runtime makes one: the worker polls for the mail.
    injector: Injector | None = getattr(state, "injector", None)
    if injector is None:
        deps = deps_of(request)
        injector = state.injector = Injector(deps.store, dkim=DkimSigner(deps.store, deps.clock))
    return limiter, injector


async def _read(request: Request) -> tuple[SubscribeIn, bool]:
    """The request as SubscribeIn, and whether it came from an HTML form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"a subscribe request is at most {MAX_BODY} octets")
    form = content_type == "application/x-www-form-urlencoded"
    try:
        if form:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=MAX_LISTS + 8)
            lists: list[int | str] = []
            for value in fields.get("list", []) + fields.get("lists", []):
                lists.extend(part.strip() for part in value.split(",") if part.strip())
            data: object = {key: fields[key][0] for key in
                            ("email", "name", "wording_version", HONEYPOT) if key in fields}
            assert isinstance(data, dict)
            data["lists"] = [int(x) if isinstance(x, str) and x.isdigit() else x for x in lists]
        elif content_type == "application/json":
            data = json.loads(body)
        else:
            raise HTTPException(415, "send a form (application/x-www-form-urlencoded) or JSON")
        return SubscribeIn.model_validate(data), form
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, ValidationError):
            errors = [FieldError(field=".".join(["body", *map(str, e["loc"])]), message=e["msg"])
                      for e in exc.errors()]
            raise _Invalid(errors) from None
        raise _Invalid([FieldError(field="body", message="not valid form data or JSON")]) \
            from None


class _Invalid(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("invalid")
        self.errors = errors


async def _lists(deps: WebDeps, refs: list[int | str]) -> list[MailingList]:
    found: dict[ListId, MailingList] = {}
    for i, ref in enumerate(refs):
        if isinstance(ref, int):
            lst = await deps.store.get_list_by_id(ListId(ref)) if 0 < ref < 2**63 else None
        else:
            lst = await deps.store.get_list(ref[:MAX_LIST_REF]) if len(ref) <= MAX_LIST_REF \
                else None
        if lst is None:
            raise field_error(f"body.lists.{i}", f"no list {ref!r}")
        found[lst.id] = lst
    return list(found.values())


def _accepted(form: bool, pending: bool) -> Response:
    if form:
        return _page("Thank you", "<p>Please check your inbox: we sent a message with a link "
                     "to confirm your subscription.</p>" if pending else
                     "<p>You are subscribed.</p>", 202 if pending else 200)
    return JSONResponse({"status": "pending" if pending else "subscribed"},
                        status_code=202 if pending else 200)


@router.post("/subscribe")
async def subscribe(request: Request) -> Response:
    deps = deps_of(request)
    limiter, injector = _state(request)
    ip = request.client.host if request.client else ""
    if not limiter.allow(ip, deps.clock.now().timestamp()):
        raise HTTPException(429, "too many subscribe requests from this address; try later",
                            headers={"Retry-After": str(limiter.retry_after(ip))})
    try:
        body, form = await _read(request)
    except _Invalid as exc:
        return problem_with(request, 422, "the request has invalid fields", exc.errors)
    email = address(body.email, "body.email")
    lists = await _lists(deps, body.lists)
    pending_any = any(lst.opt_in is OptIn.DOUBLE for lst in lists)
    if body.website:  # the honeypot: a bot. Same answer, nothing done.
        log.info("subscribe: honeypot filled from %s; ignored", ip)
        return _accepted(form, pending_any)
    evidence = ConsentEvidence(source=ConsentSource.FORM if form else ConsentSource.API,
                               wording_version=body.wording_version, ip=ip)
    contact = await deps.store.get_contact(email)
    if contact is None:
        contact = await add_contact(deps.store, email, body.name)
    pending: list[MailingList] = []
    for lst in lists:
        membership = await join(deps.store, contact.id, lst, evidence)
        if membership.status is MembershipStatus.UNCONFIRMED:
            pending.append(lst)
    if pending:
        await _send_confirmation(deps, injector, contact, pending)
    return _accepted(form, pending_any)


async def _send_confirmation(deps: WebDeps, injector: Injector, contact: Contact,
                             lists: list[MailingList]) -> None:
    domains = await deps.store.list_domains()
    if not domains:
        log.error("subscribe: no local domain to send the confirmation to %s from",
                  contact.email_key)
        return
    sender = f"postmaster@{domains[0]}"
    decision = await SendGate(deps.store).check(contact.email_key, sending_domain=domains[0],
                                                purpose=Purpose.TRANSACTIONAL)
    if not decision.allowed:  # suppressed: the answer is the same, nothing is sent
        log.info("subscribe: no confirmation to %s: %s", contact.email_key, decision.reason)
        return
    expires = int(deps.clock.now().timestamp()) + CONFIRM_TTL
    token = deps.signer.sign(ConfirmToken(contact.id, tuple(lst.id for lst in lists), expires))
    link = f"{deps.settings.http.base_url}/subscribe/confirm/{token}"
    message = confirmation_message(sender, contact, lists, link, deps)
    queued = await injector.inject(sender, [contact.email], message,
                                   priority=Priority.TRANSACTIONAL, source="subscribe")
    log.info("subscribe: confirmation for %s queued as %s", contact.email_key, queued)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def confirmation_message(sender: str, contact: Contact, lists: list[MailingList], link: str,
                         deps: WebDeps) -> bytes:
    """The built-in confirmation message: text and HTML, the link in both."""
    names = ", ".join(_one_line(lst.name) for lst in lists)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = contact.email
    msg["Subject"] = f"Please confirm your subscription: {names}"[:900]
    msg["Date"] = format_datetime(deps.clock.now())
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 5.1: no auto-replies to this
    days = CONFIRM_TTL // 86400
    text = (f"Hello{' ' + _one_line(contact.name) if contact.name else ''},\n\n"
            f"Someone (we hope you) asked to subscribe {contact.email} to: {names}.\n\n"
            f"To confirm, open this link within {days} days:\n\n{link}\n\n"
            "If it was not you, ignore this message: nothing will be sent to you.\n")
    msg.set_content(text)
    msg.add_alternative(
        f"<p>Someone (we hope you) asked to subscribe {html.escape(contact.email)} to: "
        f"<strong>{html.escape(names)}</strong>.</p>"
        f'<p><a href="{html.escape(link)}">Confirm my subscription</a> '
        f"(within {days} days)</p>"
        "<p>If it was not you, ignore this message: nothing will be sent to you.</p>",
        subtype="html")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _verify(request: Request, token: str) -> ConfirmToken | HTMLResponse:
    deps = deps_of(request)
    parsed = deps.signer.verify(token, ConfirmToken)
    if parsed is None:
        return _page("Link not valid", "<p>This confirmation link is not valid. If you copied "
                     "it, check that it is complete.</p>", 404)
    if parsed.expires < deps.clock.now().timestamp():
        return _page("Link expired", "<p>This confirmation link has expired. Please subscribe "
                     "again to get a new one.</p>", 410)
    return parsed


@router.get("/subscribe/confirm/{token}")
async def confirm_page(request: Request, token: TokenPath) -> Response:
    parsed = _verify(request, token)
    if isinstance(parsed, HTMLResponse):
        return parsed
    return _page("Confirm your subscription", (
        "<p>Press the button to confirm your subscription.</p>"
        '<form method="post"><button type="submit">Confirm my subscription</button></form>'))


@router.post("/subscribe/confirm/{token}")
async def confirm(request: Request, token: TokenPath) -> Response:
    parsed = _verify(request, token)
    if isinstance(parsed, HTMLResponse):
        return parsed
    deps = deps_of(request)
    evidence = ConsentEvidence(source=ConsentSource.FORM,
                               ip=request.client.host if request.client else "")
    confirmed: list[str] = []
    for list_id in parsed.list_ids:
        try:
            membership = await confirm_joined(deps.store, parsed.contact_id, list_id, evidence)
        except DomainError:  # the contact or the list is gone (erased, deleted)
            membership = None
        if membership is not None and membership.status is MembershipStatus.CONFIRMED:
            lst = await deps.store.get_list_by_id(list_id)
            confirmed.append(lst.name if lst else f"#{list_id}")
    if not confirmed:
        return _page("Nothing to confirm", "<p>There is no subscription waiting for this link "
                     "any more (it was withdrawn or removed).</p>", 404)
    items = "".join(f"<li>{html.escape(name)}</li>" for name in confirmed)
    return _page("Subscription confirmed", f"<p>Thank you. You are subscribed to:</p><ul>{items}"
                 "</ul>")


__all__ = ["CONFIRM_TTL", "RateLimiter", "SubscribeIn", "confirmation_message", "router"]
