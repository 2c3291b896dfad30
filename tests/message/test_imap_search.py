"""SEARCH content matchers: header keys with RFC 2047 and 8-bit values, BODY and TEXT over
decoded text parts, and the sent date; fuzzed so that no message makes them raise."""

from __future__ import annotations

import base64
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.message.imap_search import (
    SEARCH_HEADER_KEYS,
    body_contains,
    body_texts,
    decode_charset,
    decode_header_value,
    header_matches,
    sent_date,
    text_contains,
)
from mailprime.message.mime_tree import parse_message


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


HEADER = crlf("""From: =?utf-8?q?J=C3=B6rg?= =?utf-8?q?_M=C3=BCller?= <joerg@example.de>
To: "Doe, John" <john@example.com>,
 mary@example.net
Cc: Zoë <zoe@example.org>
Subject: =?iso-8859-1?q?Gr=FC=DFe?= aus der =?utf-8?b?U3RyYcOfZQ==?=
X-Empty:
Date: Tue, 7 Jan 2025 23:30:00 -0800

""")


@pytest.mark.parametrize(("key", "needle"), [
    ("FROM", "jörg müller"), ("FROM", "JOERG@EXAMPLE"), ("TO", "doe, john"), ("TO", "mary@example.net"),
    ("CC", "ZOË"), ("SUBJECT", "grüße aus"), ("SUBJECT", "STRASSE"),  # casefold: ß matches SS
    ("SUBJECT", ""), ("FROM", ""),
])
def test_header_keys_match(key: str, needle: str) -> None:
    assert header_matches(HEADER, SEARCH_HEADER_KEYS[key], needle)


@pytest.mark.parametrize(("field", "needle"), [
    ("From", "nobody"), ("Bcc", ""), ("Subject", "=?iso"), ("To", "example.com, mary"),
    ("Subject", "gruesse"),
])
def test_header_keys_do_not_match(field: str, needle: str) -> None:
    assert not header_matches(HEADER, field, needle)


def test_header_match_is_on_unfolded_values() -> None:
    assert header_matches(HEADER, "to", "<john@example.com>, mary@")
    assert header_matches(HEADER, "X-EMPTY", "")
    assert not header_matches(HEADER, "X-EMPTY", "x")
    assert header_matches(HEADER, "DATE", "23:30")


def test_repeated_fields_and_raw_utf8() -> None:
    header = crlf("Subject: first\nSubject: Grüße direkt\n\n")
    assert header_matches(header, "subject", "GRÜSSE")
    assert header_matches(header, "subject", "first")


def test_decode_header_value() -> None:
    assert decode_header_value(b"=?utf-8?q?J=C3=B6rg?= =?utf-8?q?_M=C3=BCller?=") == "Jörg Müller"
    assert decode_header_value(b"a =?ISO-8859-1?Q?=E9?= b") == "a é b"
    # A character split across two encoded-words (RFC 2047 6.2: adjacent words join).
    assert decode_header_value(b"=?utf-8?q?=C3?=\r\n =?utf-8?q?=B6?=") == "ö"
    assert decode_header_value(b"=?utf-8*en?b?w7w=?=") == "ü"  # RFC 2231 5 language suffix
    assert decode_header_value(b"=?bogus-charset?q?caf=C3=A9?=") == "café"
    assert decode_header_value(b"=?utf-8?x?not an encoded word?=") == "=?utf-8?x?not an encoded word?="
    assert decode_header_value(b"caf\xe9") == "café"  # not UTF-8: Latin-1


def test_decode_charset_fallbacks() -> None:
    assert decode_charset("café".encode(), "us-ascii") == "café"  # mislabelled UTF-8
    assert decode_charset(b"caf\xe9", "windows-1252") == "café"
    assert decode_charset(b"abc", "rot13") == "abc"  # not a text encoding: ignored
    assert decode_charset(b"\x80", "utf-8") == "\ufffd"


