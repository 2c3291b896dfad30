"""The campaign build's fast paths keep their meaning: MessageBuilder's post-render hook (the
tracking links, marketing.link_rewriter) rewrites the HTML part per recipient and nothing else,
the remembered tag analysis gives what a fresh one gives (per-recipient hrefs, notrack, the
bound), `lines_fit` answers what splitting into lines answers, and the builder's other fast
paths (short fields, List-Unsubscribe, addresses, URLs, octet-level CRLF and HTML references)
give what fold() and the full checks give."""

from __future__ import annotations

import email
import email.policy
import hashlib
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.domain.ids import CampaignId, ContactId, ListId
from mailprime.marketing import link_rewriter, message_builder
from mailprime.marketing.link_rewriter import SignedUnsubscribeLinks, TrackingLinks, rewrite_links
from mailprime.marketing.message_builder import (
    CampaignInfo,
    HeaderError,
    MessageBuilder,
    ascii_html,
    crlf,
    crlf_octets,
    lines_fit,
)
from mailprime.marketing.templates import Recipient, compile_template
from mailprime.marketing.tokens import LinkToken, TokenSigner, TrackToken
from mailprime.message.headers import fold
from mailprime.message.msgid_token import MsgIdCodec

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
        link, sent = html.split(f'href="{BASE}/t/c/', 1)[1].split('"', 1)[0].split("/")
        click = SIGNER.verify(link, LinkToken)
        assert click is not None and click.url == f"https://shop.a.test/?a=1&b=R{n}"
        pixel = html.split(f'src="{BASE}/t/o/', 1)[1].split(".gif", 1)[0]
        assert sent == pixel  # one recipient token per message, for the clicks and the pixel
        opened = SIGNER.verify(pixel, TrackToken)
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


URL_CHARS = st.sampled_from(["a", "Z", "0", "/", "?", "=", "&", "-", "\t", " ", ",", "<", '"', "\x7f",
                             "é", "\n"])


@given(st.integers(0, 200), st.integers(0, 200), st.lists(URL_CHARS, max_size=3))
def test_the_header_fast_paths_give_what_fold_and_the_checks_give(
        url_size: int, mailto_size: int, extra: list[str]) -> None:
    url = "https://m.test/u/" + "x" * url_size + "".join(extra)
    mailto = "mailto:u@a.test?subject=" + "y" * mailto_size
    try:
        checked = message_builder._check_url(url, "https://")
    except HeaderError:
        # The slow path alone refuses: printable ASCII without " <>" passes the fast one.
        assert any(c in url for c in ' <>"\x7f\né')
        return
    assert checked == url
    value = f"<{url}>, <{mailto}>"
    assert message_builder._list_unsubscribe(url, mailto) == fold("List-Unsubscribe", value)


@given(st.text(st.sampled_from(["a", " ", '"', "\\", "(", ".", "é", "\t", "\r", "@", "<", ","]),
               max_size=12),
       st.sampled_from(["bob@b.test", "bo b@b.test", "bob", "bö@b.test", "b\tb@b.test", "b;b@b.test"]))
def test_the_address_fast_path_gives_what_the_checks_give(name: str, address: str) -> None:
    def slow() -> tuple[str, bool]:
        message_builder.header_value(name, "To name")
        message_builder.header_value(address, "To address")
        if "@" not in address or any(ch in address for ch in ' <>,;"'):
            raise HeaderError("not an address")
        if address.isascii():
            return message_builder.formataddr((name, address), "utf-8"), False
        if not name:
            return address, True
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>', True

    try:
        expected = slow()
    except HeaderError:
        with pytest.raises(HeaderError):
            message_builder._address(name, address, "To")
        return
    assert message_builder._address(name, address, "To") == expected


@given(st.lists(st.sampled_from(["a", "\r", "\n", "é", "<style>", "</style>", "<SCRIPT x>",
                                 "</script>", "\ud800", "·"]), max_size=20))
