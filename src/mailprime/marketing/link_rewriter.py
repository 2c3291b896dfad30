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
  absolute http(s) URL becomes `<public_url>/t/c/<link>/<recipient>`: `link` a LinkToken
  signing the campaign and the target (the redirect goes nowhere else), the same for every
  recipient and so signed once per campaign and target; `recipient` the message's TrackToken
  (campaign and contact), signed once per message (marketing.tokens says why the pair is safe).
  Not rewritten: the unsubscribe link (it must stay the one-click
  URL the template rules checked, and a redirect in front of it helps nobody), mailto:, tel:,
  fragments, and a link marked `data-mp-notrack`. Entities in the href are decoded before
  signing (`&amp;` is `&` in the URL the browser follows); a target the token refuses (over
  2048 characters, not printable ASCII) is left as it is.
* Opens: with open tracking on, a 1x1 image `<public_url>/t/o/<recipient>.gif` goes before
  `</body>` (or at the end when there is none), with the same TrackToken as the clicks.
  (Mail sent before these two-part links has `/t/c/<ClickToken>` and `/t/o/<OpenToken>.gif`,
  which web.tracking still reads.)

Hooking into the build: MessageBuilder takes an `html_filter(html, recipient)` that it calls
on the rendered HTML (CSS already inlined, which touches style attributes, not hrefs) before
it encodes the part; `TrackingLinks.html_filter` is that hook, so the contact comes with each
call; what is kept from one build to the next is keyed by what it depends on (tag text, target,
contact). The text part is never rewritten.

