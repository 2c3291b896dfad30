"""BODYSTRUCTURE, BODY, BODY[section] and partial, byte-exact (BINARY is in
test_imap_fetch_binary.py, the reference writer in test_imap_values.py).

Expectations come from RFC 3501 7.4.2, Dovecot's own unit tests (src/lib-imap/
test-imap-bodystructure.c), imaptest's fetch tests (fetch-body-mime, fetch-body-message-rfc822*,
fetch-binary-mime) and answers recorded from Dovecot 2.3.19 for the other messages. Those
sources use LF line ends and count sizes as if they were CRLF; the messages here are CRLF, so
their sizes and line counts apply unchanged."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.message.imap_fetch import (
    binary_section,
    binary_size,
    bodystructure,
    header_fields,
    partial,
    section_bytes,
)
from mailprime.message.imap_values import render
from mailprime.message.mime_tree import PartKind, find_part, parse_message, walk


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def structure(message: bytes, extensible: bool = True, **options: bool) -> bytes:
    return render(bodystructure(message, parse_message(message), extensible, **options))


def section(message: bytes, spec: str) -> bytes:
    """BODY[spec] the way a client writes it: "2.1.MIME", "HEADER.FIELDS (A B)"..."""
    fields: tuple[str, ...] = ()
    if " (" in spec:
        spec, names = spec.split(" (")
        fields = tuple(names.rstrip(")").split())
    numbers: list[int] = []
    rest = spec.split(".") if spec else []
    while rest and rest[0].isdigit():
        numbers.append(int(rest.pop(0)))
    return section_bytes(message, parse_message(message), tuple(numbers), ".".join(rest) or None, fields)


# BODYSTRUCTURE ----------------------------------------------------------------------------------

def test_rfc3501_example_body() -> None:
    message = crlf("Subject: x\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\nContent-Transfer-Encoding:"
         " 7BIT\n\n")
    message += (b"x" * 30 + b"\r\n") * 92 + b"x" * (3028 - 32 * 92)
    assert structure(message, False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'


# Dovecot src/lib-imap/test-imap-bodystructure.c, parse_tests[] (each wrapped in the parentheses
# that FETCH adds around the root).
DOVECOT_PARSE_TESTS = [
    ("""From: user@domain.org
Date: Sat, 24 Mar 2017 23:00:00 +0200
Mime-Version: 1.0
Content-Type: text/plain; charset=us-ascii

body
""", '"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL',
     '"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1'),
    ("""From: user@domain.org
Date: Sat, 24 Mar 2017 23:00:00 +0200
Mime-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

body

""", '"text" "plain" ("charset" "utf-8") NIL NIL "8bit" 8 2 NIL NIL NIL NIL',
     '"text" "plain" ("charset" "utf-8") NIL NIL "8bit" 8 2'),
    ("""From: user@domain.org
Date: Sat, 24 Mar 2007 23:00:00 +0200
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="foo
 bar"

--foo bar
Content-Type: text/x-myown; charset=us-ascii

hello

--foo bar--

""",
     '("text" "x-myown" ("charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL) "mixed" ("boundary"'
     ' "foo bar")'
     ' NIL NIL NIL',
     '("text" "x-myown" ("charset" "us-ascii") NIL NIL "7bit" 7 1) "mixed"'),
    ("""From: user@domain.org
Date: Sat, 24 Mar 2017 23:00:00 +0200
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="foo bar"

--foo bar
Content-Type: text/plain; charset=us-ascii
Content-ID: <A.frop.example.com>
Content-Description: Container message

See attached...

--foo bar
Content-Type: message/rfc822
Content-ID: <B.frop.example.com>
Content-Description: Forwarded

From: user@domain.org
Date: Sat, 24 Mar 2017 23:00:00 +0200
Mime-Version: 1.0
Content-Type: text/plain; charset=us-ascii

body

