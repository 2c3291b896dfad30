"""/api/v1/templates: create, list, read, replace, delete; preview with sample data; check.

Theory of operation. A template is stored only if it compiles (marketing.templates): every
syntax and size problem comes back at once in one 422 problem, one `errors` entry per problem
naming the part as a body field (`body.html`) and the line, so a client can mark them all.
Preview renders for a sample (given inline, or a stored contact by address) with a placeholder
unsubscribe link; check returns what a campaign would refuse the template for, as data (200),
not as an error: the template is fine as a resource, the answer is about its use. The checks
are the CLI's (`mailprime template check`): unknown merge fields in any branch, attributes the
sample lacks and nothing guards, render errors, and the compliance rules (visible unsubscribe
link, postal address) with the configured `[marketing] postal_address`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.ids import TemplateId
from mailprime.domain.templates import Template, TemplateFields
from mailprime.marketing.contacts import MAX_NAME as MAX_CONTACT_NAME
from mailprime.marketing.template_rules import check_compliance
from mailprime.marketing.templates import (
    MAX_BODY_SOURCE,
    MAX_NAME,
    MAX_SUBJECT_SOURCE,
    CompiledTemplate,
    Recipient,
    RenderError,
    TemplateError,
    check,
    compile_template,
    render_preview,
)
from mailprime.web.auth import require
from mailprime.web.guards import HeaderText
from mailprime.web.models import (
    MAX_EMAIL,
    MAX_ID,
    AttributesIn,
    deps_of,
    field_error,
    problem_with,
)
from mailprime.web.problems import FieldError

router = APIRouter(prefix="/templates", tags=["templates"])

TemplatePath = Annotated[int, Path(ge=1, le=MAX_ID, description="The template's id.")]
SAMPLE_EMAIL = "sample@example.invalid"


class TemplateOut(BaseModel):
    id: int
    name: str
    subject: str
    html: str
    text: str | None
    created_at: datetime
    updated_at: datetime


class TemplateSummary(BaseModel):
    id: int
    name: str
    subject: str
    updated_at: datetime


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    subject: HeaderText = Field(min_length=1, max_length=MAX_SUBJECT_SOURCE, description=(
        "A one-line Jinja2 template; becomes the Subject field, so no CR, LF or NUL."))
    html: str = Field(min_length=1, max_length=MAX_BODY_SOURCE)
    text: str | None = Field(default=None, max_length=MAX_BODY_SOURCE,
                             description="Absent: made from the HTML.")


class SampleContact(BaseModel):
    email: str = Field(default=SAMPLE_EMAIL, min_length=3, max_length=MAX_EMAIL)
    name: str = Field(default="Sample Contact", max_length=MAX_CONTACT_NAME)
    attributes: AttributesIn = Field(default_factory=dict)


class SampleIn(BaseModel):
    contact: SampleContact | None = Field(default=None, description="Sample data, inline.")
    email: str | None = Field(default=None, max_length=MAX_EMAIL, description=(
        "Or: use this stored contact as the sample. Neither: a contact with no attributes."))
    list_name: str = Field(default="List", max_length=200)
    campaign_name: str = Field(default="Campaign", max_length=200)


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


class TemplateProblemOut(BaseModel):
    part: str
    line: int
    message: str
    name: str = Field(description="The merge field concerned, when there is one.")


class ComplianceOut(BaseModel):
    code: str
    part: str
    message: str


class CheckOut(BaseModel):
    ok: bool = Field(description="Nothing keeps a campaign from using the template.")
    problems: list[TemplateProblemOut]
    compliance: list[ComplianceOut]


def _out(t: Template) -> TemplateOut:
    return TemplateOut(id=t.id, name=t.name, subject=t.subject, html=t.html, text=t.text,
                       created_at=t.created_at, updated_at=t.updated_at)


def _compile(request: Request, subject: str, html: str, text: str | None
             ) -> CompiledTemplate | JSONResponse:
    try:
        return compile_template(subject, html, text)
    except TemplateError as exc:
        errors = [FieldError(field=f"body.{p.part}", message=f"line {p.line}: {p.message}")
                  for p in exc.problems]
        return problem_with(request, 422, "the template does not compile", errors)


async def _get(request: Request, template_id: int) -> Template:
    found = await deps_of(request).store.get_template(TemplateId(template_id))
    if found is None:
        raise HTTPException(404, f"no template #{template_id}")
    return found


async def _sample(request: Request, body: SampleIn) -> Recipient:
    if body.contact is not None and body.email is not None:
        raise field_error("body.email", "give `contact` or `email`, not both")
    if body.email is not None:
        contact = await deps_of(request).store.get_contact(body.email)
        if contact is None:
            raise field_error("body.email", f"no contact {body.email}", 404)
        return Recipient(contact.email, contact.name, dict(contact.attributes), contact.id)
    if body.contact is not None:
        return Recipient(body.contact.email, body.contact.name, dict(body.contact.attributes))
    return Recipient(SAMPLE_EMAIL, "Sample Contact")


@router.get("", response_model=list[TemplateSummary], summary="Templates, by name")
async def list_templates(request: Request,
                         _key: Annotated[ApiKey, Depends(require("templates:read"))],
                         limit: Annotated[int, Query(ge=1, le=1000)] = 1000
                         ) -> list[TemplateSummary]:
    return [TemplateSummary(id=t.id, name=t.name, subject=t.subject, updated_at=t.updated_at)
            for t in await deps_of(request).store.list_templates(limit=limit)]


@router.post("", response_model=TemplateOut, status_code=201, summary="Store a template",
             responses={409: {"description": "The name is in use."}})
async def create_template(request: Request, body: TemplateIn,
                          _key: Annotated[ApiKey, Depends(require("templates:write"))]
                          ) -> TemplateOut | JSONResponse:
    compiled = _compile(request, body.subject, body.html, body.text)
    if isinstance(compiled, JSONResponse):
        return compiled
    made = await deps_of(request).store.create_template(
        TemplateFields(body.name.strip(), body.subject, body.html, body.text))
    return _out(made)


@router.get("/{template_id}", response_model=TemplateOut, summary="Read a template")
async def get_template(request: Request, template_id: TemplatePath,
                       _key: Annotated[ApiKey, Depends(require("templates:read"))]
                       ) -> TemplateOut:
    return _out(await _get(request, template_id))


@router.put("/{template_id}", response_model=TemplateOut, summary="Replace a template",
            responses={409: {"description": "The new name is in use, or a campaign under way "
                                             "(scheduled, sending, paused) uses the template "
                                             "and the content would change."}})
async def replace_template(request: Request, template_id: TemplatePath, body: TemplateIn,
                           _key: Annotated[ApiKey, Depends(require("templates:write"))]
                           ) -> TemplateOut | JSONResponse:
    await _get(request, template_id)
    compiled = _compile(request, body.subject, body.html, body.text)
    if isinstance(compiled, JSONResponse):
        return compiled
    updated = await deps_of(request).store.update_template(
        TemplateId(template_id),
        TemplateFields(body.name.strip(), body.subject, body.html, body.text))
    return _out(updated)


@router.delete("/{template_id}", status_code=204, response_class=Response,
               summary="Delete a template",
               responses={409: {"description": "A campaign under way (scheduled, sending, "
                                               "paused) uses the template."}})
async def delete_template(request: Request, template_id: TemplatePath,
                          _key: Annotated[ApiKey, Depends(require("templates:write"))]
                          ) -> Response:
    if not await deps_of(request).store.delete_template(TemplateId(template_id)):
        raise HTTPException(404, f"no template #{template_id}")
    return Response(status_code=204)


def _compiled_or_409(t: Template) -> CompiledTemplate:
    try:
        return compile_template(t.subject, t.html, t.text)
    except TemplateError as exc:  # stored before a rule changed: say what, do not crash
        raise HTTPException(409, f"the stored template no longer compiles: {exc.message}") from None


@router.post("/{template_id}/preview", response_model=PreviewOut,
             summary="Render a template for sample data")
async def preview_template(request: Request, template_id: TemplatePath, body: SampleIn,
                           _key: Annotated[ApiKey, Depends(require("templates:read"))]
                           ) -> PreviewOut:
    """With a placeholder unsubscribe link and the configured postal address. A render error
    (an unknown field for this sample) is a 422 naming the part and line."""
    compiled = _compiled_or_409(await _get(request, template_id))
    sample = await _sample(request, body)
    try:
        rendered = render_preview(compiled, sample,
                                  postal_address=deps_of(request).settings.marketing.postal_address,
                                  list_name=body.list_name, campaign_name=body.campaign_name)
    except RenderError as exc:
        p = exc.problem
        raise field_error(f"template.{p.part}", f"line {p.line}: {p.message}") from None
    return PreviewOut(subject=rendered.subject, html=rendered.html, text=rendered.text)


@router.post("/{template_id}/check", response_model=CheckOut,
             summary="What a campaign would refuse the template for")
async def check_template(request: Request, template_id: TemplatePath, body: SampleIn,
                         _key: Annotated[ApiKey, Depends(require("templates:read"))]
                         ) -> CheckOut:
    compiled = _compiled_or_409(await _get(request, template_id))
    sample = await _sample(request, body)
    postal = deps_of(request).settings.marketing.postal_address
    problems = check(compiled, sample, postal_address=postal or "x",
                     list_name=body.list_name, campaign_name=body.campaign_name)
    compliance = check_compliance(compiled, postal_address=postal, sample=sample)
    return CheckOut(
        ok=not problems and not compliance,
        problems=[TemplateProblemOut(part=p.part, line=p.line, message=p.message, name=p.name)
                  for p in problems],
        compliance=[ComplianceOut(code=c.code, part=c.part, message=c.message)
                    for c in compliance])


__all__ = ["router"]
