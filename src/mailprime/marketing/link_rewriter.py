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

Hooking into the build: MessageBuilder takes an `html_filter(html, recipient)` that it calls
on the rendered HTML (CSS already inlined, which touches style attributes, not hrefs) before
it encodes the part; `TrackingLinks.html_filter` is that hook, so the contact comes with each
call and nothing is shared between two builds. The text part is never rewritten.

Speed: a campaign renders the same few `<a>` tags for every recipient, so what each tag needs
(where its href is, the target decoded, whether it is tracked at all) is worked out once per
distinct tag text and kept (`_TagPlans`, bounded); per recipient only the tokens are signed.
"""

from __future__ import annotations

import html as html_lib
import os
import re
import threading
from collections.abc import Callable

from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing.message_builder import CampaignInfo
from mailprime.marketing.templates import Recipient
from mailprime.marketing.tokens import (
    CampaignRecipient,
    ClickToken,
    OpenToken,
    TokenError,
    TokenSigner,
    UnsubscribeToken,
)
from mailprime.message.msgid_token import CampaignOrigin, MsgIdCodec

_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
# One attribute of a tag, at an attribute position: name, then "=" and a value (quoted or not).
# Walked from the tag name on, so "data-href=" and "href=" inside another value are never taken.
_ATTRIBUTE = re.compile(r"""\s+([^\s"'>/=]+)(?:(\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


# What to do with one <a> tag: (its text up to the new href value, its text after, the decoded
# target), or None to leave the tag as it is.
_TagPlan = tuple[str, str, str] | None
MAX_TAG_PLANS = 1024  # distinct tag texts remembered (tags with per-recipient hrefs churn it)


def _tag_plan(text: str) -> _TagPlan:
    href: re.Match[str] | None = None
    pos = 2  # after "<a"
    while (attribute := _ATTRIBUTE.match(text, pos)) is not None:
        name = attribute.group(1).lower()
        if name == "data-mp-notrack":
            return None
        if name == "href" and attribute.group(2) is not None and href is None:
            href = attribute
        pos = attribute.end()
    if href is None:
        return None
    raw = next(g for g in href.groups()[2:] if g is not None)
    return (f'{text[:href.end(2)]}"', f'"{text[href.end():]}', html_lib.unescape(raw).strip())


class _TagPlans(dict[str, _TagPlan]):
    """Tag text -> plan, cleared when it holds MAX_TAG_PLANS (see the module doc)."""

    def plan(self, text: str) -> _TagPlan:
        try:
            return self[text]
        except KeyError:
            if len(self) >= MAX_TAG_PLANS:
                self.clear()
            found = self[text] = _tag_plan(text)
            return found


def rewrite_links(html: str, click: Callable[[str], str | None],
                  plans: _TagPlans | None = None) -> str:
    """`html` with the href of each <a> replaced by click(target) where that is not None;
    `plans` remembers the tags' analysis from one call to the next."""
    known = plans if plans is not None else _TagPlans()

    def tag(m: re.Match[str]) -> str:
        text = m.group()
        plan = known.plan(text)
        if plan is None:
            return text
        new = click(plan[2])
        return text if new is None else plan[0] + html_lib.escape(new) + plan[1]

    return _A_TAG.sub(tag, html)


def add_pixel(html: str, url: str) -> str:
    img = (f'<img src="{html_lib.escape(url)}" width="1" height="1" alt="" '
           'style="display:block;width:1px;height:1px;border:0">')
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + img
    at = ends[-1].start()
    return html[:at] + img + html[at:]


class _RandomOctets:
    """os.urandom read 4 KB at a time and handed out in slices: the same octets, one system call
    per few hundred Message-ID nonces instead of one each. A system call gives the GIL away,
    and on a busy dispatch loop taking it back can cost milliseconds (the signing and writer
    threads hold it meanwhile)."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._buffer = b""
        self._lock = threading.Lock()  # uncontended: taken without giving the GIL away

    def __call__(self, count: int) -> bytes:
        with self._lock:
            if len(self._buffer) < count:
                self._buffer = os.urandom(max(self._chunk, count))
            out, self._buffer = self._buffer[:count], self._buffer[count:]
            return out


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
        self._msgids: MsgIdCodec | None = None

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

    def message_id_for(self, recipient: Recipient, campaign: CampaignInfo) -> str | None:
        """The recipient's signed Message-ID (message.msgid_token: campaign and contact, under
        the link keys), which the MX reads back from a reply's In-Reply-To (services.replies);
        None without a contact id (a test send to an address that is no contact)."""
        if not recipient.contact_id:
            return None
        if self._msgids is None:
            self._msgids = MsgIdCodec(self._signer.secrets, nonce=_RandomOctets())
        return self._msgids.make(CampaignOrigin(self._campaign_id, recipient.contact_id),
                                 self._domain)


class TrackingLinks:
    """Rewrites one campaign's rendered HTML for a contact (`html_filter`, the builder's hook;
    called as a function it rewrites for the contact in `current`)."""

    def __init__(self, signer: TokenSigner, base_url: str, campaign_id: CampaignId, *,
                 clicks: bool, opens: bool) -> None:
        self._signer = signer
        self._base = base_url.rstrip("/")
        self._campaign_id = campaign_id
        self.clicks = clicks
        self.opens = opens
        self.current: ContactId = ContactId(0)
        self._unsubscribe = f"{self._base}/u/"
        self._plans = _TagPlans()

    def click_url(self, target: str, contact_id: ContactId | None = None) -> str | None:
        if not target[:8].lower().startswith(("http://", "https://")) \
                or target.startswith(self._unsubscribe):
            return None
        subject = CampaignRecipient(self._campaign_id,
                                    self.current if contact_id is None else contact_id)
        try:
            return f"{self._base}/t/c/{self._signer.sign(ClickToken(subject, target))}"
        except TokenError:
            return None

    def pixel_url(self, contact_id: ContactId | None = None) -> str:
        subject = CampaignRecipient(self._campaign_id,
                                    self.current if contact_id is None else contact_id)
        return f"{self._base}/t/o/{self._signer.sign(OpenToken(subject))}.gif"

    def rewrite(self, html: str, contact_id: ContactId) -> str:
        if self.clicks:
            html = rewrite_links(html, lambda target: self.click_url(target, contact_id),
                                 self._plans)
        if self.opens:
            html = add_pixel(html, self.pixel_url(contact_id))
        return html

    def html_filter(self, html: str, recipient: Recipient) -> str:
        """MessageBuilder's post-render hook (see the module doc)."""
        return self.rewrite(html, recipient.contact_id or ContactId(0))

    def __call__(self, html: str) -> str:
        return self.rewrite(html, self.current)


__all__ = [
    "SignedUnsubscribeLinks",
    "TrackingLinks",
    "add_pixel",
    "rewrite_links",
]
