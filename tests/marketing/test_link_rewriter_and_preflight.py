"""Pure parts of campaign content: the link rewriting and pixel (marketing.link_rewriter) and
the pre-flight's content warnings (marketing.preflight.content_problems), string-exact."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailprime.domain.ids import CampaignId, ContactId
from mailprime.marketing import html_marks
from mailprime.marketing.link_rewriter import TrackingLinks, add_pixel, rewrite_links
from mailprime.marketing.preflight import Severity, content_problems, link_hosts
from mailprime.marketing.tokens import LinkToken, TokenSigner, TrackToken

SIGNER = TokenSigner([b"s" * 32])


def test_rewrite_links_exactly() -> None:
    html = ('<a href="https://x.test/a?b=1&amp;c=2" class="k">A</a> <A HREF=\'http://y.test\'>B</A>'
            ' <a href=https://z.test/>C</a> <a href="mailto:a@b.test">D</a> <a name="top">E</a>'
            ' <a data-mp-notrack href="https://w.test/">F</a>')
    seen: list[str] = []

    def click(url: str) -> str | None:
        seen.append(url)
        return f"https://t.test/c?u={len(seen)}&v" if url.startswith("http") else None

    assert rewrite_links(html, click) == (
        '<a href="https://t.test/c?u=1&amp;v" class="k">A</a> <A HREF="https://t.test/c?u=2&amp;v">B</A>'
        ' <a href="https://t.test/c?u=3&amp;v">C</a> <a href="mailto:a@b.test">D</a>'
        ' <a name="top">E</a> <a data-mp-notrack href="https://w.test/">F</a>')
    assert seen == ["https://x.test/a?b=1&c=2", "http://y.test", "https://z.test/",
                    "mailto:a@b.test"]


def test_only_the_href_attribute_itself_is_rewritten() -> None:
    html = ('<a data-href="https://d.test/" title="see href=https://t.test/" '
            'href="https://x.test/">A</a> <a data-href="https://only.test/">B</a>')
    seen: list[str] = []

    def click(url: str) -> str:
        seen.append(url)
        return "https://t.test/c"

    assert rewrite_links(html, click) == (
        '<a data-href="https://d.test/" title="see href=https://t.test/" '
        'href="https://t.test/c">A</a> <a data-href="https://only.test/">B</a>')
    assert seen == ["https://x.test/"]


def test_pixel_goes_before_the_last_body_end() -> None:
    img = ('<img src="https://t.test/o.gif?a=1&amp;b" width="1" height="1" alt="" '
           'style="display:block;width:1px;height:1px;border:0">')
    assert add_pixel("<body>x</BODY >", "https://t.test/o.gif?a=1&b") == f"<body>x{img}</BODY >"
    assert add_pixel("<p>x</p>", "https://t.test/o.gif?a=1&b") == f"<p>x</p>{img}"


def test_tracking_signs_targets_and_leaves_the_unsubscribe_link() -> None:
    links = TrackingLinks(SIGNER, "https://m.test/", CampaignId(7), clicks=True, opens=False)
    links.current = ContactId(42)
    out = links('<a href="https://x.test/?q=1&amp;r=2">x</a><a href="https://m.test/u/TOKEN">u</a>'
                f'<a href="https://x.test/{"p" * 2100}">long</a>')
    link, recipient = out.split('href="https://m.test/t/c/', 1)[1].split('"', 1)[0].split("/")
    target = SIGNER.verify(link, LinkToken)
    assert target is not None and target.url == "https://x.test/?q=1&r=2"
    assert target.campaign_id == 7
    sent = SIGNER.verify(recipient, TrackToken)
    assert sent is not None
    assert sent.subject.campaign_id == 7 and sent.subject.contact_id == 42  # type: ignore[union-attr]
    assert '<a href="https://m.test/u/TOKEN">u</a>' in out  # not a redirect
    assert f'href="https://x.test/{"p" * 2100}"' in out  # too long to sign: left alone
    assert "/t/o/" not in out


def test_content_warnings() -> None:
    text = "Enough words here for a text part of a real newsletter."
    assert content_problems(f"<p>{text}</p>", text, "a.test") == []
    only = content_problems('<img src="https://a.test/x.png">', "", "a.test")
    assert [p.code for p in only] == ["text-part", "image-only"]
    assert all(p.severity is Severity.WARNING for p in only)
    mostly = content_problems(f'<p>{text}</p><img src="x"><img src="y">', text, "a.test")
    assert [p.code for p in mostly] == ["mostly-images"]
    html = ('<a href="https://www.a.test/">1</a><a href="https://news.a.test/x">2</a>'
            '<a href="https://tracker.example.net/y">3</a><a href="https://b.co.uk/">4</a>')
    assert link_hosts(html) == {"www.a.test", "news.a.test", "tracker.example.net", "b.co.uk"}
    (aligned,) = content_problems(f"<p>{text}</p>{html}", text, "mail.a.test")
    assert aligned.code == "link-domains" and "b.co.uk, tracker.example.net" in aligned.message


def test_one_link_token_per_target_and_one_recipient_token_per_message() -> None:
    links = TrackingLinks(SIGNER, "https://m.test", CampaignId(7), clicks=True, opens=True)
    html = '<a href="https://x.test/a">1</a><a href="https://x.test/a" class="b">2</a></body>'
    out = {c: links.rewrite(html, ContactId(c)) for c in (1, 2)}
    hrefs = {c: re.findall(r'href="https://m.test/t/c/([^"/]+)/([^"/]+)"', o) for c, o in out.items()}
    pixels = {c: re.findall(r'src="https://m.test/t/o/([^"/]+)\.gif"', o) for c, o in out.items()}
    assert len({link for pairs in hrefs.values() for link, _ in pairs}) == 1
    for c in (1, 2):
        assert len(hrefs[c]) == 2 and {r for _, r in hrefs[c]} == set(pixels[c])
    assert pixels[1] != pixels[2]


_PIECES = ["<a", "<A", "<a ", "<ab", "<a_", "<aé", "<a\n", "<a>", ">", "<", "href=x", "</body>",
           "</BODY >", "</body", "</bodyx>", "</", "x", " ", "\n", "é", "<a href='y'>", "</body\t>"]


@given(st.lists(st.sampled_from(_PIECES), max_size=30))
def test_the_pixel_goes_where_the_last_body_end_is(pieces: list[str]) -> None:
    html = "".join(pieces)
    ends = list(html_marks.BODY_END.finditer(html))
    assert html_marks.last_body_end(html) == (ends[-1].start() if ends else -1)


@given(st.lists(st.sampled_from([*_PIECES, '<a href="https://x.test/">', "<A HREF=https://y.test>",
                                 "<a data-mp-notrack href='https://z.test/'>", "<a href=</body>",
                                 '<a title="</body" href="https://x.test/">']), max_size=30),
       st.booleans(), st.booleans())
def test_tracking_rewrites_as_rewrite_links_and_add_pixel_do(pieces: list[str], clicks: bool,
                                                            opens: bool) -> None:
    html = "".join(pieces)
    links = TrackingLinks(SIGNER, "https://m.test/?a&b", CampaignId(7), clicks=clicks, opens=opens)
    expected = html
    if clicks:
        expected = rewrite_links(expected, lambda url: links.click_url(url, ContactId(3)))
    if opens:
        expected = add_pixel(expected, links.pixel_url(ContactId(3)))
    assert links.rewrite(html, ContactId(3)) == expected