def test_octet_helpers_give_what_the_str_helpers_give(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert crlf_octets(text.encode("utf-8", "surrogatepass")) == crlf(text).encode(
        "utf-8", "surrogatepass")
    if "\ud800" not in text:
        assert message_builder._ascii_html_octets(text) == ascii_html(text).encode("utf-8")


def test_an_overlong_header_line_is_still_refused() -> None:
    links = SignedUnsubscribeLinks(SIGNER, BASE, CampaignId(3), ListId(1), "a.test")
    builder = MessageBuilder(compile_template("Hello", HTML), CAMPAIGN, links)
    with pytest.raises(HeaderError, match="longer than 998"):
        builder.build(Recipient("r@b.test", "R" * 1200, {}, ContactId(1)))
    builder.build(Recipient("r@b.test", "R" * 990, {}, ContactId(1)))  # folded: fits


def test_the_buffered_random_octets_hand_out_each_octet_once() -> None:
    octets = link_rewriter._RandomOctets(chunk=64)
    got = [octets(7) for _ in range(40)] + [octets(100), octets(1)]
    assert [len(g) for g in got] == [7] * 40 + [100, 1]
    assert len(set(got[:40])) == 40  # 56 random bits each: a repeat would be a bug


# A newsletter like the campaign bench's (a <style> kept for its @media rule, CSS inlined once,
# non-ASCII text, tracked and untracked links, a loop, the unsubscribe link), built with the
# clock, the boundaries and the Message-ID nonces fixed: the octets are pinned, so a change
# made for speed that changes a single octet of a message shows here.
NEWSLETTER = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>{{ campaign.name }}</title>'
    "<style>.b { color: #0a5 } @media (max-width: 600px) { .b { font-size: 18px } }</style>"
    '</head><body><p class="b">Hello {{ name | default("there", true) }} in '
    '{{ attributes.city | default("your town") }}!</p>\n'
    + "".join(f'<p>Story {i} &middot; more</p><p><a class="b" href="https://shop.a.test/s-{i}'
              f'?u=news&amp;i={i}">Read more</a></p>\n' for i in range(4))
    + "{% for pick in attributes.picks | default([]) %}<p>Pick: {{ pick }}</p>\n{% endfor %}"
    '<a href="mailto:help@a.test">help</a> <a data-mp-notrack href="https://x.a.test/">x</a>\n'
    '<p>{{ list.name }}, {{ email }}: <a href="{{ unsubscribe_url }}">Unsubscribe</a> \u00b7 '
    "{{ postal_address }}</p></body></html>\n")
PEOPLE = [Recipient("reader1@r.test", "Reader 1", {"city": "Oslo", "picks": ["a", "b"]},
                    ContactId(1)),
          Recipient("reader2@r.test", "R\u00ebader Zwei", {"city": "K\u00f6ln"}, ContactId(2)),
          Recipient("Reader3@R.test", "", {"picks": ["<x>"]}, ContactId(300)),
          Recipient("reader1@r.test", "Reader 1", {"city": "Oslo"}, ContactId(1))]


