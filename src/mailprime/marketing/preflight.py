"""Pre-flight: what would hurt this campaign's inbox placement, found before anything is sent.

Theory of operation
-------------------
Once a campaign has started, a problem in its content is a problem in thousands of inboxes, and
a bad first impression with the providers' filters outlasts the campaign. So `preflight` renders
the campaign as its first contact would get it and lists every problem, each with a severity:

* error — the campaign refuses to start (marketing.campaigns.start_campaign): the template does
  not compile or names an unknown merge field (templates.check, with the audience's first
  contact as the sample so attributes it lacks are caught); no visible unsubscribe link or
  postal address (template_rules.check_compliance: CAN-SPAM, and Gmail's and Yahoo's bulk
  sender rules); no active DKIM key for the From domain (unsigned bulk mail fails Gmail's and
  Yahoo's sender requirements outright); links that are not https (RFC 8058 3.1 requires the
  one-click URL to be https); a list or segment that no longer exists; a value the message
  cannot carry in a header (code "header": the From name, subject, campaign name or postal
  address with a control character, marketing.message_builder.header_value).
* warning — it may start, but the operator should know: an empty text part (multipart/
  alternative whose text is empty reads as a spam trait), an HTML part that is only or mostly
  images (little text for filters to judge, and an empty-looking message with images off),
  link domains whose organizational domain (RFC 7489 3.2, the Public Suffix List) differs from
  the From domain's (filters compare them: a newsletter from example.com full of links to
  tracker.example.net looks like phishing), a From domain that is not one of ours (bounces and
  complaints to its VERP addresses would not reach us), and an empty audience.

The sample message: the sample contact's whole message — headers, both parts, the RFC 8058
fields — is always built by the dispatcher's MessageBuilder, so what the builder refuses
(HeaderError) refuses the start here instead of failing every message of the campaign. When
only the sample contact's own data is at fault (a control character in its name: a message
to a placeholder contact builds), it is a warning: the dispatcher fails that contact alone.

Spam score: when a `SpamScorer` is given (rspamd, when [authentication] rspamd_url is set:
adapters.spam_preflight wires services.rspamd's client, which marketing may not import), the
sample message is scored as an authenticated outbound message. rspamd's "reject" is an error
(the providers' filters would most likely refuse it too), any other action above "no action" a
warning naming the score and the rules that fired, and an unreachable scorer a warning (the
check did not happen; it does not stop a campaign).
"""

from __future__ import annotations

import enum
import html as html_lib
import re
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlsplit

from mailprime.domain.campaigns import Campaign
from mailprime.domain.errors import DomainError
from mailprime.marketing.link_rewriter import rewrite_links
from mailprime.marketing.message_builder import CampaignInfo, HeaderError, MessageBuilder
from mailprime.marketing.segments import parse_segment
from mailprime.marketing.template_rules import check_compliance
from mailprime.marketing.templates import (
    CompiledTemplate,
    Recipient,
    RenderError,
    TemplateError,
    check,
    compile_template,
    render_preview,
)
from mailprime.message.dmarc import organizational_domain
from mailprime.storage.ports import Store

