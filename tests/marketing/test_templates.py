"""marketing.templates and its sandbox: rendering, escaping, errors with their lines, sandbox
escapes and limits, CSS inlined once (or per render when it must), the text alternative."""

from __future__ import annotations

import pytest

from mailprime.marketing.template_html import inline_source, text_source
from mailprime.marketing.template_sandbox import MAX_OUTPUT, MAX_RANGE, MAX_STEPS
from mailprime.marketing.templates import (
    MAX_BODY_SOURCE,
    MAX_SUBJECT_SOURCE,
    MergeData,
    Recipient,
    RenderError,
    TemplateError,
    attribute_references,
    check,
    compile_template,
    render,
    render_preview,
)

NEWSLETTER = """<html><head><title>{{ campaign.name }}</title>
<style>
p { color: #333; font-size: 16px }
.cta { background: #06c; color: #fff }
@media (max-width: 600px) { p { font-size: 14px } }
</style></head>
<body>
<p>Hello {{ name }},</p>
<table>{% for item in attributes.picks | default([]) %}
<tr><td class="cta">{{ item }}</td></tr>{% endfor %}</table>
<p>From {{ list.name }}, to {{ email }}.</p>
<a class="cta" href="{{ unsubscribe_url }}">Unsubscribe</a>
<p>{{ postal_address }}</p>
</body></html>"""

ANN = Recipient("ann@b.test", "Ann", {"picks": ["one", "two"], "city": "Oslo"})


def data(recipient: Recipient = ANN) -> MergeData:
    return MergeData(recipient, "https://a.test/u/tok?x=1&y=2", "1 Main St, Springfield",
                     "News", "Spring")


def test_render_merges_every_field_and_inlines_css_once() -> None:
    compiled = compile_template("Hi {{ name }} from {{ campaign.name }}", NEWSLETTER)
    assert compiled.html_inlined and compiled.text is not None and not compiled.text_given
    out = render(compiled, data())
    assert out.subject == "Hi Ann from Spring"
    assert '<p style="color: #333;font-size: 16px;">Hello Ann,</p>' in out.html
    assert '<td class="cta" style="background: #06c;color: #fff;">one</td>' in out.html
    assert "two</td>" in out.html and "to ann@b.test." in out.html
    # the media query stays in a <style> block, the inlined rules do not
    assert "@media (max-width: 600px)" in out.html and "p { color" not in out.html
    assert 'href="https://a.test/u/tok?x=1&amp;y=2"' in out.html  # escaped in an attribute
    assert "<title>Spring</title>" in out.html
    assert out.text.startswith("Hello Ann,\n")
    assert "https://a.test/u/tok?x=1&y=2" in out.text and "1 Main St, Springfield" in out.text
    assert "<" not in out.text.replace("<https", "")


def test_inline_once_equals_inlining_after_each_render() -> None:
    once = compile_template("s", NEWSLETTER)
    per_render = compile_template("s", NEWSLETTER.replace(
        "<style>", "<style>/* {{ 'merge field in the style: inline after each render' }} */"))
    assert once.html_inlined and not per_render.html_inlined
    assert render(once, data()).html.replace("</tbody><tbody>", "").count("cta") == \
        render(per_render, data()).html.count("cta")
    assert render(per_render, data()).html.count('style="background: #06c;color: #fff;"') == 3


@pytest.mark.parametrize("html", [
    '<p style="color: {{ attributes.color }}">x</p>',  # inside a style attribute
    "<p {% if name %}class=\"a\"{% endif %}>x</p>",  # between attributes
    "<style>p { color: {{ attributes.color }} }</style><p>x</p>",  # inside <style>
    "<!-- {{ name }} --><p>x</p>",  # inside a comment
    "<a href={{ unsubscribe_url }}>x</a>",  # unquoted attribute value
])
def test_constructs_the_parser_could_move_fall_back_to_inlining_per_render(html: str) -> None:
    assert inline_source(html) is None
    compiled = compile_template("s", html)
    assert not compiled.html_inlined
    render(compiled, data(Recipient("a@b.test", "n", {"color": "red"})))


