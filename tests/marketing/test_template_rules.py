"""marketing.template_rules: the CAN-SPAM / RFC 8058 checks a campaign template must pass."""

from __future__ import annotations

from mailprime.marketing.template_rules import check_compliance
from mailprime.marketing.templates import Recipient, compile_template

ADDRESS = "1 Main St, Springfield, IL 62701"
GOOD = ('<p>Hi {{ name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
        "<p>{{ postal_address }}</p>")


def codes(html: str, text: str | None = None, address: str = ADDRESS) -> list[tuple[str, str]]:
    return [(p.code, p.part) for p in
            check_compliance(compile_template("s", html, text), postal_address=address)]


def test_a_compliant_template_has_no_problem() -> None:
    assert codes(GOOD) == []
    literal = GOOD.replace("{{ postal_address }}", "1 Main  St,\nSpringfield, IL&nbsp;62701")
    assert codes(literal) == []  # the address written out counts (whitespace aside)
    assert codes(GOOD, "Bye: {{ unsubscribe_url }}\n{{ postal_address }}") == []


def test_missing_link_or_address_is_reported_per_part() -> None:
    assert codes("<p>{{ postal_address }}</p>") == [("unsubscribe-link", "html"),
                                                    ("unsubscribe-link", "text")]
    assert codes('<a href="{{ unsubscribe_url }}">Unsubscribe</a>') == [
        ("postal-address", "html"), ("postal-address", "text")]
    assert codes(GOOD, "no link, no address") == [("unsubscribe-link", "text"),
                                                  ("postal-address", "text")]


def test_hidden_links_do_not_count() -> None:
    hidden = [
        '<!-- <a href="{{ unsubscribe_url }}">Unsubscribe</a> --><p>{{ postal_address }}</p>',
        '{% if false %}<a href="{{ unsubscribe_url }}">U</a>{% endif %}{{ postal_address }}',
        '<a href="{{ unsubscribe_url }}"></a><p>{{ postal_address }}</p>',  # no visible text
        '<p>{{ unsubscribe_url }}</p><p>{{ postal_address }}</p>',  # shown, but not a link
    ]
    for html in hidden:
        assert ("unsubscribe-link", "html") in codes(html), html


def test_no_configured_address_is_a_problem_that_says_where_to_set_it() -> None:
    problems = check_compliance(compile_template("s", GOOD), postal_address="")
    assert [p.code for p in problems] == ["postal-address-missing"]
    assert "[marketing] postal_address" in problems[0].message


def test_a_template_that_does_not_render_is_reported() -> None:
    problems = check_compliance(compile_template("s", "{{ attributes.x }}" + GOOD),
                                postal_address=ADDRESS, sample=Recipient("a@b.test"))
    assert [(p.code, p.part) for p in problems] == [("render", "html")]
