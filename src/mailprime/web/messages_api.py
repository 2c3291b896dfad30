"""POST /api/v1/messages: transactional sending, with the Idempotency-Key header honoured.

Theory of operation
-------------------
A request is checked whole before anything is queued, so a refusal never leaves half a send:
pydantic bounds every field (lengths, counts; header values are HeaderText, which refuses
CR/LF); then this module checks what needs the store or parsing: addresses (RFC 5321 4.1.2,
4.5.3.1), the From domain (local, with an active DKIM key: mail that leaves unsigned is mail
that DMARC fails), header names (RFC 5322 3.6.8) against a deny-list of fields the server owns,
attachments (base64, size, content type), the template, and the suppression gate. Then one
message is built with the stdlib email package and handed to the Injector, the same path as
submitted and DSN mail: DKIM-signed, queued with Priority.TRANSACTIONAL, durable before the
202 is sent.

Suppressed recipients are dropped, not fatal: the others get the message and the response lists
each recipient with its status ("queued" or "suppressed" and why), so one bad address in a
receipt's Cc does not stop the receipt. When every recipient is suppressed nothing is queued and
the answer is a 422 problem naming them. The dropped ones stay in the To/Cc header fields (what
the other recipients see is what the sender wrote); only the envelope leaves them out.

Idempotency (the IETF httpapi draft "The Idempotency-Key HTTP Header Field"; Stripe's
semantics): the first request with a key claims it (per API key: two clients cannot collide)
with the SHA-256 of its canonical JSON body; on success its 202 and body are stored and any
later request with that key and the same body gets exactly that answer back (header
`Idempotent-Replayed: true`) without sending again; with another body, 422; while the first is
still running, 409. A refused request (4xx) releases the key: nothing was sent, and a retry
after fixing the cause (a DKIM key added, a suppression lifted) must be able to go through.
Records are kept 24 hours (services.webhooks purges them).

No send twice, even across a crash (the rule of marketing.dispatch, for one message):
1. The claim writes the record with the queue id the message will have, chosen now; the
   record's created_at is the claimer's ownership token.
2. Once the message is built, the response it will get (that id, its Message-ID, the
   recipients' statuses) is written on the pending record, if the request still owns it:
   one taken over meanwhile (below) stops there with a 409 and does not accept.
3. The message is accepted under that queue id. The store accepts a queue id once (the
   queue's primary key while it is queued; the QUEUED/STORED events of an earlier accept for
   any message, one for local mailboxes only included): a second accept fails, AlreadyExists.
4. The record is completed with the response, if the request still owns it (a completed
   record is never overwritten).
A retry that finds the record pending asks the store whether its queue id was accepted
(`accepted_queue_ids`: queued, or its QUEUED/STORED event): if so the first request got past 3
and died (or is finishing), and the retry answers with the response of 2 (Idempotent-Replayed),
completing the record. If not, it waits (409) until the record is STALE_SECONDS old, then takes
it over, keeping the queue id, and sends under it. Should the first request have been slow
rather than dead, both accept under that queue id and one is refused as a second accept; every
answer then describes the one message accepted. The two builds agree on its id and its
Message-ID, which is made from the queue id (`signed_message_id`), but not always on the
recipients' statuses (a suppression added in between), so the refused one answers with the
response the accepted one prepared (Idempotent-Replayed): the taker with the one its claim
found on the record (the slow request's), the slow request with the one on the record now (the
taker's). Only the owner completes the record; a slow request whose accept landed answers its
own client and leaves the record to the taker. So whatever moment a process dies (or stalls)
at, a key sends at most one message, and its answers name that message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mailprime.domain.address import Address
from mailprime.domain.api_keys import ApiKey
from mailprime.domain.errors import AlreadyExists, Conflict, InvalidAddress
from mailprime.domain.ids import QueueId, TemplateId, new_queue_id
from mailprime.domain.mail import Priority
from mailprime.marketing.gate import Purpose, SendGate
from mailprime.marketing.templates import (
    MergeData,
    Recipient,
    RenderError,
    TemplateError,
    compile_template,
    render,
)
from mailprime.message.msgid_token import MsgIdCodec, QueueOrigin
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.inject import Injector
from mailprime.web.auth import require
from mailprime.web.deps import WebDeps
from mailprime.web.guards import HeaderText
from mailprime.web.problems import (
    PROBLEM_RESPONSE,
    VALIDATION_TYPE,
    FieldError,
    problem_response,
)

router = APIRouter(prefix="/messages", tags=["messages"])

# RFC 5321 4.5.3.1.8: a server must take at least 100 recipients per transaction; one API
# message is one transaction, so 100 is what any receiving path can take at once.
MAX_RECIPIENTS = 100
MAX_BODY = 1_000_000  # characters of the html or text part
MAX_HEADERS = 50
MAX_TAGS = 10
MAX_ATTACHMENTS = 10
MAX_DATA_OCTETS = 65_536  # template data, as JSON
STALE_SECONDS = 60.0  # a pending idempotency record older than this belongs to a dead request
IDEMPOTENCY_TTL = timedelta(hours=24)
REUSE_TYPE = "urn:mailprime:problem:idempotency-key-reused"
IN_PROGRESS_TYPE = "urn:mailprime:problem:idempotency-key-in-progress"

# RFC 5322 3.6.8: a field name is printable US-ASCII except ":" (and 76 characters keeps the
# name and its colon on the first line, RFC 5322 2.1.1's recommended 78).
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
# Fields the server writes itself, or that only a relay or the receiving side may add: set by
# a client they would forge trace or authentication results, or break the message's structure.
DENIED_HEADERS = frozenset(name.lower() for name in (
    "Received", "Return-Path", "DKIM-Signature", "DomainKey-Signature", "ARC-Seal",
    "ARC-Message-Signature", "ARC-Authentication-Results", "Authentication-Results",
    "Received-SPF", "Delivered-To", "X-Original-To", "From", "Sender", "To", "Cc", "Bcc",
    "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Content-Disposition", "Content-ID", "Resent-From",
    "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-Date",
    "Resent-Message-ID", "X-Mailprime-Tags", "Feedback-ID", "TLS-Required"))
# RFC 2045 5.1 token/token; types that run code where a reader double-clicks are refused, and
# their usual file name extensions too (what the large mailbox providers refuse as well).
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
DENIED_TYPES = frozenset({
    "application/x-msdownload", "application/x-msdos-program", "application/x-ms-installer",
    "application/x-msi", "application/x-sh", "application/x-csh", "application/x-bat",
    "application/vnd.microsoft.portable-executable", "application/java-archive",
    "application/x-java-archive", "application/hta", "application/x-ms-shortcut"})
DENIED_EXTENSIONS = frozenset({
    "exe", "com", "bat", "cmd", "scr", "pif", "msi", "msp", "jar", "js", "jse", "vbs", "vbe",
    "wsf", "wsh", "hta", "cpl", "lnk", "ps1", "reg", "sh", "dll", "apk", "app"})
_TAG = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320, description="The address (RFC 5321 4.5.3.1.3).")
    name: HeaderText = Field(default="", max_length=200, description="A display name.")


AddressField = Annotated[str, Field(max_length=320)] | AddressIn


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: HeaderText = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=192,
                              description="type/subtype (RFC 2045 5.1); executables refused.")
    content: str = Field(max_length=14_000_000, description="The file, base64 (RFC 4648 4).")
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: HeaderText | None = Field(
        default=None, max_length=200, description="For inline parts: cid: references in the HTML.")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: AddressField = Field(alias="from", description="At a local domain with a DKIM key.")
    to: list[AddressField] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[AddressField] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[AddressField] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: AddressField | None = None
    subject: HeaderText | None = Field(default=None, min_length=1, max_length=998,
                                       description="Required unless a template gives it.")
    html: str | None = Field(default=None, max_length=MAX_BODY)
    text: str | None = Field(default=None, max_length=MAX_BODY)
    template_id: int | None = Field(default=None, ge=1, le=2**53,
                                    description="A stored template, instead of html/text.")
    data: dict[str, Any] = Field(default_factory=dict,
                                 description="Template data: `{{ attributes.key }}`.")
    headers: dict[str, HeaderText] = Field(default_factory=dict, max_length=MAX_HEADERS)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class RecipientStatus(BaseModel):
    email: str
    status: Literal["queued", "suppressed"]
    reason: str = ""


class MessageAccepted(BaseModel):
    id: str = Field(description="The queue id (events and webhooks name it as queue_id).")
    message_id: str = Field(description="The Message-ID field of the message.")
    recipients: list[RecipientStatus]


class MessageQueue(Protocol):
    """What sends: services.inject.Injector (DKIM signing, the queue, local mailboxes)."""

    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = ..., source: str = ...,
                     queue_id: QueueId | None = ...) -> QueueId | None: ...


class Refused(Exception):
    """A request that cannot be sent as it is: answered as a problem, nothing queued."""

    def __init__(self, status: int, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)


def _field(field: str, message: str, status: int = 422) -> Refused:
    return Refused(status, f"{field}: {message}", [FieldError(field=field, message=message)])


def _address(value: str | AddressIn, field: str) -> tuple[Address, str]:
    text, name = (value, "") if isinstance(value, str) else (value.email, value.name)
    try:
        address = Address.parse(text)
    except InvalidAddress as exc:
        raise _field(field, exc.message) from None
    if not address.local.isascii():  # would need SMTPUTF8 end to end (RFC 6531)
        raise _field(field, "a non-ASCII local part is not supported by this API")
    return address, name


def _header_address(address: Address, name: str) -> HeaderAddress:
    return HeaderAddress(display_name=name, username=address.local, domain=address.domain)


def _attachment(item: AttachmentIn, field: str) -> tuple[bytes, str, str]:
    content_type = item.content_type.lower()
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise _field(f"{field}.content_type", "not a type/subtype (RFC 2045 5.1)")
    extension = item.filename.rpartition(".")[2].lower() if "." in item.filename else ""
    if content_type in DENIED_TYPES or extension in DENIED_EXTENSIONS:
        raise _field(field, "executable attachments are refused (mailbox providers reject "
                            "the whole message for them)")
    try:
        data = base64.b64decode(item.content, validate=True)
    except (binascii.Error, ValueError):
        raise _field(f"{field}.content", "not base64 (RFC 4648 4)") from None
    maintype, _, subtype = content_type.partition("/")
    return data, maintype, subtype


async def _from_domain_ready(deps: WebDeps, address: Address) -> None:
    if not await deps.store.is_local_domain(address.domain):
        raise _field("body.from", f"{address.domain} is not a local domain of this server")
    if not await deps.store.list_dkim_keys(address.domain, active_only=True):
        raise _field("body.from", f"{address.domain} has no active DKIM key (mailprime dkim "
                                  "generate): unsigned mail fails DMARC")


async def _content(deps: WebDeps, body: MessageIn, first: tuple[Address, str]
                   ) -> tuple[str, str | None, str | None]:
    """(subject, html, text), from the request or rendered from its template."""
    if body.template_id is None:
        if body.html is None and body.text is None:
            raise _field("body", "give html and/or text, or a template_id")
        if body.subject is None:
            raise _field("body.subject", "a subject is required without a template")
        return body.subject, body.html, body.text
    if body.html is not None or body.text is not None:
        raise _field("body.template_id", "give either a template or html/text, not both")
    if len(json.dumps(body.data)) > MAX_DATA_OCTETS:
        raise _field("body.data", f"larger than {MAX_DATA_OCTETS} octets as JSON")
    stored = await deps.store.get_template(TemplateId(body.template_id))
    if stored is None:
        raise _field("body.template_id", f"no template #{body.template_id}")
    try:
        compiled = compile_template(stored.subject, stored.html, stored.text)
        rendered = render(compiled, MergeData(Recipient(
            email=str(first[0]), name=first[1], attributes=body.data)))
    except (TemplateError, RenderError) as exc:
        raise _field("body.template_id", f"the template failed: {exc.message}") from None
    subject = body.subject or rendered.subject
    if "\r" in subject or "\n" in subject or len(subject) > 998:
        raise _field("body.template_id", "the rendered subject is not one line of at most 998")
    return subject, rendered.html, rendered.text


def build_message(body: MessageIn, sender: tuple[Address, str],
                  recipients: dict[str, list[tuple[Address, str]]], *, subject: str,
                  html: str | None, text: str | None, message_id: str, date: str) -> bytes:
    """The message, CRLF line ends (RFC 5322 2.1), header values folded and encoded by the
    email package (RFC 2047 for non-ASCII); Bcc recipients are in the envelope only."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _header_address(*sender)
    for name in ("to", "cc"):
        if recipients[name]:
            msg[name.capitalize()] = [_header_address(a, n) for a, n in recipients[name]]
    if body.reply_to is not None:
        msg["Reply-To"] = _header_address(*_address(body.reply_to, "body.reply_to"))
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    for name, value in body.headers.items():
        msg[name] = value
    if body.tags:
        msg["X-Mailprime-Tags"] = ", ".join(body.tags)
    if text is not None:
        msg.set_content(text, subtype="plain", cte=_cte(text))
        if html is not None:
            msg.add_alternative(html, subtype="html", cte=_cte(html))
    else:
        assert html is not None
        msg.set_content(html, subtype="html", cte=_cte(html))
    for i, item in enumerate(body.attachments):
        data, maintype, subtype = _attachment(item, f"body.attachments.{i}")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=item.filename,
                           disposition=item.disposition, cid=item.content_id)
    return msg.as_bytes()


