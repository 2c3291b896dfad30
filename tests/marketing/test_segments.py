"""The segment filter parser: trees for good filters, errors with the right column for bad ones,
and hypothesis fuzzing (never a crash: a tree or a SegmentError)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.audience import (
    And,
    Compare,
    CompareOp,
    Contains,
    Engaged,
    Engagement,
    Exists,
    Field,
    FieldRef,
    InList,
    InValues,
    Not,
    Or,
    SegmentError,
)
from mailprime.marketing.segments import MAX_DEPTH, MAX_LENGTH, parse_segment

PLAN = FieldRef(Field.ATTRIBUTE, ("plan",))
AGE = FieldRef(Field.ATTRIBUTE, ("age",))


def test_precedence_not_and_or_and_parentheses() -> None:
    tree = parse_segment('attributes.plan = "pro" OR attributes.age >= 30 and not in_list(\'x\')')
    assert tree == Or((Compare(PLAN, CompareOp.EQ, "pro"),
                       And((Compare(AGE, CompareOp.GE, 30), Not(InList("x"))))))
    tree = parse_segment('(attributes.plan = "pro" or attributes.age >= 30.5) and opened within 90 days')
    assert tree == And((Or((Compare(PLAN, CompareOp.EQ, "pro"), Compare(AGE, CompareOp.GE, 30.5))),
                        Engaged(Engagement.OPENED, 90)))


def test_every_predicate_form() -> None:
    assert parse_segment("attributes.a.b-c_1 exists") == Exists(
        FieldRef(Field.ATTRIBUTE, ("a", "b-c_1")))
    assert parse_segment("email contains '@x.'") == Contains(FieldRef(Field.EMAIL), "@x.")
    assert parse_segment('domain in ("a.test", "b.test")') == InValues(
        FieldRef(Field.DOMAIN), ("a.test", "b.test"))
    assert parse_segment("attributes.vip = TRUE") == Compare(
        FieldRef(Field.ATTRIBUTE, ("vip",)), CompareOp.EQ, True)
    assert parse_segment("clicked within 1 day") == Engaged(Engagement.CLICKED, 1)
    assert parse_segment("attributes.n != -3") == Compare(
        FieldRef(Field.ATTRIBUTE, ("n",)), CompareOp.NE, -3)
    assert parse_segment(r'name = "O\'Brien \"Jr\" \\"') == Compare(
        FieldRef(Field.NAME), CompareOp.EQ, 'O\'Brien "Jr" \\')


@pytest.mark.parametrize(("text", "column", "words"), [
    ("", 1, "empty filter"),
    ("plan = 'pro'", 1, "expected a condition"),
    ("attributes = 1", 12, "expected '.'"),
    ("attributes.plan == 'pro'", 18, "expected a value"),
    ("attributes.plan = 'pro", 19, "string not closed"),
    ("attributes.plan = 'pro' and", 28, "expected a condition"),
    ("(attributes.a exists", 21, "expected ')'"),
    ("attributes.a exists)", 20, "expected 'and', 'or' or the end"),
    ("email = 3", 9, "email is text"),
    ("attributes.vip > true", 18, "cannot compare true/false"),
    ("opened within 0 days", 15, "whole number of days"),
    ("opened in 5 days", 8, "expected 'within'"),
    ("in_list(news)", 9, "in_list needs a list name"),
    ("attributes.a = 'x' ; drop", 20, "unexpected character ';'"),
    ("attributes.a = 'bad \\q'", 21, "unknown escape"),
])
def test_errors_name_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(SegmentError) as info:
        parse_segment(text)
    assert info.value.position == column, info.value.message
    assert words in info.value.reason
    assert info.value.message.startswith(f"column {column}: ")
    assert info.value.http_status == 422


def test_limits() -> None:
    with pytest.raises(SegmentError, match="longer than"):
        parse_segment("email exists or " * (MAX_LENGTH // 10))
    deep = "(" * (MAX_DEPTH + 1) + "email exists" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(SegmentError, match="nested deeper"):
        parse_segment(deep)
    with pytest.raises(SegmentError, match="nested deeper"):
        parse_segment("not " * (MAX_DEPTH + 1) + "email exists")
    ok = "(" * (MAX_DEPTH - 1) + "email exists" + ")" * (MAX_DEPTH - 1)
    assert parse_segment(ok) == Exists(FieldRef(Field.EMAIL))
    with pytest.raises(SegmentError, match="more than 200 conditions"):
        parse_segment(" or ".join(["email exists"] * 201))
    with pytest.raises(SegmentError, match="path longer"):
        parse_segment("attributes" + ".a" * 9 + " exists")


ALPHABET = st.sampled_from([*"()\"'.,=!<>-_ \\0123456789abeilnorstxyz",
    "attributes.", "email", "and ", "or ", "not ", "in_list(", "exists", "contains", " in (",
    "opened within ", " days", "true", "\x00", "é"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_fuzz_never_crashes(text: str) -> None:
    try:
        parse_segment(text)
    except SegmentError as exc:
        assert 1 <= exc.position <= len(text) + 1
        assert exc.reason


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_any_text(text: str) -> None:
    try:
        parse_segment(text)
    except SegmentError as exc:
        assert 1 <= exc.position <= len(text) + 1
