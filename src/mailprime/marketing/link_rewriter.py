"""The links in a campaign message: signed unsubscribe links, click redirects and the open pixel.

Theory of operation
-------------------
Every link we put into a message names its recipient with a signed token (marketing.tokens):
the subject is the campaign and the contact (CampaignRecipient), never the queue id, because the
links are made while the message is built, before it is queued, and because a contact's opens
and clicks belong to the campaign whichever message carried them.

* Unsubscribe (`SignedUnsubscribeLinks`, the message builder's UnsubscribeLinks): the HTTPS
  one-click URL `<public_url>/u/<token>` (RFC 8058 3.1: HTTPS, everything needed in the URL) and
  a mailto. The token is ~110 characters, and a local part may have at most 64 octets (RFC 5321
  4.5.3.1.1), so the token cannot be the `unsubscribe+<token>` local part without making an
  address some servers refuse; it goes in the subject instead:
  `mailto:unsubscribe@<sending domain>?subject=unsubscribe-<token>` (RFC 6068 2: hfields).
* Clicks: with click tracking on, every `<a href>` of the rendered HTML whose target is an
  absolute http(s) URL becomes `<public_url>/t/c/<token>`, the token signing the target (the
  redirect goes nowhere else). Not rewritten: the unsubscribe link (it must stay the one-click
  URL the template rules checked, and a redirect in front of it helps nobody), mailto:, tel:,
  fragments, and a link marked `data-mp-notrack`. Entities in the href are decoded before
  signing (`&amp;` is `&` in the URL the browser follows); a target the token refuses (over
  2048 characters, not printable ASCII) is left as it is.
* Opens: with open tracking on, a 1x1 image `<public_url>/t/o/<token>.gif` goes before
  `</body>` (or at the end when there is none).

Hooking into the render: MessageBuilder renders the template itself and then encodes the parts,
so the rendered HTML has to change inside the render. `with_html_filter` gives a campaign its
own copy of the compiled HTML template whose render function passes the output through the
filter; the filter reads the contact from `TrackingLinks.current`, which the dispatcher sets just
before it calls `build` (the build is synchronous, so no other recipient can come in between).
The filter runs before CSS inlining when that happens after the render, which changes nothing:
inlining touches style attributes, not hrefs.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from jinja2 import Template

from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing.message_builder import CampaignInfo
from mailprime.marketing.templates import CompiledTemplate, Recipient
from mailprime.marketing.tokens import (
    CampaignRecipient,
    ClickToken,
    OpenToken,
    TokenError,
    TokenSigner,
    UnsubscribeToken,
)

_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_NO_TRACK = re.compile(r"\bdata-mp-notrack\b", re.IGNORECASE)


def rewrite_links(html: str, click: Callable[[str], str | None]) -> str:
    """`html` with the href of each <a> replaced by click(target) where that is not None."""

    def tag(m: re.Match[str]) -> str:
        text = m.group()
        if _NO_TRACK.search(text):
            return text
        href = _HREF.search(text)
        if href is None:
            return text
        raw = next(g for g in href.groups()[1:] if g is not None)
        target = html_lib.unescape(raw).strip()
        new = click(target)
        if new is None:
            return text
        return f'{text[:href.start()]}{href.group(1)}"{html_lib.escape(new)}"{text[href.end():]}'

    return _A_TAG.sub(tag, html)


def add_pixel(html: str, url: str) -> str:
    img = (f'<img src="{html_lib.escape(url)}" width="1" height="1" alt="" '
           'style="display:block;width:1px;height:1px;border:0">')
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + img
    at = ends[-1].start()
    return html[:at] + img + html[at:]


class SignedUnsubscribeLinks:
    """UnsubscribeLinks for a campaign: one token per contact (see the module doc)."""

    def __init__(self, signer: TokenSigner, base_url: str, campaign_id: CampaignId,
                 list_id: ListId | None, sending_domain: str) -> None:
        self._signer = signer
        self._base = base_url.rstrip("/")
        self._campaign_id = campaign_id
        self._list_id = list_id
        self._domain = sending_domain.lower()
        self._last: tuple[str, str] = ("", "")  # (address, token): url_for then mailto_for

    def token(self, recipient: Recipient) -> str:
        key = recipient.email.lower()
        if self._last[0] != key:
            subject = CampaignRecipient(self._campaign_id, recipient.contact_id or ContactId(0))
            self._last = (key, self._signer.sign(UnsubscribeToken(
                subject, key, self._domain, self._list_id)))
        return self._last[1]

    def url_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return f"{self._base}/u/{self.token(recipient)}"

    def mailto_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return f"mailto:unsubscribe@{self._domain}?subject=unsubscribe-{self.token(recipient)}"


class TrackingLinks:
    """Rewrites one campaign's rendered HTML for the contact in `current`."""

    def __init__(self, signer: TokenSigner, base_url: str, campaign_id: CampaignId, *,
                 clicks: bool, opens: bool) -> None:
        self._signer = signer
        self._base = base_url.rstrip("/")
        self._campaign_id = campaign_id
        self.clicks = clicks
        self.opens = opens
        self.current: ContactId = ContactId(0)

    def _subject(self) -> CampaignRecipient:
        return CampaignRecipient(self._campaign_id, self.current)

    def click_url(self, target: str) -> str | None:
        if not target.lower().startswith(("http://", "https://")) \
                or target.startswith(f"{self._base}/u/"):
            return None
        try:
            return f"{self._base}/t/c/{self._signer.sign(ClickToken(self._subject(), target))}"
        except TokenError:
            return None

    def pixel_url(self) -> str:
        return f"{self._base}/t/o/{self._signer.sign(OpenToken(self._subject()))}.gif"

    def __call__(self, html: str) -> str:
        if self.clicks:
            html = rewrite_links(html, self.click_url)
        if self.opens:
            html = add_pixel(html, self.pixel_url())
        return html


def with_html_filter(compiled: CompiledTemplate, fn: Callable[[str], str]) -> CompiledTemplate:
    """A copy of `compiled` whose HTML part's output goes through `fn` (see the module doc)."""
    original: Template = compiled.html
    inner = original.root_render_func

    def root_render_func(context: Any) -> Iterator[str]:
        yield fn("".join(inner(context)))

    copy: Template = object.__new__(type(original))
    copy.__dict__.update(original.__dict__)
    copy.root_render_func = root_render_func
    return replace(compiled, html=copy)


__all__ = [
    "SignedUnsubscribeLinks",
    "TrackingLinks",
    "add_pixel",
    "rewrite_links",
    "with_html_filter",
]