MESSAGE = crlf("""From: a@b
Subject: report
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 cr=C3=A8me, soft=
 break
--outer
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: base64

""" + base64.encodebytes("<p>Déjà vu</p>".encode("latin-1")).decode() + """
--outer
Content-Type: image/png
Content-Transfer-Encoding: base64

""" + base64.encodebytes(b"hidden needle in an image").decode() + """
--outer
Content-Type: message/rfc822

Subject: attached subject
From: someone@else

attached body text
--outer--
""")


@pytest.mark.parametrize("needle", ["café crème", "CRÈME, SOFT BREAK", "déjà VU", "attached body", ""])
def test_body_contains_decoded_text(needle: str) -> None:
    assert body_contains(MESSAGE, parse_message(MESSAGE), needle)


@pytest.mark.parametrize("needle", ["hidden needle", "Caf=C3", "attached subject", "report"])
def test_body_skips_images_encodings_and_headers(needle: str) -> None:
    assert not body_contains(MESSAGE, parse_message(MESSAGE), needle)


def test_text_contains_headers_attached_headers_and_body() -> None:
    tree = parse_message(MESSAGE)
    for needle in ("subject: report", "attached subject", "déjà vu", "someone@else", ""):
        assert text_contains(MESSAGE, tree, needle)
    assert not text_contains(MESSAGE, tree, "hidden needle")


def test_single_part_message_without_content_type() -> None:
    message = crlf("Subject: s\n\nPlain ASCII body\n")
    tree = parse_message(message)
    assert body_texts(message, tree) == ["Plain ASCII body\r\n"]
    assert body_contains(message, tree, "ascii BODY")


def test_unknown_transfer_encoding_searches_the_raw_text() -> None:
    message = crlf("Content-Transfer-Encoding: x-weird\n\nraw words\n")
    assert body_contains(message, parse_message(message), "raw words")


@pytest.mark.parametrize(("value", "expected"), [
    ("Tue, 7 Jan 2025 23:30:00 -0800", date(2025, 1, 7)),  # the writer's date, not UTC's
    ("7 Jan 2025 00:00 +1400", date(2025, 1, 7)),
    ("Wed, 17 Jul 96 02:23:25 -0700 (PDT)", date(1996, 7, 17)),
    ("Mon, 1 Jan 01 10:00:00 GMT", date(2001, 1, 1)),
    ("not a date", None),
    ("Mon, 31 Feb 2025 10:00:00 +0000", None),
    ("", None),
])
def test_sent_date(value: str, expected: date | None) -> None:
    assert sent_date(crlf(f"Date: {value}\n\n")) == expected


def test_sent_date_missing_and_first_wins() -> None:
    assert sent_date(b"Subject: x\r\n\r\n") is None
    two_dates = crlf("Date: 1 Feb 2020 00:00 +0000\nDate: 2 Feb 2020 00:00 +0000\n\n")
    assert sent_date(two_dates) == date(2020, 2, 1)


NOISE = st.lists(st.sampled_from([
    b"=?utf-8?q?", b"=?", b"?=", b"?b?", b"=C3", b"_", b"Subject: ", b"Date: ", b"From: ", b"\r\n", b"\r\n ",
    b"\xff", b"Content-Type: text/plain; charset=", b"utf-7", b"rot13", b"utf-16", b"x",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Type: multipart/mixed; boundary=b", b"--b", b"\r\n\r\n",
    b"1 Jan 99999", b"Feb", b"+9999", b"=", b"0",
]), max_size=60).map(b"".join)


@given(st.one_of(st.binary(max_size=1000), NOISE), st.text(max_size=5))
def test_matchers_never_raise(data: bytes, needle: str) -> None:
    tree = parse_message(data)
    header = tree.header(data)
    header_matches(header, "Subject", needle)
    body_contains(data, tree, needle)
    text_contains(data, tree, needle)
    result = sent_date(header)
    assert result is None or isinstance(result, date)
    decode_header_value(data)
