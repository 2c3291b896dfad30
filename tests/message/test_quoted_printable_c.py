"""The C quoted-printable encoder (message/_qp.c) for campaign text parts, against RFC 2045 6.7
and two independent decoders (binascii and the email package): every text comes back octet for
octet, no encoded line is longer than 76 characters or ends in white space, only printable
ASCII goes out, and "=" only starts an "=XX" or a soft break. The binascii path it replaced
(message_builder.quoted_printable_py) is held to the same rules."""

from __future__ import annotations

import binascii
import email
import email.policy
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailprime.marketing import message_builder

try:
    from mailprime.message._qp import encode as c_encode
except ImportError:  # pragma: no cover - only where it could not be built
    c_encode = None  # type: ignore[assignment]

PRINTABLE = set(range(33, 127)) | {ord(" "), ord("\t")}
HEX = b"0123456789ABCDEF"


def test_the_c_encoder_is_built_and_used() -> None:
    assert c_encode is not None, (
        "mailprime.message._qp is not built: `pip install -e .` compiles it (setup.py; needs "
        "gcc and the Python headers); without it text parts fall back to binascii")
    assert message_builder.quoted_printable is c_encode


ENCODERS: list[Callable[[bytes], bytes]] = [message_builder.quoted_printable_py]
if c_encode is not None:
    ENCODERS.append(c_encode)


def assert_valid(encoded: bytes) -> None:
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76, line
        assert not line.endswith((b" ", b"\t")), line
        assert set(line) <= PRINTABLE, line
        for i, octet in enumerate(line):
            if octet == ord("="):
                soft_break = i == len(line) - 1
                assert soft_break or (len(line) >= i + 3 and line[i + 1] in HEX
                                      and line[i + 2] in HEX), line


def decoded_by_email(encoded: bytes) -> bytes:
    raw = (b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded)
    payload = email.message_from_bytes(raw, policy=email.policy.default).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


@pytest.mark.skipif(c_encode is None, reason="the C encoder is not built (see above)")
@pytest.mark.parametrize(("data", "expected"), [
    (b"", b""),
    (b"plain\r\n", b"plain\r\n"),
    (b"a=b\r\n", b"a=3Db\r\n"),
    (b"K\xc3\xb6ln\r\n", b"K=C3=B6ln\r\n"),
    (b"trailing \r\nand\t\r\nend ", b"trailing=20\r\nand=09\r\nend=20"),
    (b"two  spaces inside\r\n", b"two  spaces inside\r\n"),
    (b"bare\rcr and\nlf\r\n", b"bare=0Dcr and=0Alf\r\n"),
    (b"x" * 76 + b"\r\n", b"x" * 76 + b"\r\n"),
    (b"x" * 77 + b"\r\n", b"x" * 75 + b"=\r\n" + b"xx\r\n"),
    (b"x" * 74 + b"\xff" + b"\r\n", b"x" * 74 + b"=\r\n=FF\r\n"),  # never inside an =XX
    (b"x" * 73 + b"\xff" + b"\r\n", b"x" * 73 + b"=FF\r\n"),  # ends the line: 76 fits
    (b"x" * 75 + b" y\r\n", b"x" * 75 + b"=\r\n y\r\n"),
])
def test_known_encodings(data: bytes, expected: bytes) -> None:
    assert c_encode is not None
    assert c_encode(data) == expected
    assert_valid(expected)


LINE_PIECES = st.sampled_from([b"a", b"word ", b" ", b"\t", b"=", b"\xc3\xb6", b"\xe2\x80\x99",
                               b"\x00", b"\x7f", b"\r", b"\n", b"x" * 30, b".", b"=3D", b"  "])


@pytest.mark.parametrize("encoder", ENCODERS)
@settings(max_examples=1500, deadline=None)
@given(lines=st.lists(st.lists(LINE_PIECES, max_size=40).map(b"".join), max_size=6),
       final=st.booleans())
def test_every_text_comes_back_and_every_line_is_valid(encoder: Callable[[bytes], bytes],
                                                       lines: list[bytes], final: bool) -> None:
    data = b"\r\n".join(lines) + (b"\r\n" if final and lines else b"")
    crlfs = data.count(b"\r\n")
    if encoder is message_builder.quoted_printable_py:
        # binascii keeps a bare CR as it is: the builder only gives it crlf()'s output.
        assume(data.count(b"\r") == crlfs == data.count(b"\n"))
    encoded = encoder(data)
    assert_valid(encoded)
    assert binascii.a2b_qp(encoded) == data
    assert decoded_by_email(encoded) == data


@pytest.mark.skipif(c_encode is None, reason="the C encoder is not built (see above)")
@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_any_octets_at_all(data: bytes) -> None:
    assert c_encode is not None
    encoded = c_encode(data)
    assert_valid(encoded)
    assert binascii.a2b_qp(encoded) == data


@pytest.mark.skipif(c_encode is None, reason="the C encoder is not built (see above)")
def test_bad_types_are_refused() -> None:
    assert c_encode is not None
    with pytest.raises(TypeError, match="bytes"):
        c_encode("text")  # type: ignore[arg-type]