Speed: a campaign renders the same few `<a>` tags for every recipient, so what each tag becomes
(its text up to and including `<public_url>/t/c/<link>/`, the rest after the recipient token,
or nothing when it is not tracked) is worked out once per distinct tag text and kept (bounded);
per recipient one token is signed, and the output (the pixel included) is joined once from the
pieces split() leaves between the tags (no Python call or match object per tag, as sub with a
function or finditer would make). The tags are found by the regular expression: measured, it
beats str.find on a 10 KB body (a find for "<A" that is not there costs more than the whole
pattern search). Before: 11 signatures per message of 10 links, ~63 µs; now one, ~8 µs.
The template's unsubscribe link (`<a href="<public_url>/u/...">`, a new tag text per recipient)
is recognised by its text and neither analysed nor remembered. The per-recipient tokens are
signed by tokens.RecipientTokens, which keeps the octets a campaign's tokens share.
"""

from __future__ import annotations

import html as html_lib
import os
import re
import threading
from collections.abc import Callable

from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing.html_marks import A_TAG, last_body_end
from mailprime.marketing.message_builder import CampaignInfo
from mailprime.marketing.templates import Recipient
from mailprime.marketing.tokens import (
    LinkToken,
    TokenError,
    TokenSigner,
)
from mailprime.message.msgid_token import CampaignOrigin, MsgIdCodec

_A_TAG_SPLIT = re.compile(f"({A_TAG.pattern})", re.IGNORECASE)  # the same, as split()'s group
# One attribute of a tag, at an attribute position: name, then "=" and a value (quoted or not).
# Walked from the tag name on, so "data-href=" and "href=" inside another value are never taken.
_ATTRIBUTE = re.compile(r"""\s+([^\s"'>/=]+)(?:(\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")


# What to do with one <a> tag: (its text up to the new href value, its text after, the decoded
# target), or None to leave the tag as it is.
_TagPlan = tuple[str, str, str] | None
MAX_TAG_PLANS = 1024  # distinct tag texts remembered (tags with per-recipient hrefs churn it)
MAX_LINK_TOKENS = 1024  # distinct targets whose LinkToken a campaign remembers


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
    pieces: list[str] = []
    pos = 0
    for m in A_TAG.finditer(html):
        plan = known.plan(m.group())
        if plan is None:
            continue
        new = click(plan[2])
        if new is not None:
            start, end = m.span()
            pieces += (html[pos:start], plan[0], html_lib.escape(new), plan[1])
            pos = end
    if not pieces:
        return html
    pieces.append(html[pos:])
    return "".join(pieces)


def _pixel_tag(url: str) -> str:
    return (f'<img src="{html_lib.escape(url)}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">')


def add_pixel(html: str, url: str) -> str:
    img = _pixel_tag(url)
    at = last_body_end(html)
    if at < 0:
        return html + img
    return html[:at] + img + html[at:]


class _RandomOctets:
    """os.urandom read 4 KB at a time and handed out in slices: the same octets, one system call
    per few hundred Message-ID nonces instead of one each. A system call gives the GIL away,
    and on a busy dispatch loop taking it back can cost milliseconds (the signing and writer
    threads hold it meanwhile)."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._buffer = b""
        self._used = 0  # octets of the buffer handed out (an offset: no copy of the rest)
        self._lock = threading.Lock()  # uncontended: taken without giving the GIL away

    def __call__(self, count: int) -> bytes:
        with self._lock:
            if len(self._buffer) - self._used < count:
                self._buffer, self._used = os.urandom(max(self._chunk, count)), 0
            start = self._used
            self._used = start + count
            return self._buffer[start:start + count]


class SignedUnsubscribeLinks:
    """UnsubscribeLinks for a campaign: one token per contact (see the module doc)."""

    def __init__(self, signer: TokenSigner, base_url: str, campaign_id: CampaignId,
                 list_id: ListId | None, sending_domain: str) -> None:
        self._signer = signer
        self._base = base_url.rstrip("/")
        self._campaign_id = campaign_id
        self._list_id = list_id
        self._domain = sending_domain.lower()
        # sign(UnsubscribeToken(...)) with what every contact's token shares worked out once
        self._tokens = signer.recipients(campaign_id, self._domain, list_id)
        self._last: tuple[str, str] = ("", "")  # (address, token): url_for then mailto_for
        self._msgids: MsgIdCodec | None = None

    def token(self, recipient: Recipient) -> str:
        key = recipient.email.lower()
        if self._last[0] != key:
            self._last = (key, self._tokens.unsubscribe(recipient.contact_id or ContactId(0),
                                                        key))
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
        # `<a href="<base>/u/` begins the template's unsubscribe link, whose tag text is new
        # for each recipient (its token): see _tag_plan. Not when the base holds a quote or an
        # entity's "&", which would make the tag's text mean something else.
        self._unsubscribe_tag = (f'<a href="{self._unsubscribe}'
                                 if '"' not in self._base and "&" not in self._base else None)
        # tag text -> (its text up to and including "<base>/t/c/<link>/", its text after the
        # recipient token), or None: not tracked (module doc, Speed)
        self._plans: dict[str, tuple[str, str] | None] = {}
        self._links: dict[str, str | None] = {}  # target -> "<base>/t/c/<link>/" or None
        self._recipient: tuple[ContactId, str] = (ContactId(-1), "")
        # _pixel_tag(url) around the token: the token is base64url, which HTML escaping leaves
        # as it is, so escaping the rest alone gives what escaping the whole URL gives.
        pixel = _pixel_tag(f"{self._base}/t/o/\x00.gif").rpartition("\x00")
        self._pixel = (pixel[0], pixel[2])
        self._tokens = signer.recipients(campaign_id)  # sign(TrackToken(...)), made faster

    def recipient_token(self, contact_id: ContactId | None = None) -> str:
        """The contact's TrackToken (the last one is kept: click_url then pixel_url)."""
        contact = self.current if contact_id is None else contact_id
        last = self._recipient  # read once: another thread's build may replace it meanwhile
        if last[0] == contact:
            return last[1]
        token = self._tokens.track(contact)
        self._recipient = (contact, token)
        return token

    def _link_prefix(self, target: str) -> str | None:
        """"<base>/t/c/<link>/" for a tracked target, or None (see the module doc)."""
        try:
            return self._links[target]
        except KeyError:
            pass
        prefix: str | None = None
        if target[:8].lower().startswith(("http://", "https://")) \
                and not target.startswith(self._unsubscribe):
            try:
                link = self._signer.sign(LinkToken(self._campaign_id, target))
            except TokenError:
                pass  # not a target a click may lead to: the link is left as it is
            else:
                prefix = f"{self._base}/t/c/{link}/"
        if len(self._links) >= MAX_LINK_TOKENS:
            self._links.clear()
        self._links[target] = prefix
        return prefix

    def click_url(self, target: str, contact_id: ContactId | None = None) -> str | None:
        prefix = self._link_prefix(target)
        return None if prefix is None else prefix + self.recipient_token(contact_id)

    def pixel_url(self, contact_id: ContactId | None = None) -> str:
        return f"{self._base}/t/o/{self.recipient_token(contact_id)}.gif"

    def _tag_plan(self, text: str) -> tuple[str, str] | None:
        try:
            return self._plans[text]
        except KeyError:
            pass
        unsubscribe = self._unsubscribe_tag
        if unsubscribe is not None and text.startswith(unsubscribe) and text.endswith('">') \
                and text.count('"') == 2:
            # `<a href="<base>/u/...">` and nothing else: the one-click link, never tracked
            # (what _tag_plan and _link_prefix would find: one attribute, href, whose value
            # starts with the unsubscribe URL however its entities decode). Its text differs per
            # recipient, so it is neither analysed nor remembered: it would only push out the
            # campaign's own tags and link tokens (MAX_TAG_PLANS) every thousand messages.
            return None
        found: tuple[str, str] | None = None
        plan = _tag_plan(text)
        if plan is not None and (prefix := self._link_prefix(plan[2])) is not None:
            # The tokens are base64url (no character HTML escapes): escaping the prefix alone
            # gives what escaping the whole URL gives.
            found = (plan[0] + html_lib.escape(prefix), plan[1])
        if len(self._plans) >= MAX_TAG_PLANS:
            self._plans.clear()
        self._plans[text] = found
        return found

    def _rewrite(self, html: str, token: str, pixel: bool) -> str:
        """rewrite_links(html, click_url) for the contact whose TrackToken is `token` (with
        clicks on), then add_pixel when `pixel`, joined once."""
        # split() with the tag as its group: text, tag, text, ... made in one call (finditer
        # would make a match object per tag), the tags at the odd places.
        parts = _A_TAG_SPLIT.split(html) if self.clicks else [html]
        plans = self._plans
        changed = False
        for i in range(1, len(parts), 2):
            text = parts[i]
            plan = plans[text] if text in plans else self._tag_plan(text)
            if plan is not None:
                parts[i] = token.join(plan)  # plan[0] + token + plan[1], in one C call
                changed = True
        if pixel:
            url = f"{self._base}/t/o/{token}.gif"
            img = token.join(self._pixel)  # _pixel_tag(url)
            # Before the last </body> (add_pixel's place), found in `html`: when it is in the
            # text after the last tag, which no rewriting touched, it is the last one of the
            # rewritten HTML too.
            at = last_body_end(html)
            last = len(html) - len(parts[-1])  # where the text after the last tag starts
            if at < 0:
                parts.append(img)
            elif at >= last:
                tail = parts.pop()
                parts.extend((tail[:at - last], img, tail[at - last:]))
            else:  # before or inside a tag: add_pixel on the rewritten HTML
                return add_pixel("".join(parts), url)
        elif not changed:
            return html
        return "".join(parts)

    # What MessageBuilder applies to the template's fixed text once per campaign, instead of
    # calling html_filter on each message (message_builder, HtmlParts): the same rewriting.

    def tag_rewrite(self, text: str) -> tuple[str, str] | None:
        """What the <a> tag `text` becomes around the message's token (the tag is `token.join`
        of the pair), or None: left as it is."""
        return self._tag_plan(text) if self.clicks else None

    def message_token(self, recipient: Recipient) -> str:
        """The token html_filter writes into `recipient`'s links and pixel."""
        return self.recipient_token(recipient.contact_id or ContactId(0))

    def pixel_pieces(self) -> tuple[str, str] | None:
        """The open pixel around the token, which goes before the last </body> (or at the end),
        or None without open tracking."""
        return self._pixel if self.opens else None

    def rewrite(self, html: str, contact_id: ContactId) -> str:
        if not (self.clicks or self.opens):
            return html
        return self._rewrite(html, self.recipient_token(contact_id), self.opens)

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