--foo bar--
""",
     '("text" "plain" ("charset" "us-ascii") "<A.frop.example.com>" "Container message" "7bit" 17 1'
     ' NIL NIL NIL NIL)'
     '("message" "rfc822" NIL "<B.frop.example.com>" "Forwarded" "7bit" 133 ("Sat, 24 Mar 2017 23:00:00'
     ' +0200" NIL'
     ' ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org"))'
     ' NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL) 6'
     ' NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL',
     '("text" "plain" ("charset" "us-ascii") "<A.frop.example.com>" "Container message" "7bit" 17 1)'
     '("message" "rfc822" NIL "<B.frop.example.com>" "Forwarded" "7bit" 133 ("Sat, 24 Mar 2017 23:00:00'
     ' +0200" NIL'
     ' ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org"))'
     ' NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1) 6) "mixed"'),
    ("Content-Type: multipart/mixed; boundary=\"foo\"\n\n",
     '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary"'
     ' "foo") NIL NIL NIL',
     '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed"'),
]

# The message of Dovecot's test_imap_bodystructure_write, also parse_tests[5].
DOVECOT_BIG = crlf("""From: user@domain.org
Date: Sat, 24 Mar 2007 23:00:00 +0200
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="foo
 bar"

Root MIME prologue

--foo bar
Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"
Content-ID: <foo@example.com>
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Disposition: inline; foo=bar
Content-Description: hellodescription
Content-Language: en, fi, se
Content-Location: http://example.com/test.txt

hello

--foo bar
Content-Type: message/rfc822

From: sub@domain.org
To: sub-to1@domain.org, sub-to2@domain.org
Date: Sun, 12 Aug 2012 12:34:56 +0300
Subject: submsg
Content-Type: multipart/alternative; boundary="sub1"

Sub MIME prologue
--sub1
Content-Type: text/html
Content-Transfer-Encoding: 8bit

<p>Hello world</p>

--sub1
Content-Type: text/plain
Content-Transfer-Encoding: ?invalid

Hello another world

--sub1--
Sub MIME epilogue

--foo bar--
Root MIME epilogue
""")
DOVECOT_BIG_BODYSTRUCTURE = (
    b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>"'
    b' "hellodescription"'
    b' "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) ("en" "fi" "se")'
    b' "http://example.com/test.txt")("message" "rfc822" NIL NIL NIL "7bit" 412'
    b' ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub"'
    b' "domain.org"))'
    b' ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org"))'
    b' NIL NIL NIL NIL) (("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)'
    b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) "alternative"'
    b' ("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL)')
DOVECOT_BIG_BODY = (
    b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>"'
    b' "hellodescription"'
    b' "7bit" 7 1)("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg"'
    b' ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org"))'
    b' ((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL)'
    b' (("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1)("text" "plain" ("charset" "us-ascii")'
    b' NIL NIL "7bit" 21 1) "alternative") 21) "mixed")')


@pytest.mark.parametrize(("text", "extended", "basic"), DOVECOT_PARSE_TESTS)
def test_dovecot_parse_tests(text: str, extended: str, basic: str) -> None:
    message = crlf(text)
    assert structure(message) == b"(" + extended.encode() + b")"
    assert structure(message, False) == b"(" + basic.encode() + b")"


def test_dovecot_write_test_multipart_with_message_and_all_extension_fields() -> None:
    assert structure(DOVECOT_BIG) == DOVECOT_BIG_BODYSTRUCTURE
    assert structure(DOVECOT_BIG, False) == DOVECOT_BIG_BODY


def bs(text: str) -> bytes:
    return structure(crlf(text))


def test_dovecot_default_charset_goes_last_and_fields_are_kept_as_written() -> None:
    assert bs("Content-Type: text/plain; format=flowed\nContent-Transfer-Encoding: QUOTED-printable\n"
              "Content-Language: en-US (comment), de\nContent-Location:  http://x/\n  y\nContent-ID: \n"
              "Content-Description:   desc  \n\nhi") == (
        b'("text" "plain" ("format" "flowed" "charset" "us-ascii") "" "desc  " "QUOTED-printable" 2 0 NIL NIL'
        b' ("en-US" "de") "http://x/  y")')
    assert bs("Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\nContent-Transfer-Encoding: 7BIT\n"
              "Content-Disposition: INLINE\n\nhi\n") == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 1 NIL ("INLINE" NIL) NIL NIL)')
    assert bs("Content-Type: image/png\n\nhi") == b'("image" "png" NIL NIL NIL "7bit" 2 NIL NIL NIL NIL)'


def test_dovecot_rfc2231_parameters() -> None:
    assert bs("Content-Type: application/x-stuff;\n title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
              " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n title*2=\"isn't it!\"\nContent-Disposition: attachment;"
              " filename*0=\"long\"; filename*1=\"name.txt\"\n\nhi\n") == (
        b'("application" "x-stuff" ("title*"'
        b' "us-ascii\'en\'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn\'t'
        b' it!") NIL NIL "7bit" 4 NIL ("attachment" ("filename" "longname.txt")) NIL NIL)')


def test_dovecot_multipart_shapes() -> None:
    mixed = '"mixed" ("boundary" "x") NIL NIL NIL)'
    text0 = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
    # no Mime-Version, and no close delimiter
    assert bs("Content-Type: multipart/mixed; boundary=x\n\npre\n--x\n\none\n--x\nContent-Type:"
         " text/html\n\ntwo\n") == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 5 1 NIL NIL NIL NIL) ' + mixed.encode())
    assert bs("Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n\n--x--\n") == (
        b"(" + (text0 + text0 + " " + mixed).encode())
    assert bs("Content-Type: multipart/mixed\n\nhi\n") == (b"(" + text0.encode() + b' "mixed" NIL NIL'
         b' NIL NIL)')
    digest = "Content-Type: multipart/digest; boundary=x\n\n--x\n\nFrom: c@d\nSubject: s\n\nbody\n--x--\n"
    assert bs(digest) == (
        b'(("message" "rfc822" NIL NIL NIL "7bit" 29 (NIL "s" ((NIL NIL "c" "d")) ((NIL NIL "c" "d"))'
        b' ((NIL NIL "c" "d")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0'
        b' NIL NIL NIL NIL) 3 NIL NIL NIL NIL) "digest" ("boundary" "x") NIL NIL NIL)')


def test_dovecot_message_rfc822_in_base64_is_parsed_as_is() -> None:
    assert bs("Content-Type: message/rfc822\nContent-Transfer-Encoding:"
         " base64\n\nRnJvbTogYUBiDQoNCmhpDQo=\n") == (
        b'("message" "rfc822" NIL NIL NIL "base64" 26 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)')


MIXED_RELATED = crlf("""From: "Doe, John" <john@example.com>
Subject: =?utf-8?b?SGVsbG8gd29ybGQ=?= and more
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is a multi-part message in MIME format.
--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