def test_text_source_keeps_constructs_and_drops_the_head() -> None:
    derived = text_source("<html><head><title>{{ x }}</title></head><body><p>Hi {{ name }}"
                          '</p><a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>')
    assert derived is not None
    assert "{{ x }}" not in derived and "Hi {{ name }}" in derived
    assert "{{ unsubscribe_url }}" in derived


def test_a_given_text_part_is_used_as_is() -> None:
    compiled = compile_template("s", "<p>{{ name }}</p>", "Dear {{ name }} & co\n")
    assert compiled.text_given
    assert render(compiled, data()).text == "Dear Ann & co\n"  # no HTML escaping in text


def test_html_escapes_merge_data_but_subject_and_text_do_not() -> None:
    evil = Recipient("e@b.test", "<script>alert(1)</script>", {"bio": '"><img src=x onerror=1>'})
    compiled = compile_template("{{ name }}", '<p title="{{ attributes.bio }}">{{ name }}</p>')
    out = render(compiled, data(evil))
    assert "<script>" not in out.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in out.html
    assert "<img" not in out.html and "onerror" in out.html  # kept as text inside the attribute
    assert out.subject == "<script>alert(1)</script>"  # a header is not HTML
    assert "<script>alert(1)</script>" in out.text


def test_syntax_errors_are_reported_with_part_and_line() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("Hi {{ name ", "<p>ok</p>\n\n{% if x %}\n<p>", "a\n{{ }}\n")
    found = [(p.part, p.line) for p in caught.value.problems]
    assert found == [("subject", 1), ("html", 3), ("text", 2)]
    assert "subject, line 1:" in str(caught.value)


def test_sizes_and_empty_parts_are_refused() -> None:
    for subject, html, text, part in (
            ("x" * (MAX_SUBJECT_SOURCE + 1), "<p>x</p>", None, "subject"),
            ("s", "x" * (MAX_BODY_SOURCE + 1), None, "html"),
            ("s", "<p>x</p>", "x" * (MAX_BODY_SOURCE + 1), "text"),
            ("", "<p>x</p>", None, "subject"), ("s", "  ", None, "html"),
            ("a\r\nBcc: x@y", "<p>x</p>", None, "subject")):
        with pytest.raises(TemplateError) as caught:
            compile_template(subject, html, text)
        assert caught.value.problems[0].part == part


def test_check_reports_unknown_fields_with_their_lines() -> None:
    compiled = compile_template(
        "Hi {{ nmae }}",
        "<p>{{ name }}</p>\n<p>{{ attributes.city }}</p>\n{% if false %}{{ coupon }}{% endif %}\n"
        "<p>{{ attributes.zip | default('') }} {% if attributes.age is defined %}x{% endif %}</p>",
        "{% set local = 1 %}{{ local }} {% for i in range(2) %}{{ i }}{% endfor %}\n{{ loop_var }}")
    problems = check(compiled, Recipient("a@b.test", "A", {}))
    found = sorted((p.part, p.line, p.name) for p in problems)
    assert found == [("html", 2, "attributes.city"), ("html", 3, "coupon"),
                     ("subject", 1, "nmae"), ("text", 2, "loop_var")]
    assert all(p.line >= 1 and p.message for p in problems)
    assert check(compiled, Recipient("a@b.test", "A", {"city": "Oslo"})) != []  # nmae stays


def test_render_error_names_the_line_and_field() -> None:
    compiled = compile_template("s", "<p>a</p>\n<p>b</p>\n<p>{{ attributes.city }}</p>")
    with pytest.raises(RenderError) as caught:
        render(compiled, data(Recipient("a@b.test")))
    assert (caught.value.problem.part, caught.value.problem.line) == ("html", 3)
    assert "city" in caught.value.problem.message
    assert check(compiled, Recipient("a@b.test", "", {"city": "x"})) == []


def test_attribute_references_say_which_are_guarded() -> None:
    compiled = compile_template("{{ attributes.first }}",
                                "<p>{{ attributes.city | default('') }}{{ attributes['zip'] }}</p>")
    assert attribute_references(compiled) == {
        "first": ("subject", 1, False), "city": ("html", 1, True), "zip": ("html", 1, False)}