def _cte(text: str) -> str:
    ascii_short = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    return "7bit" if ascii_short else "quoted-printable"


def signed_message_id(deps: WebDeps, queue_id: QueueId, domain: str) -> str:
    """A Message-ID that names the queue id, signed with the link keys (message.msgid_token), so
    that a reply to the message maps back to it (services.replies); a random one when the id
    cannot be signed (not one of new_queue_id's)."""
    made = MsgIdCodec(deps.signer.secrets, nonce=_queue_nonce(queue_id)).make(
        QueueOrigin(queue_id), domain)
    return made or make_msgid(domain=domain)


def _queue_nonce(queue_id: QueueId) -> Callable[[int], bytes]:
    """The msg-id's nonce made from the queue id instead of drawn at random: the queue id is
    unique per message already (it is what the id names), and an idempotent request built
    twice — a slow first request and the retry that took it over, both under the record's
    queue id — must give one Message-ID, the one of the message that was accepted."""
    def nonce(size: int) -> bytes:
        return hashlib.sha256(b"mailprime-msgid-nonce\0" + queue_id.encode()).digest()[:size]
    return nonce


def request_hash(body: MessageIn) -> str:
    canonical = json.dumps(body.model_dump(mode="json", by_alias=True), sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"POST /api/v1/messages\n" + canonical.encode()).hexdigest()