caf=C3=A9 na=C3=AFve =E2=80=94 long line xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=
xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
trailing space  =20
end=3Dsign

--alt
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 8bit

<html><body>café <img src="cid:img1"></body></html>
--rel
Content-Type: image/png; name="pixel.png"
Content-Transfer-Encoding: base64
Content-ID: <img1>
Content-Disposition: inline; filename="pixel.png"

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==
--rel--
--alt--

--outer
Content-Type: application/octet-stream; name="data.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
 filename*0*=utf-8''caf%C3%A9;
 filename*1*=%20data.bin

""" + base64.encodebytes(bytes(range(256)) * 3).decode() + """
--outer
Content-Type: message/rfc822; name="fwd.eml"
Content-Disposition: attachment

From: Forwarder <fwd@example.com>
To: someone@example.com
Subject: forwarded
Date: Mon, 06 Jan 2025 09:00:00 +0000
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Gr=FC=DFe aus M=FCnchen
--outer--
epilogue
""")


def test_dovecot_mixed_alternative_related_attachment_and_forward() -> None:
    assert structure(MIXED_RELATED) == (
        b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 179 4 NIL NIL NIL NIL)'
        b'(("text" "html" ("charset" "utf-8") NIL NIL "8bit" 52 0 NIL NIL NIL NIL)'
        b'("image" "png" ("name" "pixel.png") "<img1>" NIL "base64" 96 NIL ("inline" ("filename"'
        b' "pixel.png"))'
        b' NIL NIL) "related" ("boundary" "rel" "type" "text/html") NIL NIL NIL) "alternative"'
        b' ("boundary" "alt")'
        b' NIL NIL NIL)("application" "octet-stream" ("name" "data.bin") NIL NIL "base64" 1052 NIL'
        b' ("attachment" ("filename*" "utf-8\'\'caf%C3%A9%20data.bin")) NIL NIL)("message" "rfc822"'
        b' ("name" "fwd.eml") NIL NIL "7bit" 235 ("Mon, 06 Jan 2025 09:00:00 +0000" "forwarded"'
        b' (("Forwarder" NIL "fwd" "example.com")) (("Forwarder" NIL "fwd" "example.com"))'
        b' (("Forwarder" NIL "fwd" "example.com")) ((NIL NIL "someone" "example.com")) NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 23 0 NIL NIL NIL NIL) 7 NIL'
        b' ("attachment" NIL) NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL)')


def test_message_global_needs_imap4rev2() -> None:
    message = crlf("Content-Type: message/global\n\nFrom: x@y\nSubject: inner\n\ninner body\n")
    # As Dovecot 2.3 (an IMAP4rev1 server) answers:
    assert structure(message) == b'("message" "global" NIL NIL NIL "7bit" 41 NIL NIL NIL NIL)'
    assert structure(message, message_global=True) == (
        b'("message" "global" NIL NIL NIL "7bit" 41 (NIL "inner" ((NIL NIL "x" "y")) ((NIL NIL "x" "y"))'
        b' ((NIL NIL "x" "y")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL'
        b' "7bit" 12 1'
        b' NIL NIL NIL NIL) 4 NIL NIL NIL NIL)')


def test_unusable_content_type_means_the_default() -> None:
    # Dovecot answers ("text" "" ...) and ("" "" NIL ...) here; RFC 2045 5.2 says to assume
    # text/plain; charset=us-ascii when the Content-Type cannot be read.
    default = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL NIL)'
    assert bs("Content-Type: text\n\nhi\n") == default
    assert bs("Content-Type: ;;;\n\nhi\n") == default


def test_unquoted_boundary_with_equals_sign() -> None:
    # Dovecot stops the value at "=" (boundary "----") and so finds one empty extra part.
    assert bs("Content-Type: multipart/alternative; boundary=----=_Part_1\n\n------=_Part_1\n"
              "Content-Type: text/plain\n\nx\n------=_Part_1--\n") == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "alternative"'
        b' ("boundary" "----=_Part_1") NIL NIL NIL)')


# BODY[section]: imaptest fetch-body-mime ----------------------------------------------------------

IMAPTEST_MIME = crlf("""From: user@domain.org
Date: Sat, 24 Mar 2007 23:00:00 +0200
Mime-Version: 1.0
Content-Type: multipart/mixed; boundary="foo
 bar"

