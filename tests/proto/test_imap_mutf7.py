"""Modified UTF-7 mailbox names (RFC 3501 5.1.3): known vectors, strictness, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprime.proto.imap import mutf7


@pytest.mark.parametrize(("wire", "name"), [
    ("&ZeVnLIqe-", "日本語"),
    ("&AKM-", "£"),
    ("&-", "&"),
    ("INBOX", "INBOX"),
    ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),  # RFC 3501 5.1.3's example
    ("Entw&APw-rfe", "Entwürfe"),
    ("&2D3eAA-", "😀"),  # outside the BMP: a UTF-16 surrogate pair
    ("a&-b&-", "a&b&"),
    ("&AAk-", "\t"),
])
def test_known_vectors(wire: str, name: str) -> None:
    assert mutf7.decode(wire) == name
    assert mutf7.encode(name) == wire


@pytest.mark.parametrize("wire", [
    "&ZeVnLIqe",  # unterminated
    "&Jjo!-",  # not base64
    "&AGE-",  # "a" must represent itself
    "&AKN-",  # non-zero padding bits
    "&A-",  # truncated
    "&AKMA-",  # odd number of UTF-16 octets
    "&2D0-",  # a lone high surrogate
    "caf\u00e9",  # 8-bit must be encoded
    "a\tb",  # so must controls
])
def test_invalid_names(wire: str) -> None:
    with pytest.raises(mutf7.MUtf7Error):
        mutf7.decode(wire)


@given(st.text())
def test_round_trip(name: str) -> None:
    wire = mutf7.encode(name)
    assert all(0x20 <= ord(ch) <= 0x7E for ch in wire)
    assert mutf7.decode(wire) == name


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_ascii_is_itself_except_ampersand(name: str) -> None:
    assert mutf7.encode(name) == name.replace("&", "&-")


@given(st.text(alphabet="&-ABab+,/0 ", max_size=20))
def test_decode_never_fails_otherwise(wire: str) -> None:
    """Any input either decodes to a name that encodes back the same way, or raises MUtf7Error."""
    try:
        name = mutf7.decode(wire)
    except mutf7.MUtf7Error:
        return
    assert mutf7.decode(mutf7.encode(name)) == name
