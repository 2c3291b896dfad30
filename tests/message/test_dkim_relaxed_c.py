"""The C helper for DKIM relaxed body canonicalization (message/_relaxed.c) gives exactly the
octets of the Python version (dkim_canon.relax_lines_py), which test_dkim_fast_paths.py holds to
a line-by-line reading of RFC 6376 3.4.4: on random input rich in SP, HTAB, CR, LF, VT, FF and
NUL, on blocks of CRLF lines and on arbitrary octets; and it is built here (a silent fallback to
Python would only show as a slower bench)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.message import dkim, dkim_canon
from tests.support.dkim_verifiers import dkimpy_verify

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
@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"abcdefghijklm", b"0123456", b"x", b" ", b"\t", b"\r\n",
                                 b"  ", b"\r", b"<a href=\"https://e.test/p?q=1\">"]),
                max_size=200).map(b"".join))
def test_long_words_at_every_alignment_agree(block: bytes) -> None:
    """The C loop scans sixteen octets at a time and settles the runs it finds from the block's
    bits: words of 1 to 40 octets put WSP, runs and CRs at every offset of a block, and runs
    across the end of one."""
    assert c_relax is not None
    assert c_relax(block) == dkim_canon.relax_lines_py(block)


@needs_c
def test_unchanged_input_is_not_copied_and_bad_types_are_refused() -> None:
    assert c_relax is not None
    block = b"QUJD\r\nREVG\r\n"  # base64: nothing to change
    assert c_relax(block) is block
    with pytest.raises(TypeError, match="bytes"):
        c_relax(bytearray(b"a  b\r\n"))  # type: ignore[arg-type]


# ---- the signed header data (message/_relaxed.c `signed_header`) -----------------------------

FIELD_NAMES = st.sampled_from([b"From", b"from", b" FROM ", b"Subject", b"subject\t", b"To",
                               b"Cc", b"X-Other", b"Message-ID", b"List-Unsubscribe", b"DATE",
                               b"", b" ", b"Content-Type", b"Feedback-ID", b"reply-to"])
VALUE_PARTS = st.sampled_from([b" ", b"\t", b"a", b"<a@b.test>", b"\r", b"\n", b"\x0b", b"\x0c",
                               b"\r\n ", b"\r\n\t", b"  x  ", b":", b"\xc3\xa9", b"\r\r\n "])


@st.composite
def header_sections(draw: st.DrawFn) -> bytes:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:  # a continuation line where it may or may not follow a field
            lines.append(b"\t" + draw(st.lists(VALUE_PARTS, max_size=4).map(b"".join))
                         .replace(b"\r\n", b""))
        elif kind == 1:  # a line without a colon
            lines.append(draw(st.sampled_from([b"junk", b"", b" no colon"])))
        else:
            value = draw(st.lists(VALUE_PARTS, max_size=8).map(b"".join))
            lines.append(draw(FIELD_NAMES) + b":" + value)
    section = b"\r\n".join(lines)
    return section + b"\r\n" if draw(st.booleans()) else section


def _both(section: bytes) -> tuple[dkim.SignableHeader, dkim.SignableHeader]:
    return dkim.signable_header(section), dkim.signable_header_py(section)


@needs_c
@settings(max_examples=3000, deadline=None)
@given(header_sections())
def test_signed_header_agrees_with_the_python_path(section: bytes) -> None:
    fast, reference = _both(section)
    assert fast == reference


@needs_c
@pytest.mark.parametrize("section", [
    b"", b"\r\n", b"From: A <a@b.test>\r\n",
    b"From: A\r\n <a@b.test>\r\nFrom: second@x.test\r\nSubject:  two  words \r\n",
    b" orphan continuation\r\nSubject: x\r\n\tfolded\r\n  twice\r\n",
    b"Subject\r\n continuation of nothing\r\nTo: t@b.test\r\n",
    b"SUBJECT : a\r\nsubject: b\r\nSubject:c\r\n",  # three instances, bottom up
    b"Subject: bare\rcr and\nlf\r\n", b"Subject: \x0bvt\x0c ff \r\n",
    b"X-" + b"n" * 200 + b": long name\r\nFrom: f@b.test",  # no final CRLF
    b"From: <a@b.test>\r\n" * 300,  # more fields than the C side's first allocation
])
def test_signed_header_edge_cases(section: bytes) -> None:
    fast, reference = _both(section)
    assert fast == reference


def test_a_signature_by_the_fast_path_verifies() -> None:
    """The whole message signed through `sign_message` (C header and body paths) verifies with
    dkimpy, an independent implementation."""
    key = dkim.SigningKey("a.test", "s1", dkim.load_private_key(
        dkim.generate_private_key(dkim.DkimAlgorithm.ED25519_SHA256)))
    message = (b"From: \"A\" <news@a.test>\r\nTo: b@b.test\r\nSubject:  Hi \r\n\tthere\r\n"
               b"Date: Wed, 02 Jan 2030 03:04:05 +0000\r\nMessage-ID: <1@a.test>\r\n\r\n"
               b"Hello  \t world \r\n\r\n\r\n")
    signed = dkim.sign_message(message, [key], int(time.time())) + message
    verdicts = dkimpy_verify(signed, {"s1._domainkey.a.test": dkim.public_key_record(key.key)})
    assert [v.result for v in verdicts] == ["pass"]


@needs_c
@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=3000))
def test_any_octets_at_all_agree_and_never_crash(data: bytes) -> None:
    """Mail from anyone reaches these functions (the MX verifies DKIM with the same body
    canonicalization): arbitrary octets, not only plausible mail."""
    assert c_relax is not None
    assert c_relax(data) == dkim_canon.relax_lines_py(data)
    fast, reference = _both(data)
    assert fast == reference


# ---- the whole signing input (message/_relaxed.c `signing_input`, `sha256_of`) ------------------

BODY_PARTS = st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b"text", b"  ", b"\r\n\r\n",
                              b" \r\n", b"<p>" * 6, b"\x00", b"=E2=80=99", b"x" * 40])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Header section, perhaps the empty line, perhaps a body: with and without a final CRLF,
    empty lines at the end, a message that starts with CRLF or has no body at all."""
    section = draw(header_sections())
    body = draw(st.lists(BODY_PARTS, max_size=60).map(b"".join))
    return section + draw(st.sampled_from([b"\r\n", b"", b"\r\n\r\n"])) + body


