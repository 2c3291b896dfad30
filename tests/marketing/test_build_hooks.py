"""The campaign build's fast paths keep their meaning: MessageBuilder's post-render hook (the
tracking links, marketing.link_rewriter) rewrites the HTML part per recipient and nothing else,
the remembered tag analysis gives what a fresh one gives (per-recipient hrefs, notrack, the
bound), and `lines_fit` answers what splitting into lines answers."""

from __future__ import annotations

import email
import email.policy
import random
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing import link_rewriter
from mailprime.marketing.link_rewriter import SignedUnsubscribeLinks, TrackingLinks, rewrite_links
from mailprime.marketing.message_builder import CampaignInfo, MessageBuilder, crlf, lines_fit
from mailprime.marketing.templates import Recipient, compile_template
from mailprime.marketing.tokens import ClickToken, OpenToken, TokenSigner

SIGNER = TokenSigner([b"s" * 32])
BASE = "https://m.a.test"
HTML = ('<html><body><p>Hi {{ name }}</p><a href="https://shop.a.test/?a=1&amp;b={{ name }}">'
        'shop</a> <a data-mp-notrack href="https://x.a.test/">plain</a> '
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</body></html>')
CAMPAIGN = CampaignInfo(CampaignId(3), "C", "news@a.test", "News", "Weekly", "weekly",
                        "1 Main St", ListId(1))


def html_of(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    part = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    return str(part.get_content())  # type: ignore[attr-defined]


def test_the_post_render_hook_tracks_each_recipient_in_its_own_message() -> None:
    tracking = TrackingLinks(SIGNER, BASE, CampaignId(3), clicks=True, opens=True)
    links = SignedUnsubscribeLinks(SIGNER, BASE, CampaignId(3), ListId(1), "a.test")
    compiled = compile_template("Hello {{ name }}", HTML)
    builder = MessageBuilder(compiled, CAMPAIGN, links, html_filter=tracking.html_filter,
                             now=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    plain = MessageBuilder(compiled, CAMPAIGN, links)
    for n in (7, 8, 7):
        who = Recipient(f"r{n}@b.test", f"R{n}", {}, ContactId(n))
        built = builder.build(who)
        html = html_of(built.data)
        assert html == crlf(built.rendered.html)  # what the hook returned is what is sent
        token = html.split(f'href="{BASE}/t/c/', 1)[1].split('"', 1)[0]
        click = SIGNER.verify(token, ClickToken)
        assert click is not None and click.url == f"https://shop.a.test/?a=1&b=R{n}"
        assert click.subject.contact_id == n  # type: ignore[union-attr]
        pixel = html.split(f'src="{BASE}/t/o/', 1)[1].split(".gif", 1)[0]
        opened = SIGNER.verify(pixel, OpenToken)
        assert opened is not None and opened.subject.contact_id == n  # type: ignore[union-attr]
        assert 'href="https://x.a.test/"' in html and f'href="{BASE}/u/' in html
        untracked = plain.build(who)
        assert "/t/c/" not in html_of(untracked.data) and "/t/o/" not in untracked.rendered.html
        assert built.rendered.text == untracked.rendered.text  # the text part is never rewritten
    # The compiled template itself is untouched: another builder of it tracks nothing.
    assert "/t/" not in plain.build(Recipient("z@b.test", "Z", {}, ContactId(9))).rendered.html


def test_remembered_tag_plans_rewrite_as_fresh_ones_and_stay_bounded() -> None:
    tracking = TrackingLinks(SIGNER, BASE, CampaignId(3), clicks=True, opens=False)
    tags = ['<a href="https://a.test/{n}">', "<a href='https://a.test/q?x=1&amp;y={n}'>",
            '<a data-mp-notrack href="https://a.test/">', "<a name=x>", '<a href="mailto:x@y">',
            f'<a href="{BASE}/u/TOKEN{{n}}">', "<A HREF=https://a.test/bare{n}>"]
    for n in range(3):
        html = "<p>".join(t.format(n=n) for t in tags)
        fresh = rewrite_links(html, lambda t: tracking.click_url(t, ContactId(5)))
        assert tracking.rewrite(html, ContactId(5)) == fresh  # with the remembered plans
    assert len(tracking._plans) <= link_rewriter.MAX_TAG_PLANS
    many = "".join(f'<a href="https://a.test/{n}">' for n in range(link_rewriter.MAX_TAG_PLANS + 5))
    out = tracking.rewrite(many, ContactId(6))
    assert out.count(f'href="{BASE}/t/c/') == link_rewriter.MAX_TAG_PLANS + 5
    assert len(tracking._plans) <= link_rewriter.MAX_TAG_PLANS


@given(st.lists(st.tuples(st.sampled_from([0, 1, 5, 75, 997, 998, 999, 1000, 2100]),
                          st.sampled_from(["\n", "\r\n", "\r", ""])), max_size=8),
       st.sampled_from([998, 76, 3]))
def test_lines_fit_answers_what_splitting_answers(pieces: list[tuple[int, str]],
                                                  limit: int) -> None:
    rnd = random.Random(len(pieces))
    text = "".join(rnd.choice("ab ") * size + end for size, end in pieces)
    data = crlf(text).encode()
    assert lines_fit(data, limit) == (max(map(len, data.split(b"\r\n"))) <= limit)
