"""The C scan behind a blob row's line facts (storage/sql/_lines.c) against the Python one
(`streams.scan_py`) it replaced: the same answer for any octets at all, any limit on the dot
lines kept, and the same columns from `line_columns` whichever runs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.storage.sql import streams

try:
    from mailprime.storage.sql._lines import scan as c_scan
except ImportError:  # pragma: no cover - only where it could not be built
    c_scan = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(c_scan is None, reason="the C scan is not built (see above)")


def test_the_c_scan_is_built_and_used() -> None:
    assert c_scan is not None, (
        "mailprime.storage.sql._lines is not built: `pip install -e .` compiles it (setup.py; "
        "needs gcc and the Python headers); without it every accept scans in Python")
    assert streams._scan is c_scan


@needs_c
@pytest.mark.parametrize(("data", "limit", "expected"), [
    (b"", 64, (False, b"")),
    (b"\n", 64, (True, None)),  # an LF first has no CR before it
    (b"\r\n", 64, (False, b"")),
    (b".", 64, (False, b"\x00\x00\x00\x00")),
    (b".a\r\n.b\r\n", 64, (False, b"\x00\x00\x00\x00\x04\x00\x00\x00")),
    (b".a\r\n.b\r\n", 1, (False, None)),  # more dot lines than kept
    (b".a\r\n.b\r\n", 0, (False, None)),
    (b"a\r\n", 0, (False, b"")),
    (b".a\r\n.b\r\nc\n", 1, (True, None)),  # a bare LF after the limit still counts
    (b"a\r\r\n.", 64, (False, b"\x04\x00\x00\x00")),
    (b"a\n\r\n", 64, (True, None)),
    (b"x" * 300 + b"\r\n." + b"y" * 70000, 64, (False, b"\x2e\x01\x00\x00")),
])
def test_known_scans(data: bytes, limit: int, expected: tuple[bool, bytes | None]) -> None:
    assert c_scan is not None
    assert c_scan(data, limit) == expected
    assert streams.scan_py(data, limit) == expected


PIECES = st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b" ", b"\r\n.\r\n", b"\x00",
                          b"\xff", b"\n.", b"\r\n." * 5])


@needs_c
@settings(max_examples=1500, deadline=None)
@given(data=st.one_of(st.binary(max_size=400), st.lists(PIECES, max_size=150).map(b"".join)),
       limit=st.integers(min_value=0, max_value=70))
def test_c_and_python_agree(data: bytes, limit: int) -> None:
    assert c_scan is not None
    assert c_scan(data, limit) == streams.scan_py(data, limit)


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=150).map(b"".join))
def test_line_columns_are_the_same_either_way(data: bytes) -> None:
    with_c = streams.line_columns(data)
    try:
        streams._scan = streams.scan_py
        assert streams.line_columns(data) == with_c
    finally:
        streams._scan = c_scan


@needs_c
def test_bad_arguments_are_refused() -> None:
    assert c_scan is not None
    with pytest.raises(TypeError):
        c_scan("text", 64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        c_scan(b"", -1)
    assert c_scan(bytearray(b".\r\n"), 64) == (False, b"\x00\x00\x00\x00")