@needs_c
@settings(max_examples=3000, deadline=None)
@given(messages())
def test_signing_input_agrees_with_the_python_path(message: bytes) -> None:
    assert dkim.signing_input(message) == dkim.signing_input_py(message)


@needs_c
@pytest.mark.parametrize("message", [
    b"", b"\r\n", b"\r\nbody only\r\n", b"Subject: no body", b"Subject: x\r\n\r\n",
    b"Subject: x\r\n\r\nno final CRLF  ", b"Subject: x\r\n\r\nend\r\n\r\n\r\n",
    b"Subject: x\r\n\r\n\r\n\r\n", b"Subject: x\r\n\r\n \t \r\n",
    b"Subject: x\r\n\r\n" + b"    <td>cell</td>  \r\n" * 800,  # past the stack buffer
    b"Subject: x\r\n\r\n" + b"    <td>cell</td>  \r\n" * 3000,  # hashed without the GIL
    b"Subject: x\r\n\r\n" + b"\t" * 70_000,  # one run past every buffer, no final CRLF
])
def test_signing_input_edge_cases(message: bytes) -> None:
    assert dkim.signing_input(message) == dkim.signing_input_py(message)


@needs_c
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_sha256_of_parts_is_the_digest_of_their_join(parts: list[bytes]) -> None:
    from mailprime.message._relaxed import sha256_of
    assert sha256_of(*parts) == hashlib.sha256(b"".join(parts)).digest()
    with pytest.raises(TypeError, match="bytes"):
        sha256_of(b"a", "b")  # type: ignore[arg-type]


@needs_c
def test_sha256_is_openssl_s_where_its_headers_are() -> None:
    """setup.py builds against libcrypto when OpenSSL's headers are there (Debian's libssl-dev,
    present on our machines); the hashlib fallback is tested below."""
    from mailprime.message import _relaxed
    if not any(Path(base, "openssl", "sha.h").exists() for base in ("/usr/include",
                                                                     "/usr/local/include")):
        pytest.skip("OpenSSL's headers (libssl-dev) are absent: the hashlib variant is built")
    assert _relaxed.OPENSSL == 1


@pytest.fixture(scope="module")
def without_openssl(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The helper compiled without OpenSSL (hashing through hashlib), as on a machine without
    libssl-dev: built here with gcc and Python's headers, loaded from its own file."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is absent: the hashlib variant cannot be built here")
    source = Path(dkim_canon.__file__).with_name("_relaxed.c")
    target = tmp_path_factory.mktemp("plain") / ("_relaxed" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    str(source), "-o", str(target)], check=True, capture_output=True, timeout=120)
    spec = importlib.util.spec_from_file_location("_relaxed", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages(), st.lists(st.binary(max_size=100), max_size=5))
def test_the_hashlib_variant_gives_the_same_octets(without_openssl: ModuleType, message: bytes,
                                                   parts: list[bytes]) -> None:
    assert without_openssl.OPENSSL == 0
    counts, data, from_value, bh = without_openssl.signing_input(message, dkim._SIGNED_KEYS)
    header, expected_bh = dkim.signing_input_py(message)
    assert (dkim._names_for(counts), data, from_value, bh) == (*header, expected_bh)
    assert without_openssl.sha256_of(*parts) == hashlib.sha256(b"".join(parts)).digest()
    template = (b"DKIM-Signature: t=", b"; bh=", b"; b=", b"dkim-signature:t=", b";bh=", b";b=")
    assert (without_openssl.fill(template, data, b"1750000000", bh)
            == dkim._fill_py(template, data, b"1750000000", bh))


@needs_c
@given(st.binary(max_size=700))
def test_b_value_folds_as_the_python_path(signature: bytes) -> None:
    """Base64 and folding of any length (Ed25519's 64 octets, RSA's 128 to 512, and the empty
    and odd lengths around the fold points)."""
    assert dkim._b_value_c is not None
    assert dkim._b_value_c(signature) == dkim._b_value_py(signature)


@needs_c
@given(st.tuples(*[st.binary(max_size=120)] * 6), st.binary(max_size=600),
       st.binary(max_size=12), st.binary(max_size=44))
def test_fill_gives_the_python_path_s_field_and_digest(
        template: tuple[bytes, bytes, bytes, bytes, bytes, bytes], data: bytes, t: bytes,
        bh64: bytes) -> None:
    assert dkim._fill_c is not None
    assert dkim._fill_c(template, data, t, bh64) == dkim._fill_py(template, data, t, bh64)
    with pytest.raises(TypeError):
        dkim._fill_c(template[:5], data, t, bh64)  # type: ignore[arg-type]