@pytest.mark.parametrize("source", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ name.__class__ }}",
    "{{ range.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ attributes.__class__ }}",
    "{{ (1).__class__.__base__ }}",
    "{{ name.format }}{{ '{0.__class__}'.format(name) }}",
    "{{ lipsum(5) }}",
    "{% include 'x' %}",
    "{% import 'x' as y %}",
    "{{ self.__dict__ }}",
    "{{ 'abc'.zfill(5) }}",
])
def test_sandbox_escapes_are_refused(source: str) -> None:
    compiled = compile_template("s", source)
    with pytest.raises(RenderError):
        render(compiled, data())


@pytest.mark.parametrize(("source", "words"), [
    ("{{ 'a' * 100000000 }}", "characters"),
    ("{{ [1] * 100000000 }}", "characters"),
    (f"{{% for i in range({MAX_RANGE + 1}) %}}{{% endfor %}}", "range"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "steps"),
    ("{% set ns = namespace(s='aaaaaaaaaa') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "characters"),
    ("{% set ns = namespace(s=[1,2,3,4]) %}{% for i in range(30) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}", "characters"),
    ("{{ 2 ** 100000 }}", "bits"),
    ("{{ '%99999999d' % 1 }}", "width"),
    ("{{ 'x' | center(100000000) }}", "width"),
    ("{{ 'x' | indent(100000000) }}", "width"),
    ("{{ '%099999999d' | format(1) }}", "width"),
    ("{{ ('a' * 1000) | replace('a', 'b' * 10000) }}", "replace"),
    ("{{ range(10) | batch(100000000) | list }}", "at most"),
    ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion"),
    ("{% set l = [1, 2, 3] %}{% for x in l recursive %}{{ loop(l) }}{% endfor %}", "recursion"),
    ("{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}", "longer than"),
])
def test_limits_stop_runaway_templates(source: str, words: str) -> None:
    compiled = compile_template("s", source)
    with pytest.raises(RenderError) as caught:
        render(compiled, data())
    assert words in caught.value.problem.message, caught.value.problem.message
    assert caught.value.problem.line == 1


def test_limits_leave_room_for_real_templates() -> None:
    source = ("{% for i in range(100) %}{% for j in range(100) %}{{ j }}{% endfor %}{% endfor %}"
              "{{ ('x' * 1000) | length }}{{ 'a,b' .split(',') | join('-') }}{{ 2 ** 64 }}")
    out = render(compile_template("s", source), data())
    assert "1000a-b18446744073709551616" in out.html
    assert MAX_STEPS > 100 * 100 + 100 and MAX_OUTPUT >= 1_000_000


def test_a_step_budget_is_per_render() -> None:
    compiled = compile_template("s", "{% for i in range(6000) %}{% endfor %}ok")
    for _ in range(40):  # 40 x 6,000 steps > MAX_STEPS: the budget restarts each render
        assert "ok" in render(compiled, data()).html


def test_preview_uses_a_placeholder_link() -> None:
    out = render_preview(compile_template("s", NEWSLETTER), ANN, postal_address="PO Box 1")
    assert "https://example.invalid/unsubscribe/preview" in out.html and "PO Box 1" in out.text


def test_the_sandbox_dict_shortcut_gives_what_jinja_gives() -> None:
    """MailSandbox.getattr subscripts a plain dict first for names that are no dict attribute:
    the same answer as Jinja's getattr-then-subscript, for hits, misses and dict methods."""
    from jinja2 import Undefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from mailprime.marketing.template_sandbox import make_environment

    env = make_environment()

    class Mapping(dict[str, object]):  # not a plain dict: Jinja's way
        name = "class attribute"

    for obj in ({"name": "N", "items": "I", "__class__": "C"}, {}, Mapping(name="key"), "text"):
        for attribute in ("name", "items", "keys", "__class__", "missing", "upper"):
            ours = env.getattr(obj, attribute)
            jinja = ImmutableSandboxedEnvironment.getattr(env, obj, attribute)
            if isinstance(jinja, Undefined):
                assert type(ours) is type(jinja) and str(ours._undefined_hint) == str(
                    jinja._undefined_hint)
            else:
                assert ours == jinja
