"""An audience, a template, DKIM keys and a campaign on a real store, for the campaign tests
(dispatch, CLI, end to end): `seed` builds them and says who must and must not get mail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailprime.domain.audience import (
    ConsentEvidence,
    ConsentSource,
    ContactInput,
    ImportMode,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.campaigns import Campaign, CampaignDraft
from mailprime.domain.clock import Clock, SystemClock
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.templates import TemplateFields
from mailprime.marketing.campaigns import create_campaign
from mailprime.services.dkim_keys import DkimKeys
from mailprime.storage.ports import Store

IMPORT = ConsentEvidence(ConsentSource.IMPORT, "v1")
POSTAL = "Example Ltd, 1 Main Street, Springfield"
BASE_URL = "https://mail.a.test"
HTML = """<html><head><style>p { color: #333 }</style></head><body>
<p>Hello {{ name }} from {{ attributes.city | default("nowhere") }},</p>
<p>Our news this month is long enough to be read as text by any filter that cares to read
it, with a <a href="https://www.a.test/news?id=1&amp;x=2">link to the news</a> and a
<a href="https://shop.a.test/">shop</a>.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> &middot; {{ postal_address }}</p>
</body></html>"""


@dataclass(frozen=True)
class Seeded:
    campaign: Campaign
    confirmed: tuple[str, ...]  # must get exactly one message each
    excluded: tuple[str, ...]  # suppressed, unsubscribed, unconfirmed: must get nothing
    dkim_records: dict[str, str]  # "selector._domainkey.a.test" -> TXT


def address(n: int, domain: str) -> str:
    return f"user{n:05d}@{domain}"


async def seed(store: Store, *, confirmed: int, rcpt_domain: str = "b.test",
               excluded_each: int = 3, rate: int = 0, track: bool = True,
               clock: Clock | None = None, name: str = "April news",
               from_domain: str = "a.test", template_name: str = "news") -> Seeded:
    clock = clock or SystemClock()
    if not await store.is_local_domain(from_domain):
        await store.add_domain(from_domain)
    keys = DkimKeys(store, clock)
    if not await store.list_dkim_keys(from_domain):
        await keys.generate(from_domain)
    records = {r.name: r.record for r in await keys.records(from_domain)}
    news = await store.create_list(f"news-{name}", opt_in=OptIn.DOUBLE)
    good = [address(n, rcpt_domain) for n in range(confirmed)]
    base = confirmed
    unconfirmed = [address(base + n, rcpt_domain) for n in range(excluded_each)]
    suppressed = [address(base + excluded_each + n, rcpt_domain) for n in range(excluded_each)]
    gone = [address(base + 2 * excluded_each + n, rcpt_domain) for n in range(excluded_each)]

    async def add(emails: Sequence[str], status: MembershipStatus) -> None:
        for start in range(0, len(emails), 1000):
            await store.upsert_contacts(
                [ContactInput(e, f"Name {e.split('@')[0]}", {"city": f"City{e[4:9]}"})
                 for e in emails[start:start + 1000]],
                mode=ImportMode.UPSERT, list_id=news.id, status=status, evidence=IMPORT)

    await add(good + suppressed + gone, MembershipStatus.CONFIRMED)
    await add(unconfirmed, MembershipStatus.UNCONFIRMED)
    for e in suppressed:
        await store.suppress(Suppression(e, "", SuppressionReason.HARD_BOUNCE,
                                         datetime.now(UTC)))
    for e in gone:
        contact = await store.get_contact(e)
        assert contact is not None
        await store.set_membership(contact.id, news.id, status=MembershipStatus.UNSUBSCRIBED,
                                   evidence=ConsentEvidence(ConsentSource.ONE_CLICK))
    template = await store.get_template_by_name(template_name)
    if template is None:
        template = await store.create_template(TemplateFields(
            template_name, "News for {{ name }} in {{ attributes.city | default('town') }}", HTML))
    campaign = await create_campaign(store, CampaignDraft(
        name=name, template_id=template.id, list_ids=(news.id,),
        from_address=f"news@{from_domain}", from_name="A News", postal_address=POSTAL,
        rate_per_minute=rate, track_opens=track, track_clicks=track))
    return Seeded(campaign, tuple(good), tuple(unconfirmed + suppressed + gone), records)
