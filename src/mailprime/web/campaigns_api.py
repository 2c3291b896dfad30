"""/api/v1/campaigns: create, list, read, change and delete campaigns; pre-flight, start
(now or at a time), pause, resume, cancel; test sends; the per-recipient send log.

Theory of operation
-------------------
This module decides nothing about campaigns: every change goes through the use cases of
marketing.campaigns (create, update, delete, start, pause, resume, cancel), which go through
the store's writes, where the state table of domain.campaigns is applied inside the
transaction. So the API, the CLI and the server's runner agree on what is allowed, and a
request racing the runner (a PATCH while the scheduled time arrives) is refused by the write,
not by a check made a moment too early. What this module adds is HTTP:

* Shapes and limits at the door (pydantic), and field problems for what needs the store: a
  template, list or segment the body names that does not exist is a 422 naming
  `body.template_id`, `body.list_ids` or `body.segment_id`; an address is parsed as the SMTP
  paths parse it (`body.from_address`); every string that ends up in a header field of the
  campaign's messages (name, From name, subject, postal address) is CampaignText: the
  message builder's own rule (marketing.message_builder.header_value: no CR, LF or other
  control character), so the API takes no value a message could not carry, and a bad one is
  a 422 naming the field (header injection).
* Status codes for the state table: an illegal move (pause a draft, resume a cancelled
  campaign) is IllegalTransition, a 409 problem whose detail is the table's own sentence
  (what the campaign is, what it may become). Settings change only while the campaign is a
  draft or scheduled (409 otherwise, from the store's write: this module does not check it
  itself); DELETE removes only a draft (409: cancel instead).
* Pre-flight as data or as refusal: POST .../preflight answers 200 with every problem; a
  start refused by it is a 422 problem with one `errors` entry per error (field
  `preflight.<code>`) and the whole list, warnings included, in `problems`. A change to a
  scheduled campaign is pre-flighted the same way (it was checked when it was scheduled).
* Test sends build the campaign's message exactly as the server would (marketing.dispatch
  `Dispatcher.test_send`: DKIM-signed by the same signer as the MX's injector when the runtime
  gave one, links signed with the app's link keys) and wake the delivery worker.

Listings are keyset pages (campaigns by id, sends by contact id): pass `next_after` back as
`after`. Scopes: campaigns:read to look (including the pre-flight, which changes nothing),
campaigns:write to create, change, delete, pause and cancel, campaigns:send for what makes mail
leave: start, resume and test, and a change to a scheduled campaign (its lists, template, From
and subject are what the runner sends at its time). A PATCH checked for a draft (no send
scope needed) is written only if the campaign is still a draft (see marketing.campaigns).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from mailprime.domain.address import Address
from mailprime.domain.api_keys import ApiKey
from mailprime.domain.campaigns import (
    EDITABLE,
    MAX_DETAIL,
    MAX_LISTS,
    MAX_NAME,
    MAX_RATE,
    Campaign,
    CampaignDraft,
    CampaignStatus,
    IllegalTransition,
    PauseReason,
    SendStatus,
)
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import CampaignId, ContactId, ListId, SegmentId, TemplateId
from mailprime.marketing.campaigns import (
    PreflightFailed,
    cancel_campaign,
    create_campaign,
    delete_campaign,
    draft_of,
    pause_campaign,
    resume_campaign,
    start_campaign,
    update_campaign,
)
from mailprime.marketing.dispatch import DispatchConfig, Dispatcher
from mailprime.marketing.message_builder import HeaderError, header_value
from mailprime.marketing.preflight import Problem as PreflightProblem
from mailprime.marketing.preflight import errors, preflight
from mailprime.marketing.templates import MAX_SUBJECT_SOURCE
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.inject import Injector
from mailprime.web.auth import check_scope, require
from mailprime.web.guards import HeaderText
from mailprime.web.models import (
    MAX_ID,
    After,
    Email,
    PageLimit,
    deps_of,
    field_error,
    problem_with,
)
from mailprime.web.problems import PROBLEM_RESPONSE, FieldError

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

MAX_SMALL_ID = 2**31 - 1  # lists and segments have 32-bit ids (storage/sql/schema.py)
MAX_POSTAL = 500
MAX_TEST = 20  # marketing.dispatch.MAX_TEST_ADDRESSES
PREFLIGHT_TYPE = "urn:mailprime:problem:preflight"

CampaignPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The campaign's id.")]
ListIdIn = Annotated[int, Field(ge=1, le=MAX_SMALL_ID)]
_CONFLICT: dict[int | str, dict[str, Any]] = {409: PROBLEM_RESPONSE}
PREFLIGHT_RESPONSE = {**PROBLEM_RESPONSE, "description": (
    "Invalid fields, or pre-flight errors: one `errors` entry each (`preflight.<code>`), and "
    "every problem, warnings included, in `problems`.")}


# ---- models ----------------------------------------------------------------------------------

def _header_safe(value: str) -> str:
    """The message builder's rule for a header value, not a copy of it: what passes here can
    go into every message of the campaign."""
    try:
        return header_value(value, "the value")
    except HeaderError as exc:
        raise ValueError(exc.message) from None


# A string that becomes (part of) a header field, or a line, of every message of a campaign.
CampaignText = Annotated[HeaderText, AfterValidator(_header_safe)]


class CampaignIn(BaseModel):
    name: CampaignText = Field(min_length=1, max_length=MAX_NAME, description="Unique.")
    template_id: int = Field(ge=1, le=MAX_ID)
    list_ids: list[ListIdIn] = Field(min_length=1, max_length=MAX_LISTS, description=(
        "The lists sent to (each recipient once however many of them they are on)."))
    segment_id: int | None = Field(default=None, ge=1, le=MAX_SMALL_ID, description=(
        "Only the list members who match this segment."))
    from_address: Email
    from_name: CampaignText = Field(default="", max_length=MAX_NAME)
    reply_to: Email | None = None
    subject: CampaignText | None = Field(default=None, min_length=1,
                                         max_length=MAX_SUBJECT_SOURCE, description=(
        "A subject template instead of the template's (absent: the template's)."))
    rate_per_minute: int = Field(default=0, ge=0, le=MAX_RATE, description=(
        "Messages a minute at most; 0: as fast as the queue takes them."))
    track_opens: bool | None = Field(default=None,
                                     description="Absent: `[http] track_opens`.")
    track_clicks: bool | None = Field(default=None,
                                      description="Absent: `[http] track_clicks`.")
    postal_address: CampaignText | None = Field(default=None, max_length=MAX_POSTAL,
                                                description=(
        "The sender's postal address (CAN-SPAM). Absent: `[marketing] postal_address`."))


class CampaignPatch(BaseModel):
    """Absent fields stay as they are. `segment_id`, `reply_to` and `subject` set to null are
    removed; null for any other field leaves it as it is."""

    name: CampaignText | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    template_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    list_ids: list[ListIdIn] | None = Field(default=None, min_length=1, max_length=MAX_LISTS)
    segment_id: int | None = Field(default=None, ge=1, le=MAX_SMALL_ID)
    from_address: Email | None = None
    from_name: CampaignText | None = Field(default=None, max_length=MAX_NAME)
    reply_to: Email | None = None
    subject: CampaignText | None = Field(default=None, min_length=1,
                                         max_length=MAX_SUBJECT_SOURCE)
    rate_per_minute: int | None = Field(default=None, ge=0, le=MAX_RATE)
    track_opens: bool | None = None
    track_clicks: bool | None = None
    postal_address: CampaignText | None = Field(default=None, max_length=MAX_POSTAL)


class CampaignOut(BaseModel):
    id: int
    name: str
    status: CampaignStatus
    pause_reason: PauseReason | None = Field(description="Set while paused: operator, "
                                                         "hard_bounces, complaints or error.")
    pause_detail: str
    template_id: int
    list_ids: list[int]
    segment_id: int | None
    from_address: str
    from_name: str
    reply_to: str | None
    subject: str | None
    rate_per_minute: int
    track_opens: bool
    track_clicks: bool
    postal_address: str
    scheduled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CountersOut(BaseModel):
    """Sends by status, and what the events of those sends say (distinct recipients)."""

    pending: int
    queued: int
    sent: int = Field(description="Handed to the queue (= queued).")
    skipped: int
    failed: int
    delivered: int
    bounced: int
    hard_bounces: int
    complained: int
    opened: int = Field(description="People; machine fetches are in `machine_opens`.")
    machine_opens: int
    clicked: int
    unsubscribed: int
    skipped_by_reason: dict[str, int]
    failed_by_reason: dict[str, int]


class CampaignDetail(CampaignOut):
    counters: CountersOut


class CampaignPage(BaseModel):
    items: list[CampaignOut]
    next_after: int | None


class PreflightItem(BaseModel):
    severity: str = Field(description="error (refuses the start) or warning.")
    code: str
    message: str


class PreflightOut(BaseModel):
    ok: bool = Field(description="No error: the campaign may start.")
    problems: list[PreflightItem]


class StartIn(BaseModel):
    at: datetime | None = Field(default=None, description=(
        "Start at this time (ISO 8601; UTC when it has no offset) instead of now: the "
        "campaign becomes scheduled. Absent or past: it starts sending now."))


class StartOut(BaseModel):
    campaign: CampaignOut
    warnings: list[PreflightItem]


class PauseIn(BaseModel):
    detail: str = Field(default="", max_length=MAX_DETAIL,
                        description="Why (shown with the campaign).")


class SendTestIn(BaseModel):
    to: list[Email] = Field(min_length=1, max_length=MAX_TEST, description=(
        "The message goes to each, with \"[Test]\" before the subject; a stored contact's "
        "data fill the merge fields. Not counted, no send rows."))


class QueuedTest(BaseModel):
    email: str
    queue_id: str


class SendTestOut(BaseModel):
    queued: list[QueuedTest]


class SendOut(BaseModel):
    contact_id: int
    email: str
    status: SendStatus
    queue_id: str | None
    reason: str = Field(description="skipped/failed: a short code (the gate's refusal, ...).")
    detail: str
    at: datetime | None


class SendPage(BaseModel):
    items: list[SendOut]
    next_after: int | None


# ---- helpers ---------------------------------------------------------------------------------

def _out(c: Campaign) -> CampaignOut:
    return CampaignOut(
        id=c.id, name=c.name, status=c.status, pause_reason=c.pause_reason,
        pause_detail=c.pause_detail, template_id=c.template_id, list_ids=list(c.list_ids),
        segment_id=c.segment_id, from_address=c.from_address, from_name=c.from_name,
        reply_to=c.reply_to, subject=c.subject, rate_per_minute=c.rate_per_minute,
        track_opens=c.track_opens, track_clicks=c.track_clicks,
        postal_address=c.postal_address, scheduled_at=c.scheduled_at, created_at=c.created_at,
        updated_at=c.updated_at, started_at=c.started_at, finished_at=c.finished_at)


def _items(problems: list[PreflightProblem]) -> list[PreflightItem]:
    return [PreflightItem(severity=p.severity.value, code=p.code, message=p.message)
            for p in problems]


def _refused(request: Request, exc: PreflightFailed, detail: str) -> JSONResponse:
    problems = list(exc.problems)
    found = errors(problems)
    return problem_with(
        request, 422, f"{detail}: {len(found)} pre-flight error(s)",
        [FieldError(field=f"preflight.{p.code}", message=p.message) for p in found],
        type=PREFLIGHT_TYPE,
        problems=[item.model_dump() for item in _items(problems)])


async def _get(request: Request, campaign_id: int) -> Campaign:
    found = await deps_of(request).store.get_campaign(CampaignId(campaign_id))
    if found is None:
        raise HTTPException(404, f"no campaign #{campaign_id}")
    return found


async def _check_refs(request: Request, draft: CampaignDraft) -> None:
    """422s naming the field for what the draft names and does not exist (the use case checks
    again, in case something is deleted meanwhile: then a 404)."""
    store = deps_of(request).store
    if len(set(draft.list_ids)) != len(draft.list_ids):
        raise field_error("body.list_ids", "a list is named twice")
    if await store.get_template(draft.template_id) is None:
        raise field_error("body.template_id", f"no template #{draft.template_id}")
    for list_id in draft.list_ids:
        if await store.get_list_by_id(list_id) is None:
            raise field_error("body.list_ids", f"no list #{list_id}")
    if draft.segment_id is not None and not any(
            s.id == draft.segment_id for s in await store.list_segments()):
        raise field_error("body.segment_id", f"no segment #{draft.segment_id}")


def _mailbox(text: str, where: str) -> str:
    """An address for the envelope and header fields (RFC 5321 4.1.2, as the SMTP paths parse
    it: a sender's own test domains are fine here, unlike for contacts), or a field problem."""
    try:
        parsed = str(Address.parse(text.strip()))
    except InvalidAddress as exc:
        raise field_error(where, exc.message) from None
    if any(ch in parsed for ch in ' <>,;"'):  # a quoted local part: no campaign may have one
        raise field_error(where, "a quoted local part or display syntax is not accepted here")
    return parsed


def _name(value: str) -> str:
    name = value.strip()
    if not name:
        raise field_error("body.name", "a campaign name is not only white space")
    return name


def _utc(at: datetime) -> datetime:
    """`at` in UTC (no offset: UTC). One that UTC cannot write (year 9999 with a negative
    offset is year 10000 there) is a field problem, not a 500 from the database layer."""
    try:
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise field_error("body.at", "not a time that can be written in UTC") from None


def _dispatcher(request: Request) -> Dispatcher:
    """A dispatcher for test sends, wired as the runtime wires the server's: the injector's
    DKIM signer (its key cache) and worker wake-up when the runtime gave the app one, else a
    signer of the app's own, kept for the next request."""
    deps = deps_of(request)
    state = request.app.state
    injector = getattr(state, "injector", None)
    dkim = injector.dkim if isinstance(injector, Injector) else None
    if dkim is None:
        dkim = getattr(state, "campaign_dkim", None)
        if not isinstance(dkim, DkimSigner):
            dkim = state.campaign_dkim = DkimSigner(deps.store, deps.clock)
    return Dispatcher(deps.store, dkim, deps.signer,
                      DispatchConfig(base_url=deps.settings.http.base_url), clock=deps.clock,
                      on_queued=injector.on_queued if isinstance(injector, Injector) else None)


# ---- routes ----------------------------------------------------------------------------------

@router.get("", response_model=CampaignPage, summary="Campaigns, by id (keyset pages)")
async def list_campaigns(request: Request,
                         _key: Annotated[ApiKey, Depends(require("campaigns:read"))],
                         status: Annotated[CampaignStatus | None, Query()] = None,
                         after: After = None, limit: PageLimit = 100) -> CampaignPage:
    rows = await deps_of(request).store.list_campaigns(
        status=status, limit=limit + 1, after=CampaignId(after) if after is not None else None)
    page = list(rows[:limit])
    return CampaignPage(items=[_out(c) for c in page],
                        next_after=page[-1].id if len(rows) > limit and page else None)


@router.post("", response_model=CampaignOut, status_code=201,
             summary="Create a campaign (a draft)",
             responses={409: {"description": "The name is in use."}})
async def create(request: Request, body: CampaignIn,
                 _key: Annotated[ApiKey, Depends(require("campaigns:write"))]) -> CampaignOut:
    settings = deps_of(request).settings
    draft = CampaignDraft(
        name=_name(body.name), template_id=TemplateId(body.template_id),
        list_ids=tuple(ListId(i) for i in body.list_ids),
        from_address=_mailbox(body.from_address, "body.from_address"),
        from_name=body.from_name,
        reply_to=_mailbox(body.reply_to, "body.reply_to") if body.reply_to is not None else None,
        subject=body.subject,
        segment_id=SegmentId(body.segment_id) if body.segment_id is not None else None,
        rate_per_minute=body.rate_per_minute,
        track_opens=settings.http.track_opens if body.track_opens is None else body.track_opens,
        track_clicks=(settings.http.track_clicks if body.track_clicks is None
                      else body.track_clicks),
        postal_address=(settings.marketing.postal_address if body.postal_address is None
                        else body.postal_address))
    await _check_refs(request, draft)
    return _out(await create_campaign(deps_of(request).store, draft))


@router.get("/{campaign_id}", response_model=CampaignDetail,
            summary="Read a campaign, with its counters")
async def read(request: Request, campaign_id: CampaignPath,
               _key: Annotated[ApiKey, Depends(require("campaigns:read"))]) -> CampaignDetail:
    found = await _get(request, campaign_id)
    s = await deps_of(request).store.campaign_stats(found.id)
    k = s.counters
    counters = CountersOut(
        pending=k.pending, queued=k.queued, sent=k.sent, skipped=k.skipped, failed=k.failed,
        delivered=s.delivered, bounced=s.bounced, hard_bounces=k.hard_bounces,
        complained=k.complaints, opened=s.opened, machine_opens=s.machine_opens,
        clicked=s.clicked, unsubscribed=s.unsubscribed,
        skipped_by_reason=dict(s.skipped_by_reason), failed_by_reason=dict(s.failed_by_reason))
    return CampaignDetail(**_out(found).model_dump(), counters=counters)


@router.patch("/{campaign_id}", response_model=CampaignOut,
              summary="Change a draft or scheduled campaign",
              responses={403: {"description": "The key lacks campaigns:write, or the campaign "
                                              "is scheduled and it lacks campaigns:send."},
                         409: {"description": "Not a draft or scheduled campaign (or no longer "
                                              "in the status it was read in), or the name is "
                                              "in use."},
                         422: PREFLIGHT_RESPONSE})
async def update(request: Request, campaign_id: CampaignPath, body: CampaignPatch,
                 key: Annotated[ApiKey, Depends(require("campaigns:write"))]
                 ) -> CampaignOut | JSONResponse:
    """A scheduled campaign stays scheduled for its time, and must pass the pre-flight with
    the new settings (422 like a start otherwise); changing it takes campaigns:send too."""
    deps = deps_of(request)
    found = await _get(request, campaign_id)
    if found.status is CampaignStatus.SCHEDULED:
        check_scope(key, "campaigns:send", ": the campaign is scheduled, and what it is "
                                           "changed to is what the runner sends at its time")
    was = draft_of(found)
    given = body.model_fields_set
    draft = CampaignDraft(
        name=_name(body.name) if body.name is not None else was.name,
        template_id=(TemplateId(body.template_id) if body.template_id is not None
                     else was.template_id),
        list_ids=(tuple(ListId(i) for i in body.list_ids) if body.list_ids is not None
                  else was.list_ids),
        from_address=(_mailbox(body.from_address, "body.from_address")
                      if body.from_address is not None else was.from_address),
        from_name=body.from_name if body.from_name is not None else was.from_name,
        reply_to=((_mailbox(body.reply_to, "body.reply_to") if body.reply_to is not None
                   else None) if "reply_to" in given else was.reply_to),
        subject=body.subject if "subject" in given else was.subject,
        segment_id=((SegmentId(body.segment_id) if body.segment_id is not None else None)
                    if "segment_id" in given else was.segment_id),
        rate_per_minute=(body.rate_per_minute if body.rate_per_minute is not None
                         else was.rate_per_minute),
        track_opens=body.track_opens if body.track_opens is not None else was.track_opens,
        track_clicks=body.track_clicks if body.track_clicks is not None else was.track_clicks,
        postal_address=(body.postal_address if body.postal_address is not None
                        else was.postal_address))
    await _check_refs(request, draft)
    try:
        changed = await update_campaign(deps.store, found, draft,
                                        base_url=deps.settings.http.base_url, spam=deps.spam)
    except PreflightFailed as exc:
        return _refused(request, exc, "the scheduled campaign would no longer start")
    return _out(changed)


@router.delete("/{campaign_id}", status_code=204, response_class=Response,
               summary="Delete a draft", responses=_CONFLICT)
async def delete(request: Request, campaign_id: CampaignPath,
                 _key: Annotated[ApiKey, Depends(require("campaigns:write"))]) -> Response:
    """Only a draft: anything else is 409 (cancel it: its record and counters stay)."""
    found = await _get(request, campaign_id)
    if not await delete_campaign(deps_of(request).store, found):
        raise HTTPException(404, f"no campaign #{campaign_id}")
    return Response(status_code=204)


@router.post("/{campaign_id}/preflight", response_model=PreflightOut,
             summary="What would hurt the campaign's inbox placement (errors refuse a start)")
async def run_preflight(request: Request, campaign_id: CampaignPath,
                        _key: Annotated[ApiKey, Depends(require("campaigns:read"))]
                        ) -> PreflightOut:
    found = await _get(request, campaign_id)
    deps = deps_of(request)
    problems = await preflight(deps.store, found, base_url=deps.settings.http.base_url,
                               spam=deps.spam)
    return PreflightOut(ok=not errors(problems), problems=_items(problems))


@router.post("/{campaign_id}/start", response_model=StartOut,
             summary="Pre-flight, then send now or schedule",
             responses={409: PROBLEM_RESPONSE, 422: PREFLIGHT_RESPONSE})
async def start(request: Request, campaign_id: CampaignPath,
                _key: Annotated[ApiKey, Depends(require("campaigns:send"))],
                body: Annotated[StartIn | None, Body()] = None) -> StartOut | JSONResponse:
    """From draft or scheduled (a scheduled campaign is re-scheduled, or started now). A
    paused campaign is resumed, not started (409)."""
    deps = deps_of(request)
    found = await _get(request, campaign_id)
    if found.status not in EDITABLE:
        raise IllegalTransition(f"campaign {found.name!r} is {found.status}: only a draft or a "
                                "scheduled campaign is started (a paused one is resumed)")
    at = _utc(body.at) if body is not None and body.at is not None else None
    try:
        moved, problems = await start_campaign(deps.store, found,
                                               base_url=deps.settings.http.base_url,
                                               now=deps.clock.now(), at=at, spam=deps.spam)
    except PreflightFailed as exc:
        return _refused(request, exc, "the campaign cannot start")
    return StartOut(campaign=_out(moved), warnings=_items(problems))


@router.post("/{campaign_id}/pause", response_model=CampaignOut,
             summary="Pause a sending campaign", responses=_CONFLICT)
async def pause(request: Request, campaign_id: CampaignPath,
                _key: Annotated[ApiKey, Depends(require("campaigns:write"))],
                body: Annotated[PauseIn | None, Body()] = None) -> CampaignOut:
    """It stops after the batch in hand; the pause reason is `operator`."""
    found = await _get(request, campaign_id)
    detail = body.detail if body is not None else ""
    return _out(await pause_campaign(deps_of(request).store, found, detail))


@router.post("/{campaign_id}/resume", response_model=CampaignOut,
             summary="Resume a paused campaign", responses=_CONFLICT)
async def resume(request: Request, campaign_id: CampaignPath,
                 _key: Annotated[ApiKey, Depends(require("campaigns:send"))]) -> CampaignOut:
    """Where it stopped: nobody is mailed twice."""
    found = await _get(request, campaign_id)
    return _out(await resume_campaign(deps_of(request).store, found))


@router.post("/{campaign_id}/cancel", response_model=CampaignOut,
             summary="Cancel a campaign for good", responses=_CONFLICT)
async def cancel(request: Request, campaign_id: CampaignPath,
                 _key: Annotated[ApiKey, Depends(require("campaigns:write"))]) -> CampaignOut:
    """What is queued already still goes out; nothing more is."""
    found = await _get(request, campaign_id)
    return _out(await cancel_campaign(deps_of(request).store, found))


@router.post("/{campaign_id}/test", response_model=SendTestOut, status_code=202,
             summary="Queue the campaign's message to a few addresses")
async def send_test(request: Request, campaign_id: CampaignPath, body: SendTestIn,
                    _key: Annotated[ApiKey, Depends(require("campaigns:send"))]) -> SendTestOut:
    """"[Test]" before the subject, no tracking, no send rows (not counted). 422 when the
    message cannot be built (the template no longer compiles, links are not https, ...)."""
    found = await _get(request, campaign_id)
    targets = [_mailbox(email, f"body.to.{n}") for n, email in enumerate(body.to)]
    queued = await _dispatcher(request).test_send(found, targets)
    return SendTestOut(queued=[QueuedTest(email=e, queue_id=q)
                           for e, q in zip(targets, queued, strict=True)])


@router.get("/{campaign_id}/sends", response_model=SendPage,
            summary="The campaign's send log: one row per recipient (keyset pages)")
async def list_sends(request: Request, campaign_id: CampaignPath,
                     _key: Annotated[ApiKey, Depends(require("campaigns:read"))],
                     status: Annotated[SendStatus | None, Query()] = None,
                     after: After = None, limit: PageLimit = 100) -> SendPage:
    found = await _get(request, campaign_id)
    rows = await deps_of(request).store.list_sends(
        found.id, status=status, after=ContactId(after) if after is not None else None,
        limit=limit + 1)
    page = list(rows[:limit])
    return SendPage(
        items=[SendOut(contact_id=r.contact_id, email=r.email, status=r.status,
                       queue_id=r.queue_id, reason=r.reason, detail=r.detail, at=r.at)
               for r in page],
        next_after=page[-1].contact_id if len(rows) > limit and page else None)


__all__ = ["router"]