Root MIME prologue

--foo bar
Content-Type: text/x-myown; charset=us-ascii

hello

--foo bar
Content-Type: message/rfc822

From: sub@domain.org
Date: Sun, 12 Aug 2012 12:34:56 +0300
Subject: submsg
Content-Type: multipart/alternative; boundary="sub1"

Sub MIME prologue
--sub1
Content-Type: text/html

<p>Hello world</p>

--sub1
Content-Type: text/plain

Hello another world

--sub1--
Sub MIME epilogue

--foo bar--
Root MIME epilogue
""")
SUB_HEADER = crlf("""From: sub@domain.org
Date: Sun, 12 Aug 2012 12:34:56 +0300
Subject: submsg
Content-Type: multipart/alternative; boundary="sub1"

""")
SUB_TEXT = crlf("""Sub MIME prologue
--sub1
Content-Type: text/html

<p>Hello world</p>

--sub1
Content-Type: text/plain

Hello another world

--sub1--
Sub MIME epilogue
""")


@pytest.mark.parametrize(("spec", "expected"), [
    ("", IMAPTEST_MIME),
    ("TEXT", IMAPTEST_MIME[IMAPTEST_MIME.index(b"Root MIME prologue"):]),
    ("1", b"hello\r\n"),
    ("1.MIME", b"Content-Type: text/x-myown; charset=us-ascii\r\n\r\n"),
    ("2", SUB_HEADER + SUB_TEXT),
    ("2.MIME", b"Content-Type: message/rfc822\r\n\r\n"),
    ("2.HEADER", SUB_HEADER),
    ("2.HEADER.FIELDS (from subject X-foo)", b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"),
    ("2.HEADER.FIELDS.NOT (from subject X-foo)",
     b'Date: Sun, 12 Aug 2012 12:34:56 +0300\r\nContent-Type: multipart/alternative;'
     b' boundary="sub1"\r\n\r\n'),
    ("2.TEXT", SUB_TEXT),
    ("2.1.MIME", b"Content-Type: text/html\r\n\r\n"),
    ("2.1", b"<p>Hello world</p>\r\n"),
    ("2.2.MIME", b"Content-Type: text/plain\r\n\r\n"),
    ("2.2", b"Hello another world\r\n"),
])
def test_imaptest_fetch_body_mime(spec: str, expected: bytes) -> None:
    assert section(IMAPTEST_MIME, spec) == expected


@pytest.mark.parametrize(("spec", "size"), [
    # imaptest fetch-binary-mime: BINARY.SIZE of the same message (nothing to decode).
    ("", 602), ("TEXT", 466), ("1", 7), ("1.MIME", 48), ("2", 298), ("2.MIME", 32), ("2.HEADER", 134),
    ("2.HEADER.FIELDS (from subject x-foo)", 41), ("2.HEADER.FIELDS.NOT (from subject x-foo)", 95),
    ("2.TEXT", 164), ("2.1.MIME", 27), ("2.1", 20), ("2.2.MIME", 28), ("2.2", 21),
])
def test_imaptest_fetch_binary_mime_sizes(spec: str, size: int) -> None:
    assert len(section(IMAPTEST_MIME, spec)) == size
    if spec.replace(".", "").isdigit():
        numbers = tuple(int(n) for n in spec.split("."))
        assert binary_size(IMAPTEST_MIME, parse_message(IMAPTEST_MIME), numbers) == size


# imaptest fetch-body-message-rfc822-x2: a message/rfc822 inside a message/rfc822.
NESTED = crlf("""From: user@domain.org
Date: Sat, 24 Mar 2007 23:00:00 +0200
Mime-Version: 1.0
Content-Type: message/rfc822

