"""Relaxed canonicalization (RFC 6376 3.4.2/3.4.4): the RFC's own example byte for byte, dkimpy's
canonicalization as an independent oracle over generated input, and the streaming hashers
against the whole-body result for every way of cutting the input."""

from __future__ import annotations

import hashlib

from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from mailprime.message.dkim_canon import (
    MAX_CARRY,
    MessageHasher,
    RelaxedBodyHasher,
    body_hash,
    relaxed_body,
    relaxed_header,
    split_fields,
)

# RFC 6376 3.4.5, with the RFC's <SP>, <HTAB> and <CRLF> written out.
RFC_EXAMPLE = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"
EMPTY_SHA256 = hashlib.sha256(b"").digest()


def test_rfc_6376_example_headers() -> None:
    head = RFC_EXAMPLE.split(b"\r\n\r\n", 1)[0]
    fields = split_fields(head + b"\r\n")
    assert fields == [(b"A", b" X"), (b"B ", b" Y\t\r\n\tZ  ")]
    assert b"".join(relaxed_header(n, v) for n, v in fields) == b"a:X\r\nb:Y Z\r\n"


def test_rfc_6376_example_body() -> None:
    body = RFC_EXAMPLE.split(b"\r\n\r\n", 1)[1]
    assert relaxed_body(body) == b" C\r\nD E\r\n"
    assert body_hash(body) == hashlib.sha256(b" C\r\nD E\r\n").digest()


def test_empty_bodies_hash_as_nothing() -> None:
    """RFC 6376 3.4.4 (errata 1384): relaxed adds no CRLF to an empty body, unlike simple."""
    for body in (b"", b"\r\n", b"\r\n\r\n\r\n", b" \r\n\t\r\n", b"  \t "):
        assert relaxed_body(body) == b"", body
        assert body_hash(body) == EMPTY_SHA256, body


def test_a_last_line_without_crlf_gets_one() -> None:
    """3.4.4: a non-empty body not ending in CRLF gets one (our SMTP client sends it so)."""
    assert relaxed_body(b"abc") == b"abc\r\n"
    assert relaxed_body(b"abc  \t") == b"abc\r\n"
    assert body_hash(b"abc  ") == hashlib.sha256(b"abc\r\n").digest()


def test_lone_cr_and_lf_are_content() -> None:
    assert relaxed_body(b"a \r b\n c\r\n") == b"a \r b\n c\r\n"


def test_split_fields_skips_junk_and_keeps_folding() -> None:
    section = b" orphan continuation\r\nno colon here\r\nSubject: a\r\n  b\r\n\tc\r\nX:\r\n"
    assert split_fields(section) == [(b"Subject", b" a\r\n  b\r\n\tc"), (b"X", b"")]
    assert relaxed_header(b"X", b"") == b"x:\r\n"


# dkimpy as the oracle ------------------------------------------------------------------------

LINE_ALPHABET = st.sampled_from([b" ", b"\t", b"a", b"Z", b".", b"\xc3\xa9", b"\xff", b"\r", b"\n"])
line = st.lists(LINE_ALPHABET, max_size=12).map(b"".join)
body_st = st.lists(line, max_size=12).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


@given(body_st)
def test_body_matches_dkimpy(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@given(st.lists(st.sampled_from([b" ", b"\t", b"v", b"\r\n ", b"\r\n\t", b"\xe2\x82\xac"]),
                max_size=20).map(b"".join))
def test_header_matches_dkimpy(value: bytes) -> None:
    [(name, canon)] = Relaxed.canonicalize_headers([(b"Subject ", value)])
    assert relaxed_header(b"Subject ", value) == name + b":" + canon


@given(st.tuples(body_st, line).map(b"".join), st.lists(st.integers(min_value=0, max_value=200), max_size=8),
       st.sampled_from([1, 3, 8, MAX_CARRY]))
def test_streaming_hash_equals_whole(body: bytes, cuts: list[int], max_carry: int) -> None:
    """Any cut, also inside CRLFs and WSP runs, and long partial lines hashed early."""
    points = sorted({min(c, len(body)) for c in cuts})
    hasher = RelaxedBodyHasher(max_carry=max_carry)
    start = 0
    for point in [*points, len(body)]:
        hasher.update(body[start:point])
        start = point
    assert hasher.digest() == hashlib.sha256(relaxed_body(body)).digest()


def test_streaming_hash_octet_by_octet() -> None:
    body = b"x  \r\n\r\n\t\r\ny\r\n \r\n\r\n"
    hasher = RelaxedBodyHasher()
    for i in range(len(body)):
        hasher.update(body[i:i + 1])
    assert hasher.digest() == hashlib.sha256(b"x\r\n\r\n\r\ny\r\n").digest()


def test_a_line_without_end_is_hashed_in_bounded_memory() -> None:
    hasher = RelaxedBodyHasher()
    piece = b"word  \t " * 1000
    for _ in range(500):  # 4 MB on one line: carrying it whole would copy it 500 times
        hasher.update(piece)
        assert len(hasher._carry) <= MAX_CARRY
    hasher.update(b"\r\n")
    assert hasher.digest() == hashlib.sha256(relaxed_body(piece * 500 + b"\r\n")).digest()


# MessageHasher ---------------------------------------------------------------------------------

MESSAGE = b"From: a@example.com\r\nSubject:  x\r\n\r\nbody  line \r\n\r\n"


@given(st.lists(st.integers(min_value=0, max_value=len(MESSAGE)), max_size=6))
def test_message_hasher_splits_header_and_body(cuts: list[int]) -> None:
    hasher = MessageHasher()
    start = 0
    for point in [*sorted(cuts), len(MESSAGE)]:
        hasher.update(MESSAGE[start:point])
        start = max(start, point)
    assert hasher.header_section == b"From: a@example.com\r\nSubject:  x\r\n"
    assert hasher.body_hash() == hashlib.sha256(b"body line\r\n").digest()


def test_message_hasher_edge_cases() -> None:
    no_header = MessageHasher()
    no_header.update(b"\r\nonly body\r\n")
    assert no_header.header_section == b""
    assert no_header.body_hash() == hashlib.sha256(b"only body\r\n").digest()

    no_body = MessageHasher()
    no_body.update(b"Subject: x\r\n")
    assert no_body.header_section == b"Subject: x\r\n"
    assert no_body.body_hash() == EMPTY_SHA256

    too_long = MessageHasher(header_limit=100)
    too_long.update(b"X-Long: " + b"a" * 200 + b"\r\n\r\nbody\r\n")
    assert too_long.header_section is None

    growing = MessageHasher(header_limit=100)
    for _ in range(20):
        growing.update(b"X-Field: 0123456789\r\n")
    growing.update(b"\r\nbody\r\n")
    assert growing.header_section is None
