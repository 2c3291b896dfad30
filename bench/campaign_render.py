"""Campaign rendering micro-benchmark: messages/s built by marketing.message_builder for a
typical newsletter (about 9 KB of HTML with a <style> block, a personalised subject, merge fields
in the body and a loop), on one core, with the CSS inlined once (the default) and, for
comparison, inlined after each render. No DKIM, no queue: that is issue 5's campaign bench.

    python -m bench.campaign_render [--seconds 3]
    python -m bench --case render
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import time
from dataclasses import dataclass, replace

from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing.message_builder import CampaignInfo, MessageBuilder
from mailprime.marketing.templates import CompiledTemplate, Recipient, compile_template

SECONDS = 3.0
_SECRET = b"bench secret of at least 16 octets"

_ARTICLE = """
<tr><td class="article">
  <h2 class="title">{title}</h2>
  <p class="body">Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor
  incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation
  ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit
  in voluptate velit esse cillum dolore eu fugiat nulla pariatur.</p>
  <p><a class="button" href="https://shop.a.test/{slug}?utm_source=news">Read more</a></p>
</td></tr>"""

NEWSLETTER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ campaign.name }}</title>
<style>
body { margin: 0; padding: 0; background: #f4f4f4; font-family: Helvetica, Arial, sans-serif }
.wrapper { width: 100%; max-width: 600px; margin: 0 auto; background: #ffffff }
.header { background: #0a5; color: #ffffff; padding: 24px; font-size: 22px }
.article { padding: 16px 24px; border-bottom: 1px solid #eeeeee }
.title { font-size: 18px; color: #222222; margin: 0 0 8px 0 }
.body { font-size: 15px; line-height: 1.5; color: #444444 }
.button { display: inline-block; background: #0a5; color: #ffffff; padding: 8px 16px;
          text-decoration: none; border-radius: 4px }
.footer { font-size: 12px; color: #888888; padding: 24px; text-align: center }
@media (max-width: 600px) { .wrapper { width: 100% !important } .header { font-size: 18px } }
</style></head>
<body><table class="wrapper" role="presentation">
<tr><td class="header">Hello {{ name | default("there", true) }}!</td></tr>
<tr><td class="article"><p class="body">Because you live in
{{ attributes.city | default("your town") }}, here are this week's picks.</p></td></tr>
""" + "".join(_ARTICLE.format(title=f"Story number {i}", slug=f"story-{i}") for i in range(8)) + """
{% for pick in attributes.picks | default([]) %}
<tr><td class="article"><p class="body">Your pick: {{ pick }}</p></td></tr>
{% endfor %}
<tr><td class="footer">You get this because you subscribed to {{ list.name }} as {{ email }}.<br>
<a href="{{ unsubscribe_url }}">Unsubscribe</a> &middot; {{ postal_address }}</td></tr>
</table></body></html>
"""

SUBJECT = "{{ name | default('Friend', true) }}, this week's picks from {{ list.name }}"


class _Links:
    def url_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        tag = hmac.new(_SECRET, recipient.email.encode(), hashlib.sha256).hexdigest()[:32]
        return f"https://mail.a.test/u/{campaign.campaign_id}/{tag}"

    def mailto_for(self, recipient: Recipient, campaign: CampaignInfo) -> str:
        return f"mailto:unsubscribe@a.test?subject=u-{recipient.contact_id}"


CAMPAIGN = CampaignInfo(CampaignId(1), "Weekly picks", "news@a.test", "A Shop", "Weekly News",
                        "weekly", "1 Main St, Springfield, IL 62701", ListId(1))


@dataclass(frozen=True, slots=True)
class RenderRate:
    label: str
    count: int
    seconds: float
    size: int  # octets of the last message

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def recipients() -> list[Recipient]:
    cities = ["Oslo", "Köln", "Lyon", "Porto", "Brno"]
    return [Recipient(f"user{i}@b{i % 50}.test", f"User {i}",
                      {"city": cities[i % 5], "picks": ["shoes", "hats"][: i % 3]},
                      ContactId(i)) for i in range(1000)]


def measure(compiled: CompiledTemplate, label: str, seconds: float) -> RenderRate:
    builder = MessageBuilder(compiled, CAMPAIGN, _Links())
    people = recipients()
    count, size = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for person in people[:100]:
            size = len(builder.build(person).data)
        count += 100
        people = people[100:] + people[:100]
    return RenderRate(label, count, time.perf_counter() - start, size)


def run(seconds: float = SECONDS) -> list[RenderRate]:
    once = compile_template(SUBJECT, NEWSLETTER)
    assert once.html_inlined and once.text is not None, "the newsletter should inline once"
    per_render = replace(once, html=once.html_raw, html_inlined=False, text=None)
    return [measure(once, "CSS inlined once, text derived once", seconds),
            measure(per_render, "CSS inlined + html2text per message", seconds)]


def report(rates: list[RenderRate]) -> str:
    lines = [f"campaign render: {len(NEWSLETTER):,} characters of HTML template, one core, "
             "render + MIME build (no DKIM, no queue)"]
    lines += [f"  {r.label}: {r.rate:,.0f} messages/s ({r.count:,} in {r.seconds:.1f} s,"
              f" {r.size:,} B each)" for r in rates]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.campaign_render", description=__doc__)
    p.add_argument("--seconds", type=float, default=SECONDS)
    print(report(run(p.parse_args().seconds)))


if __name__ == "__main__":
    main()