async def send(deps: WebDeps, queue: MessageQueue, body: MessageIn, *,
               queue_id: QueueId | None = None,
               before_accept: Callable[[MessageAccepted], Awaitable[None]] | None = None
               ) -> MessageAccepted:
    """Checks, builds and queues the message (under `queue_id`, else a new id); Refused says
    why it cannot be. `before_accept` gets the response once nothing can refuse it but the
    accept itself (an unresolvable recipient), before the accept."""
    sender = _address(body.from_, "body.from")
    await _from_domain_ready(deps, sender[0])
    lists = {name: [_address(v, f"body.{name}.{i}") for i, v in enumerate(getattr(body, name))]
             for name in ("to", "cc", "bcc")}
    total = sum(len(v) for v in lists.values())
    if total > MAX_RECIPIENTS:
        raise _field("body", f"{total} recipients; at most {MAX_RECIPIENTS} (RFC 5321 4.5.3.1.8)")
    for name in body.headers:
        if not _FIELD_NAME.fullmatch(name):
            raise _field(f"body.headers.{name[:80]}", "not a header field name (RFC 5322 3.6.8)")
        if name.lower() in DENIED_HEADERS or name.lower().startswith(("arc-", "resent-")):
            raise _field(f"body.headers.{name}", "this field is set by the server, not the API")
    for i, tag in enumerate(body.tags):
        if not _TAG.fullmatch(tag):
            raise _field(f"body.tags.{i}", "1-64 of A-Z a-z 0-9 _ . : -")
    subject, html, text = await _content(deps, body, lists["to"][0])
    gate = SendGate(deps.store)
    statuses: list[RecipientStatus] = []
    envelope: list[str] = []
    seen: set[str] = set()
    for address, _ in (*lists["to"], *lists["cc"], *lists["bcc"]):
        if address.key in seen:  # one copy per mailbox, however often it is named
            continue
        seen.add(address.key)
        decision = await gate.check(address.key, sending_domain=sender[0].domain,
                                    purpose=Purpose.TRANSACTIONAL)
        if decision.allowed:
            envelope.append(str(address))
            statuses.append(RecipientStatus(email=str(address), status="queued"))
        else:
            statuses.append(RecipientStatus(email=str(address), status="suppressed",
                                            reason=decision.reason))
    if not envelope:
        refused = [FieldError(field="body.to", message=f"{s.email}: {s.reason}") for s in statuses]
        raise Refused(422, "every recipient is suppressed: "
                           + ", ".join(f"{s.email} ({s.reason})" for s in statuses), refused)
    queue_id = queue_id or new_queue_id()  # chosen before the build: the Message-ID names it
    message_id = signed_message_id(deps, queue_id, sender[0].domain)
    content = build_message(body, sender, lists, subject=subject, html=html, text=text,
                            message_id=message_id,
                            date=format_datetime(deps.clock.now(), usegmt=True))
    limit = deps.settings.limits.max_message_size
    if len(content) > limit:
        raise Refused(413, f"the message would be {len(content):,} octets; at most {limit:,} "
                           "(RFC 1870 SIZE of this server)")
    answer = MessageAccepted(id=queue_id, message_id=message_id, recipients=statuses)
    if before_accept is not None:
        await before_accept(answer)
    if await queue.inject(str(sender[0]), envelope, content, priority=Priority.TRANSACTIONAL,
                          source="api", queue_id=queue_id) is None:
        raise Refused(422, "no recipient could be resolved (unknown local addresses?)")
    return answer


