"""One-click unsubscribe (RFC 8058): `POST /u/{token}` unsubscribes, `GET /u/{token}` asks.

Theory of operation
-------------------
Every campaign message carries `List-Unsubscribe: <https://.../u/TOKEN>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`. A mail client's "unsubscribe" button then
POSTs `List-Unsubscribe=One-Click` (urlencoded or multipart, RFC 8058 3.1) to the URL, and that
POST must unsubscribe at once: no confirmation page, no login, 200 (3.2). Doing it twice is
harmless and answers 200 again.

A GET never unsubscribes: link scanners and prefetchers GET every URL in a message, so a GET that
acted would unsubscribe people who never asked. It shows a small page whose one button POSTs the
same body; a person who follows the link in the message's footer gets there.

What "unsubscribed" means is marketing.unsubscribe's answer (a list membership, else a
suppression, with the consent ledger's withdrawal and one UNSUBSCRIBED event), the same act as a
message to the List-Unsubscribe mailto: a repeated POST changes nothing and records nothing.
"""

from __future__ import annotations

import html
import re
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from mailprime.domain.audience import ConsentSource
from mailprime.marketing.machine_opens import classify
from mailprime.marketing.tokens import MAX_TOKEN, UnsubscribeToken
from mailprime.marketing.unsubscribe import apply_unsubscribe
from mailprime.web.deps import WebDeps
from mailprime.web.problems import problem_response
from mailprime.web.tracking import NO_STORE

router = APIRouter(include_in_schema=False)

TokenPath = Annotated[str, Path(max_length=MAX_TOKEN)]
ONE_CLICK = "One-Click"
MAX_FORM = 64 * 1024  # a one-click body is 26 octets; a multipart one a few hundred
_MULTIPART_FIELD = re.compile(
    rb'name="?List-Unsubscribe"?\s*\r?\n(?:[^\r\n]+\r?\n)*\r?\n(One-Click)\r?\n', re.IGNORECASE)

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


def _is_one_click(content_type: str, body: bytes) -> bool:
    """Whether the body says List-Unsubscribe=One-Click (RFC 8058 3.1), urlencoded or multipart."""
    if content_type.startswith("multipart/form-data"):
        return _MULTIPART_FIELD.search(body) is not None
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=False, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return False
    return ONE_CLICK in fields.get("List-Unsubscribe", [])


async def unsubscribe(deps: WebDeps, token: UnsubscribeToken, *, ip: str,
                      user_agent: str | None, source: ConsentSource) -> bool:
    """Applies the unsubscribe the token stands for; True if it changed anything. The act itself
    is marketing.unsubscribe's, shared with the List-Unsubscribe mailto at the MX."""
    return await apply_unsubscribe(
        deps.store, token, scope_mode=deps.settings.bounces.scope, now=deps.clock.now(),
        source=source, ip=ip, machine=classify(user_agent, ip, deps.machine_networks) is not None)


def _client(request: Request) -> tuple[str, str | None]:
    return (request.client.host if request.client else "", request.headers.get("user-agent"))


@router.post("/u/{token}")
async def one_click(request: Request, token: TokenPath) -> Response:
    deps: WebDeps = request.app.state.deps
    parsed = deps.signer.verify(token, UnsubscribeToken)
    if parsed is None:
        return problem_response(404, "this unsubscribe link is not valid", request=request)
    body = await request.body()
    if len(body) > MAX_FORM or not _is_one_click(request.headers.get("content-type", ""), body):
        return problem_response(400, "the body must be List-Unsubscribe=One-Click (RFC 8058 3.1)",
                                request=request)
    ip, agent = _client(request)
    await unsubscribe(deps, parsed, ip=ip, user_agent=agent, source=ConsentSource.ONE_CLICK)
    return _page("Unsubscribed",
                 f"<p>{html.escape(parsed.address)} will get no more of these messages.</p>")


@router.get("/u/{token}")
async def confirm_page(request: Request, token: TokenPath) -> Response:
    deps: WebDeps = request.app.state.deps
    parsed = deps.signer.verify(token, UnsubscribeToken)
    if parsed is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid. If you copied it, "
                     "check that it is complete.</p>", 404)
    return _page("Unsubscribe", (
        f"<p>Stop sending these messages to <strong>{html.escape(parsed.address)}</strong>?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'))


__all__ = ["router", "unsubscribe"]