From: user2@domain.org
Date: Fri, 23 Mar 2007 11:22:33 +0200
Mime-Version: 1.0
Content-Type: message/rfc822

From: sub@domain.org
Date: Sun, 12 Aug 2012 12:34:56 +0300
Subject: submsg

Hello world
""")
INNERMOST = crlf("From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n\nHello"
     " world\n")
MIDDLE_HEADER = crlf("From: user2@domain.org\nDate: Fri, 23 Mar 2007 11:22:33 +0200\nMime-Version: 1.0\n"
                     "Content-Type: message/rfc822\n\n")


@pytest.mark.parametrize(("spec", "expected"), [
    ("TEXT", MIDDLE_HEADER + INNERMOST),
    ("1", MIDDLE_HEADER + INNERMOST),
    ("1.1", INNERMOST),
    ("1.HEADER", MIDDLE_HEADER),
    ("1.TEXT", INNERMOST),
    ("1.1.1", b"Hello world\r\n"),
    ("1.1.HEADER", INNERMOST[:INNERMOST.index(b"Hello")]),
    ("1.1.TEXT", b"Hello world\r\n"),
])
def test_imaptest_fetch_body_message_rfc822_x2(spec: str, expected: bytes) -> None:
    assert section(NESTED, spec) == expected


def test_dovecot_nested_message_structure() -> None:
    assert structure(NESTED) == (
        b'("message" "rfc822" NIL NIL NIL "7bit" 207 ("Fri, 23 Mar 2007 11:22:33 +0200" NIL'
        b' ((NIL NIL "user2" "domain.org")) ((NIL NIL "user2" "domain.org")) ((NIL NIL "user2" "domain.org"))'
        b' NIL NIL NIL NIL NIL) ("message" "rfc822" NIL NIL NIL "7bit" 93 ("Sun, 12 Aug 2012 12:34:56 +0300"'
        b' "submsg" ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub"'
        b' "domain.org"))'
        b' NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1 NIL NIL NIL NIL) 5'
        b' NIL NIL NIL NIL) 10 NIL NIL NIL NIL)')


FOLDED = crlf("""Received: from a by b;
\tTue, 07 Jan 2025 10:00:00 +0000
From: a@b
Subject: this is
 a folded subject
X-Foo: bar
 baz
x-foo: second
To: c@d

