"""The C helper for DKIM relaxed body canonicalization (message/_relaxed.c) gives exactly the
octets of the Python version (dkim_canon.relax_lines_py), which test_dkim_fast_paths.py holds to
a line-by-line reading of RFC 6376 3.4.4: on random input rich in SP, HTAB, CR, LF, VT, FF and
NUL, on blocks of CRLF lines and on arbitrary octets; and it is built here (a silent fallback to
Python would only show as a slower bench)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.message import dkim_canon

c_relax = dkim_canon._relax_lines_c

ALPHABET = st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x0b", b"\x0c", b"\x00",
                            b"a", b"Z", b"=", b"\xff", b"  ", b"\t \t"])


def test_the_c_helper_is_built_and_used() -> None:
    assert c_relax is not None, (
        "mailprime.message._relaxed is not built: `pip install -e .` compiles it (setup.py; "
        "needs gcc and the Python headers); without it DKIM signing falls back to Python")
    assert dkim_canon.relax_lines is c_relax


needs_c = pytest.mark.skipif(c_relax is None, reason="the C helper is not built (see above)")


@needs_c
@pytest.mark.parametrize("block", [
    b"", b"\r\n", b" \r\n", b"\t\r\n", b"  \r\n\r\n", b"a\r\n", b"a \r\n", b"a\t\t b  \r\n",
    b" a\r\n", b"a \rb\r\n", b"a \nb\r\n", b"a \r\r\n", b"a  ", b"a \r", b"a \r\n \r\n",
    b"\x0b \x0c\r\n", b"a\x00 \x00\r\n", b" " * 10_000 + b"\r\n", b"\t" * 7, b"x" * 70_000,
    b"<div>\r\n    <p>  text  </p>\r\n</div>\r\n" * 50,
])
def test_edge_cases_agree(block: bytes) -> None:
    assert c_relax is not None
    assert c_relax(block) == dkim_canon.relax_lines_py(block)


@needs_c
@settings(max_examples=2000, deadline=None)
@given(st.lists(ALPHABET, max_size=80).map(b"".join))
def test_arbitrary_octets_agree(block: bytes) -> None:
    assert c_relax is not None
    assert c_relax(block) == dkim_canon.relax_lines_py(block)


@needs_c
@settings(max_examples=1000, deadline=None)
@given(st.lists(st.lists(ALPHABET, max_size=20).map(lambda parts: b"".join(parts) + b"\r\n"),
                max_size=12).map(b"".join))
def test_lines_agree(block: bytes) -> None:
    assert c_relax is not None
    assert c_relax(block) == dkim_canon.relax_lines_py(block)


@needs_c
def test_unchanged_input_is_not_copied_and_bad_types_are_refused() -> None:
    assert c_relax is not None
    block = b"QUJD\r\nREVG\r\n"  # base64: nothing to change
    assert c_relax(block) is block
    with pytest.raises(TypeError, match="bytes"):
        c_relax(bytearray(b"a  b\r\n"))  # type: ignore[arg-type]