def _queue(request: Request) -> MessageQueue:
    """The injector runtime gave the app (it wakes the delivery worker at once), else one made
    here on first use (an app built without runtime: the worker finds the mail at its poll)."""
    state = request.app.state
    queue: MessageQueue | None = getattr(state, "injector", None)
    if queue is None:
        deps: WebDeps = state.deps
        queue = state.injector = Injector(deps.store, dkim=DkimSigner(deps.store, deps.clock))
    return queue


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[!-~]+$",
    description="Any printable ASCII up to 255 characters; a retry with the same key and body "
                "gets the first answer back, without a second send (kept 24 hours).")]


@router.post("", status_code=202, response_model=MessageAccepted,
             summary="Send a transactional message",
             responses={409: PROBLEM_RESPONSE, 413: PROBLEM_RESPONSE})
async def send_message(request: Request, body: MessageIn,
                       key: Annotated[ApiKey, Depends(require("messages:send"))],
                       idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Queues one message (Priority transactional, DKIM-signed). Suppressed recipients are
    dropped and listed with status "suppressed"; if all are, 422 and nothing is sent."""
    deps: WebDeps = request.app.state.deps
    queue = _queue(request)
    if idempotency_key is None:
        try:
            accepted = await send(deps, queue, body)
        except Refused as exc:
            return _refusal(request, exc)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    store = deps.store
    now = deps.clock.now()
    digest = request_hash(body)
    claim = await store.claim_idempotency_key(
        key.id, idempotency_key, digest, now=now, queue_id=new_queue_id(),
        stale_before=now - timedelta(seconds=STALE_SECONDS), expired_before=now - IDEMPOTENCY_TTL)
    held = claim.record
    if held.request_hash != digest:
        return problem_response(
            422, "this Idempotency-Key was used with another request body; use a new key for a "
                 "new message", request=request, type_=REUSE_TYPE)
    if held.status is not None and held.body is not None:
        return _replay(held.status, held.body)
    queue_id, claimed_at = held.queue_id, held.created_at
    # An owned claim with a prepared response took over a request that seemed dead: that
    # response describes the message that request would have accepted under the queue id.
    taken_over = held.body if claim.owned else None
    if queue_id is not None and held.body is not None and await store.accepted_queue_ids(
            [queue_id]):
        # Accepted, but the response never stored: its request died (or is finishing) between
        # the accept and the completion. What it would have answered is on the record.
        await store.complete_idempotency_key(key.id, idempotency_key, 202, held.body)
        return _replay(202, held.body)
    if not claim.owned:
        return problem_response(409, "a request with this Idempotency-Key is still being "
                                     "processed; retry shortly", request=request,
                                type_=IN_PROGRESS_TYPE, headers={"Retry-After": "1"})

    prepared: list[str] = []

    async def prepare(answer: MessageAccepted) -> None:
        text = json.dumps(answer.model_dump(mode="json"))
        try:
            await store.prepare_idempotency_key(key.id, idempotency_key, text,
                                                claimed_at=claimed_at)
        except Conflict as exc:  # taken over by a retry: that one sends, this one must not
            raise _TakenOver(exc.message) from exc
        prepared.append(text)

    try:
        accepted = await send(deps, queue, body, queue_id=queue_id, before_accept=prepare)
    except _TakenOver:
        return problem_response(409, "a retry with this Idempotency-Key took over this request "
                                     "(it seemed dead): the retry sends the message",
                                request=request, type_=IN_PROGRESS_TYPE)
    except Refused as exc:
        await store.release_idempotency_key(key.id, idempotency_key, claimed_at=claimed_at)
        return _refusal(request, exc)
    except Exception as exc:
        # A storage error: the accept failed, or came before it (a cancellation is not caught:
        # the accept may still commit, so the key stays pending, to be answered from the record).
        # Released only if nothing is under the queue id: if a taken-over request's accept did
        # commit after all, the record must stay to answer the retry with it.
        if queue_id is None or not await store.accepted_queue_ids([queue_id]):
            await store.release_idempotency_key(key.id, idempotency_key, claimed_at=claimed_at)
        elif isinstance(exc, AlreadyExists) and prepared:
            # Another claimer's accept under the queue id landed first: its message is the one
            # sent, and the answer is the response that claimer prepared, not this build's
            # (same queue id and Message-ID, but the gate may have judged a recipient otherwise
            # since). Still the owner: the request this one took over was slow, not dead, and
            # its response is the one the claim found. Taken over: the retry that owns the
            # record now accepted first, and its response is on the record.
            answer = taken_over or prepared[-1]
            if await store.complete_idempotency_key(key.id, idempotency_key, 202, answer,
                                                    claimed_at=claimed_at):
                return _replay(202, answer)
            record = await store.idempotency_record(key.id, idempotency_key)
            if record is not None and record.queue_id == queue_id and record.body is not None:
                return _replay(202, record.body)
            return _replay(202, prepared[-1])
        raise
    content = accepted.model_dump(mode="json")
    # Only while this request still owns the key: one taken over after its accept (slow, not
    # dead) answers its client with the message it accepted, and leaves the record to the
    # retry that owns it (whose accept is refused: it completes the record with this
    # request's prepared response, the one its claim found).
    await store.complete_idempotency_key(key.id, idempotency_key, 202, json.dumps(content),
                                         claimed_at=claimed_at)
    return JSONResponse(content, status_code=202)


class _TakenOver(Exception):
    """The request lost its Idempotency-Key to a retry before it accepted anything."""


def _replay(status: int, body: str) -> JSONResponse:
    return JSONResponse(json.loads(body), status_code=status,
                        headers={"Idempotent-Replayed": "true"})


def _refusal(request: Request, exc: Refused) -> JSONResponse:
    return problem_response(exc.status, exc.detail, request=request,
                            type_=VALIDATION_TYPE if exc.errors else "about:blank",
                            errors=exc.errors or None)


__all__ = ["DENIED_HEADERS", "MAX_RECIPIENTS", "MessageAccepted", "MessageIn", "MessageQueue",
           "build_message", "request_hash", "router", "send"]