body
""")


def test_header_fields_keep_order_folding_and_repeats() -> None:
    assert section(FOLDED, "HEADER.FIELDS (X-FOO SUBJECT)") == (
        b"Subject: this is\r\n a folded subject\r\nX-Foo: bar\r\n baz\r\nx-foo: second\r\n\r\n")
    assert section(FOLDED, "HEADER.FIELDS.NOT (x-foo subject received)") == b"From: a@b\r\nTo: c@d\r\n\r\n"
    assert section(FOLDED, "HEADER.FIELDS (X-None)") == b"\r\n"


def test_header_fields_of_a_header_without_final_line_end() -> None:
    only = b"From: a@b\r\nSubject: no body"
    assert section(only, "HEADER.FIELDS (Subject)") == b"Subject: no body\r\n\r\n"
    assert section(only, "HEADER") == only
    # Dovecot sends {0} here; RFC 3501 6.4.5 says the blank line is always included.
    assert section(only, "HEADER.FIELDS.NOT (From Subject)") == b"\r\n"
    tree = parse_message(only)
    assert header_fields(only, tree, ("from",), exclude=False) == b"From: a@b\r\n\r\n"


def test_sections_that_do_not_exist_are_empty() -> None:
    assert section(IMAPTEST_MIME, "3") == b""
    assert section(IMAPTEST_MIME, "1.2") == b""
    assert section(IMAPTEST_MIME, "1.HEADER") == b""  # part 1 is not a message/rfc822
    assert section(IMAPTEST_MIME, "1.TEXT") == b""
    assert section(IMAPTEST_MIME, "MIME") == b""
    assert section(IMAPTEST_MIME, "2.1.1.1") == b""
    with pytest.raises(ValueError, match="unknown section text"):
        section(IMAPTEST_MIME, "BOGUS")


def test_single_part_message_sections() -> None:
    message = crlf("Subject: s\n\nbody\n")
    assert section(message, "1") == b"body\r\n"
    assert section(message, "1.MIME") == b"Subject: s\r\n\r\n"  # the header, as Dovecot answers
    assert section(message, "TEXT") == b"body\r\n"
    assert section(message, "HEADER") == b"Subject: s\r\n\r\n"
    assert section(message, "1.HEADER") == b""


def test_nested_multipart_ends_before_the_outer_delimiter_line_break() -> None:
    # RFC 2046 5.1.1: the CRLF before "--alt--" belongs to that delimiter. Dovecot includes it
    # in part 1.2 (it answers "...--rel--\r\n"); RFC 2046's grammar leaves it out.
    assert section(MIXED_RELATED, "1.2").endswith(b"\r\n--rel--")


# partial ----------------------------------------------------------------------------------------

def test_partial() -> None:
    assert partial(b"0123456789", 0, 4) == b"0123"
    assert partial(b"0123456789", 8, 10) == b"89"
    assert partial(b"0123456789", 3) == b"3456789"
    assert partial(b"0123456789", 10, 1) == b""
    assert partial(b"0123456789", 99) == b""
    assert partial(b"abc", 0, 0) == b""
    with pytest.raises(ValueError, match="unsigned"):
        partial(b"abc", -1)


# Fuzzing ----------------------------------------------------------------------------------------

def _all_paths(data: bytes) -> list[tuple[int, ...]]:
    tree = parse_message(data)
    paths: list[tuple[int, ...]] = [(), (1,), (2,), (1, 1), (9,)]
    stack: list[tuple[tuple[int, ...], object]] = [((), tree)]
    while stack and len(paths) < 60:
        path, node = stack.pop()
        assert not isinstance(node, tuple)
        children = getattr(node, "parts", ())
        for number, child in enumerate(children, 1):
            multipart = getattr(node, "kind", None) is PartKind.MULTIPART
            child_path = (*path, number) if multipart else (*path, 1)
            paths.append(child_path)
            stack.append((child_path, child))
    return paths


MIME_NOISE = st.lists(st.sampled_from([
    b"\r\n", b"--b", b"--b--", b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type:"
         b" message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*0*=x; a=\"", b"From: a <b@c>, (x) d:;\r\n", b"=", b"QUJD",
    b"=4",
    b"x", b" ", b"\r\n\r\n", b"\xff", b"Content-Type: message/global\r\n", b"Content-Language: ,,\r\n",
]), max_size=80).map(b"".join)


@given(st.one_of(st.binary(max_size=1500), MIME_NOISE))
def test_every_function_accepts_any_message(data: bytes) -> None:
    tree = parse_message(data)
    for extensible in (True, False):
        render(bodystructure(data, tree, extensible))
        render(bodystructure(data, tree, extensible, message_global=True))
    for path in _all_paths(data):
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            got = section_bytes(data, tree, path, text, ("From", "Content-Type"))
            if text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                assert got in data  # a section is a slice of the message, never made up
            else:
                assert got == b"" or got.endswith(b"\r\n")  # b"": no such part
        got_binary = binary_section(data, tree, path)
        assert got_binary is None or isinstance(got_binary, bytes)


@given(MIME_NOISE)
def test_sections_match_part_offsets(data: bytes) -> None:
    tree = parse_message(data)
    for part in walk(tree):
        assert 0 <= part.header_start <= part.body_start <= part.body_end <= len(data)
    for path in _all_paths(data):
        part = find_part(tree, path)
        if part is not None and path:
            assert section_bytes(data, tree, path) == data[part.body_start:part.body_end]
            assert section_bytes(data, tree, path, "MIME") == data[part.header_start:part.body_start]