def _pinned_digest(style: str) -> str:
    info = CampaignInfo(CampaignId(9), "Weekly picks", "news@news.a.test", "Bench News",
                        "Weekly", "weekly-1", "1 Main St, Springfield", ListId(1))
    tracking = TrackingLinks(SIGNER, BASE, CampaignId(9), clicks=True, opens=True)
    links = SignedUnsubscribeLinks(SIGNER, BASE, CampaignId(9), ListId(1), "news.a.test")
    counter = iter(range(1, 1000))
    links._msgids = MsgIdCodec(SIGNER.secrets, nonce=lambda n: next(counter).to_bytes(n, "big"))
    compiled = compile_template("{{ name | default('Friend', true) }}, picks from {{ list.name }}",
                                NEWSLETTER.replace("</style>", style + "</style>"))
    builder = MessageBuilder(compiled, info, links, html_filter=tracking.html_filter,
                             now=lambda: datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    builder._random = random.Random(7)
    digest = hashlib.sha256()
    for who in PEOPLE:
        built = builder.build(who)
        digest.update(built.data + built.message_id.encode() + bytes([built.smtputf8]))
    return digest.hexdigest()


@pytest.mark.parametrize(("style", "digest"), [
    ("", "4d1e202a21a7b0444aede1a299c1e0c7d09cf69db50859a6b78b378a3a7f249e"),
    # Non-ASCII inside <style>: the HTML goes as it is (quoted-printable), not with references.
    (" @media print { .b::after { content: '\u00e9' } }",
     "52a00bfc3755ceb0e03c0eb604dc45ef875ac6c00d3bf3391644bda985d0c77d"),
])
def test_a_tracked_newsletter_is_built_octet_for_octet_as_pinned(style: str, digest: str) -> None:
    assert _pinned_digest(style) == digest


@given(st.text(alphabet=st.sampled_from(['"', "&", "a", "#", ";", " ", ">", "x", "-", "=", "'"]),
               max_size=12), st.sampled_from([BASE, "https://m.a.test/p&amp;q", 'https://m"']))
def test_the_unsubscribe_tag_shortcut_gives_what_the_analysis_gives(rest: str, base: str) -> None:
    """TrackingLinks skips the analysis of `<a href="<base>/u/...">` (one per recipient): only
    where the analysis would leave the tag as it is, and it remembers nothing of it."""
    tracking = TrackingLinks(SIGNER, base, CampaignId(3), clicks=True, opens=False)
    html = f'<p><a href="{base}/u/{rest}"> <a href="https://shop.a.test/">'
    fresh = rewrite_links(html, lambda t: tracking.click_url(t, ContactId(5)))
    assert tracking.rewrite(html, ContactId(5)) == fresh
    assert tracking.rewrite(html, ContactId(5)) == fresh
    if not set(rest) & set('">') and base == BASE:
        assert all(text.startswith('<a href="https://shop') for text in tracking._plans)


# ---- HtmlParts: the template's fixed text analysed once -----------------------------------------

# Templates where the once-per-campaign analysis must give what html_filter and the part's
# encoding give on the whole HTML, each with whether it can (True) or must not (False) take
# that way for the first recipient below; "untracked": only without click tracking (a tag of
# fields is rewritten per message).
_PARTS_CASES = [
    (HTML, "untracked"),
    ('<html><head><style>@media print { p::after { content: "é" } }</style></head><body>'
     "{{ name }} ·</body></html>", False),  # non-ASCII in <style>: the HTML goes as UTF-8
    ("<p>{{ name }} ·</p><style>p { color: red }</style><a href='https://s.a.test/{{ email }}'"
     ">x</a><A HREF=https://s.a.test/y>y</A></body >tail", "untracked"),
    ('<p>{{ name | safe }}</p><a href="https://s.a.test/">s</a>', True),  # safe: checked each time
    ('<p>x<{{ "a" }} href="https://s.a.test/">s</a></p>', True),
    ('<p>x<a{{ name }} href="https://s.a.test/">s</a></p>', False),  # a tag name cut
    ('<p>x</{{ "body" }}></p><a href="https://s.a.test/">s</a>', False),
    ("<style>{{ name }}</style><p>·</p>", False),  # an element of several chunks
    ('<a title="</body>" href="https://s.a.test/">s</a></body>\n<p>after ·</p>', True),
    ('<a href="{{ unsubscribe_url }}" class="{{ name }}">u</a>\n<p>{{ postal_address }}</p>'
     "{% for x in attributes.picks | default([]) %}<a href='https://s.a.test/{{ loop.index }}'>"
     "{{ x }}</a>{% endfor %}</body>", False),  # the CSS inliner, after each render
    ('<a href="{{ unsubscribe_url }}"\n>u</a>', True),
    ('{% macro m(u) %}<a href="https://s.a.test/m">{{ u }}</a>{% endmacro %}{{ m(name) }}'
     "</BODY>", False),  # a macro's output: a chunk with "<" that is not fixed text
    ("<p>no body, no tags, {{ name }}</p>", True),
    ('<p>{{ attributes.note | default("") }}</p>\n<a href="https://s.a.test/">s</a>\n', True),
    ('<p>long ' + "x" * 1200 + ' line</p><a href="https://s.a.test/">s</a>', True),
]
_PARTS_PEOPLE = [
    Recipient("a@b.test", "Ann", {"picks": ["p<1>", "p&2"]}, ContactId(1)),
    Recipient("b@b.test", "Bé rt", {"note": "a\nb\r\nc\rd"}, ContactId(2)),
    Recipient("c@b.test", "<b>Cé</b>", {"picks": []}, ContactId(3)),
    Recipient("d@b.test", "", {}, None),
]


@pytest.mark.parametrize(("clicks", "opens"), [(True, True), (True, False), (False, True),
                                               (False, False), (None, None)])
@pytest.mark.parametrize(("html", "fast"), _PARTS_CASES)
def test_the_once_analysed_html_is_what_the_hook_and_the_encoding_make(
        html: str, fast: bool | str, clicks: bool | None, opens: bool | None) -> None:
    links = SignedUnsubscribeLinks(SIGNER, BASE, CampaignId(3), ListId(1), "a.test")
    compiled = compile_template("S", html)
    hook = (TrackingLinks(SIGNER, BASE, CampaignId(3), clicks=clicks, opens=opens).html_filter
            if clicks is not None and opens is not None else None)
    builders = [MessageBuilder(compiled, CAMPAIGN, links, html_filter=hook,
                               now=lambda: datetime(2030, 1, 1, tzinfo=UTC)) for _ in range(2)]
    parts = builders[0]._html_parts
    assert parts is not None
    builders[1]._html_parts = None  # the general way
    for builder in builders:
        builder._random = random.Random(5)
    for who in _PARTS_PEOPLE * 2:
        once, general = (b.build(who, message_id="<m@a.test>") for b in builders)
        assert once.data == general.data
        assert once.rendered == general.rendered
    taken = [parts.html(message_builder.render_chunks(compiled, message_builder.MergeData(
        who, "https://m.a.test/u/x"))[1], who) is not None for who in _PARTS_PEOPLE[:1]]
    assert taken == [not clicks if fast == "untracked" else fast]


def test_a_filter_that_is_not_a_link_rewriters_own_takes_the_general_way() -> None:
    links = SignedUnsubscribeLinks(SIGNER, BASE, CampaignId(3), ListId(1), "a.test")
    builder = MessageBuilder(compile_template("S", HTML), CAMPAIGN, links,
                             html_filter=lambda html, who: html.lower())
    assert builder._html_parts is None
    assert "shop.a.test/?a=1&amp;b=ann" in builder.build(_PARTS_PEOPLE[0]).rendered.html


def test_escaping_without_markup_writes_what_markupsafe_writes() -> None:
    from markupsafe import Markup, escape

    from mailprime.marketing import templates
    for value in ["", "plain", "<a href=\"x\">&'</a>", "é<", Markup("<b>"), 5, None]:
        assert templates._escape(value) == str(escape(value))
    compiled = compile_template("{{ name }}", "<p>{{ name }}</p>")
    namespace = compiled.html.root_render_func.__globals__
    assert namespace["escape"] is templates._escape