_IMG = re.compile(r"<img\b", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_INVISIBLE = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_SPACE = re.compile(r"\s+")
MIN_TEXT_PER_IMAGE = 200  # visible characters per image below which HTML is "mostly images"
MIN_TEXT = 20  # visible characters below which a part is treated as empty


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    code: str  # stable, for the CLI and the API
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """A spam filter's opinion of the sample message."""

    action: str  # as the filter spells it: "no action", "add header", "reject", ...
    score: float = 0.0
    required: float = 0.0  # the score at which the filter would reject
    symbols: tuple[str, ...] = ()  # the rules that fired
    error: str = ""  # no verdict (unreachable, timed out): why


class SpamScorer(Protocol):
    async def score(self, message: bytes, *, sender: str, recipient: str) -> SpamVerdict: ...


# Actions that do not hurt: rspamd's "no action", and "greylist" (a delay, not a verdict).
_HARMLESS = frozenset({"no action", "greylist", ""})


class _PreviewLinks:
    """Unsubscribe links for the sample message (their look, not a working token)."""

    def __init__(self, base_url: str, domain: str) -> None:
        self._url = f"{base_url.rstrip('/')}/u/preflight"
        self._mailto = f"mailto:unsubscribe@{domain}?subject=unsubscribe-preflight"

    def url_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return self._url

    def mailto_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return self._mailto


def spam_problems(verdict: SpamVerdict) -> list[Problem]:
    """What a spam filter's verdict on the sample message means for the campaign."""
    if verdict.error:
        return [Problem(Severity.WARNING, "spam-score",
                        f"the spam score could not be checked: {verdict.error}")]
    if verdict.action in _HARMLESS:
        return []
    fired = ", ".join(verdict.symbols[:15]) or "none listed"
    what = (f"the spam filter scores the sample message {verdict.score:.1f} "
            f"(reject at {verdict.required:.1f}), action {verdict.action!r}; rules: {fired}")
    if verdict.action == "reject":
        return [Problem(Severity.ERROR, "spam-score", what)]
    return [Problem(Severity.WARNING, "spam-score", what)]


PLACEHOLDER = Recipient("sample@example.invalid", "Sample Contact")


def _sample_message(compiled: CompiledTemplate, campaign: Campaign, sample: Recipient, *,
                    list_name: str, base_url: str) -> tuple[bytes | None, list[Problem]]:
    """The sample contact's message as the dispatcher builds it, or None and why not."""
    info = CampaignInfo(campaign_id=campaign.id, name=campaign.name,
                        from_address=campaign.from_address, from_name=campaign.from_name,
                        list_name=list_name, list_label=list_name,
                        postal_address=campaign.postal_address, reply_to=campaign.reply_to)
    try:  # what every message shares: From, Reply-To, List-Id, the name, the postal address
        builder = MessageBuilder(compiled, info, _PreviewLinks(base_url, campaign.sending_domain))
    except HeaderError as exc:
        return None, [Problem(Severity.ERROR, "header", exc.message)]
    try:
        return builder.build(sample).data, []
    except RenderError:
        return None, []  # reported by the merge-field check
    except HeaderError as exc:
        refused = exc
    try:  # the campaign's fault (its subject), or only this contact's (its name, attributes)?
        builder.build(replace(PLACEHOLDER, attributes=sample.attributes))
    except (HeaderError, RenderError):
        return None, [Problem(Severity.ERROR, "header", refused.message)]
    return None, [Problem(Severity.WARNING, "header",
                          f"the sample contact {sample.email}'s message cannot be built: "
                          f"{refused.message} (that contact will fail, the others are sent)")]


def _visible(html: str) -> str:
    return _SPACE.sub(" ", html_lib.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", html)))).strip()


def link_hosts(html: str) -> set[str]:
    """Hosts of the http(s) links of `html`."""
    hosts: set[str] = set()

    def note(target: str) -> str | None:  # notes the host, rewrites nothing
        if target.lower().startswith(("http://", "https://")):
            try:
                host = urlsplit(target).hostname
            except ValueError:
                return None
            if host:
                hosts.add(host.lower())
        return None

    rewrite_links(html, note)
    return hosts


def content_problems(html: str, text: str, from_domain: str) -> list[Problem]:
    """Warnings about a rendered message's parts and links."""
    problems: list[Problem] = []
    if len(_SPACE.sub(" ", text).strip()) < MIN_TEXT:
        problems.append(Problem(Severity.WARNING, "text-part",
                                "the text part is (nearly) empty: give the template a text "
                                "version, or more text in the HTML to make one from"))
    images = len(_IMG.findall(html))
    visible = len(_visible(html))
    if images and visible < MIN_TEXT:
        problems.append(Problem(Severity.WARNING, "image-only",
                                f"the HTML is images only ({images} image(s), no text): filters "
                                "cannot judge it, and readers with images off see nothing"))
    elif images and visible < MIN_TEXT_PER_IMAGE * images:
        problems.append(Problem(Severity.WARNING, "mostly-images",
                                f"the HTML is mostly images ({images} image(s), {visible} "
                                f"characters of text; aim for {MIN_TEXT_PER_IMAGE}+ per image)"))
    own = organizational_domain(from_domain)
    foreign = sorted(h for h in link_hosts(html) if organizational_domain(h) != own)
    if foreign:
        problems.append(Problem(Severity.WARNING, "link-domains",
                                f"links go to domains not aligned with the From domain {own}: "
                                f"{', '.join(foreign[:10])}{' ...' if len(foreign) > 10 else ''}"))
    return problems


async def preflight(store: Store, campaign: Campaign, *, base_url: str,
                    spam: SpamScorer | None = None) -> list[Problem]:
    """Every problem found (see the module doc); errors first."""
    problems: list[Problem] = []

    def error(code: str, message: str) -> None:
        problems.append(Problem(Severity.ERROR, code, message))

    if not base_url.startswith("https://"):
        error("links-not-https", f"unsubscribe and tracking links would be {base_url}/...: "
              "set [http] public_url to this server's https address (RFC 8058 3.1)")
    domain = campaign.sending_domain
    if not await store.list_dkim_keys(domain, active_only=True):
        error("dkim", f"no active DKIM key for {domain}: run `mailprime dkim generate {domain}` "
              "and publish its record (bulk senders must sign, Gmail and Yahoo refuse otherwise)")
    if not await store.is_local_domain(domain):
        problems.append(Problem(Severity.WARNING, "from-domain",
                                f"{domain} is not a local domain: bounces and complaints sent to "
                                "its VERP addresses would not reach this server"))
    lists = [m for lid in campaign.list_ids if (m := await store.get_list_by_id(lid)) is not None]
    if len(lists) != len(campaign.list_ids):
        error("list", "a list of the campaign no longer exists")
    segment = None
    if campaign.segment_id is not None:
        stored = next((s for s in await store.list_segments() if s.id == campaign.segment_id), None)
        if stored is None:
            error("segment", f"segment #{campaign.segment_id} no longer exists")
        else:
            try:
                segment = parse_segment(stored.expression)
            except DomainError as exc:
                error("segment", f"segment {stored.name!r}: {exc.message}")
    sample_contacts = []
    if lists:
        ids = [m.id for m in lists]
        if await store.count_audience(ids, segment=segment, sending_domain=domain) == 0:
            problems.append(Problem(Severity.WARNING, "audience",
                                    "no contact would receive it (the lists, segment and "
                                    "suppressions leave nobody)"))
        else:
            sample_contacts = list(await store.audience(ids, segment=segment, limit=1,
                                                        sending_domain=domain))
    template = await store.get_template(campaign.template_id)
    if template is None:
        error("template", f"template #{campaign.template_id} no longer exists")
        return _ordered(problems)
    try:
        compiled = compile_template(campaign.subject or template.subject, template.html,
                                    template.text)
    except TemplateError as exc:
        for p in exc.problems:
            error("template", str(p))
        return _ordered(problems)
    sample = (Recipient(sample_contacts[0].email, sample_contacts[0].name,
                        sample_contacts[0].attributes, sample_contacts[0].id)
              if sample_contacts else PLACEHOLDER)
    list_name = lists[0].name if lists else "List"
    for p in check(compiled, sample, postal_address=campaign.postal_address or "x",
                   list_name=list_name, campaign_name=campaign.name):
        error("merge-field", f"{p} (sample contact {sample.email})")
    for c in check_compliance(compiled, postal_address=campaign.postal_address, sample=sample):
        if c.code != "render":  # a render failure is reported by check above
            error(c.code, str(c))
    message, built = _sample_message(compiled, campaign, sample, list_name=list_name,
                                     base_url=base_url)
    problems.extend(built)
    try:
        rendered = render_preview(compiled, sample,
                                  unsubscribe_url=f"{base_url.rstrip('/')}/u/preflight",
                                  postal_address=campaign.postal_address, list_name=list_name,
                                  campaign_name=campaign.name)
    except RenderError:
        return _ordered(problems)
    problems.extend(content_problems(rendered.html, rendered.text, domain))
    if spam is not None and message is not None:
        problems.extend(spam_problems(await spam.score(message, sender=campaign.from_address,
                                                       recipient=sample.email)))
    return _ordered(problems)


def _ordered(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p.severity is not Severity.ERROR)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.ERROR]


__all__ = [
    "Problem",
    "Severity",
    "SpamScorer",
    "SpamVerdict",
    "content_problems",
    "errors",
    "link_hosts",
    "preflight",
    "spam_problems",
]
