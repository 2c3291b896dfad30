"""The fast paths of DKIM signing against plain reference implementations, on generated input.

Signing speed (docs/benchmarks.md) comes from whole-buffer C passes and shortcuts: a regex over
the whole body instead of per-line work, a body hashed without the streaming bookkeeping, header
values relaxed by split/join after one look at all of them, the h= list and header data built in
one pass, the key's own tags folded once. Each is held here to a reference written the obvious
way from RFC 6376's words (per line, per field), over awkward input: random WSP, bare CR and LF,
VT/FF and other control octets, long lines and long runs, empty bodies, trailing empty lines.
The streaming hashers (used at accept) must give the same octets as the in-memory path."""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.message.dkim import (
    FOLD_WIDTH,
    SignableHeader,
    SigningKey,
    field_digest,
    finish_signatures,
    from_domain,
    sign_field,
    signature_fields,
    signed_field,
    signed_field_names,
    signed_header_data,
    unsigned_field,
    unsigned_fields,
)
from mailprime.message.dkim_canon import (
    CRLF,
    MessageHasher,
    RelaxedBodyHasher,
    body_hash,
    relax_lines,
    relaxed_body,
    relaxed_header,
    relaxed_value,
    split_fields,
)

# References, from RFC 6376 3.4.2 and 3.4.4 -----------------------------------------------------

_WSP_RUN = re.compile(rb"[ \t]+")


def ref_relax_lines(block: bytes) -> bytes:
    """Line by line: WSP runs to one SP; WSP before the CRLF of a complete line removed."""
    lines = block.split(CRLF)
    out = [_WSP_RUN.sub(b" ", line) for line in lines]
    out[:-1] = [line.rstrip(b" ") for line in out[:-1]]  # the last piece has no CRLF yet
    return CRLF.join(out)


def ref_relaxed_body(body: bytes) -> bytes:
    if body and not body.endswith(CRLF):
        body += CRLF
    canon = ref_relax_lines(body)
    while canon.endswith(CRLF + CRLF):
        canon = canon[:-2]
    return b"" if canon == CRLF else canon


def ref_relaxed_header(name: bytes, value: bytes) -> bytes:
    unfolded = value.replace(CRLF, b"")
    return name.strip(b" \t").lower() + b":" + _WSP_RUN.sub(b" ", unfolded).strip(b" ") + CRLF


def ref_fold(tags: list[str]) -> list[str]:
    """The DKIM-Signature layout, all tags at once: greedy lines of at most FOLD_WIDTH, a long
    h= list broken after colons onto lines of its own."""
    lines = ["DKIM-Signature:"]
    for tag in tags:
        if len(lines[-1]) + 1 + len(tag) <= FOLD_WIDTH:
            lines[-1] += " " + tag
        elif len(tag) + 1 <= FOLD_WIDTH or not tag.startswith("h="):
            lines.append("\t" + tag)
        else:
            line = "\t"
            names = tag.split(":")
            for i, name in enumerate(names):
                piece = name if i == len(names) - 1 else name + ":"
                if len(line) + len(piece) > FOLD_WIDTH and line != "\t":
                    lines.append(line)
                    line = "\t"
                line += piece
            lines.append(line)
    return lines


def ref_split_fields(section: bytes) -> list[tuple[bytes, bytes]]:
    """The field splitter as it was before the fast paths, line by line."""
    fields: list[tuple[bytes, bytes]] = []
    name = b""
    parts: list[bytes] = []
    for line in section.split(CRLF):
        if line[:1] in (b" ", b"\t"):
            if parts:
                parts.append(line)
            continue
        if parts:
            fields.append((name, CRLF.join(parts)))
            parts = []
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon]
        parts = [line[colon + 1:]]
    if parts:
        fields.append((name, CRLF.join(parts)))
    return fields


# Generated input -------------------------------------------------------------------------------

OCTETS = st.sampled_from([
    b" ", b"\t", b"  ", b" \t ", b"a", b"Z", b".", b":", b"\xc3\xa9", b"\xff", b"\x00",
    b"\r", b"\n", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"-->",
])
RUN = st.integers(min_value=2, max_value=300).map(lambda n: b" " * n)
LONG = st.integers(min_value=100, max_value=3000).map(lambda n: b"x" * n)
PIECE = st.one_of(OCTETS, OCTETS, OCTETS, RUN, LONG)
line_st = st.lists(PIECE, max_size=15).map(b"".join)
body_st = st.one_of(
    st.lists(line_st, max_size=12).map(lambda lines: b"".join(x + CRLF for x in lines)),
    st.tuples(st.lists(line_st, max_size=8).map(CRLF.join),
              st.sampled_from([b"", b"\r\n", b"\r\n\r\n\r\n", b" \r\n\t\r\n", b"  ", b"\r"]))
    .map(b"".join),
    st.binary(max_size=400),
)
CANONICAL = st.lists(st.sampled_from([b"word", b" ", b".", b"\xc3\xa9"]), max_size=20).map(
    lambda parts: re.sub(b" +", b" ", b"".join(parts)).strip(b" "))


@given(body_st)
def test_relax_lines_equals_line_by_line(block: bytes) -> None:
    assert relax_lines(block) == ref_relax_lines(block)


@given(body_st)
def test_whole_body_equals_reference(body: bytes) -> None:
    canon = ref_relaxed_body(body)
    assert relaxed_body(body) == canon
    assert body_hash(body) == hashlib.sha256(canon).digest()


@given(st.lists(CANONICAL, max_size=10), st.integers(min_value=0, max_value=3))
def test_an_already_canonical_body_hashes_as_is(lines: list[bytes], blank: int) -> None:
    body = b"".join(line + CRLF for line in lines) + CRLF * blank
    content = body.rstrip(b"\r\n") + CRLF if any(lines) else b""
    assert relax_lines(body) == body  # returned as is: nothing to change
    assert body_hash(body) == hashlib.sha256(content).digest()


@settings(max_examples=150)
@given(body_st, st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
       st.sampled_from([1, 5, 64, 16 * 1024]))
def test_streaming_equals_in_memory(body: bytes, cuts: list[int], max_carry: int) -> None:
    """RelaxedBodyHasher and MessageHasher (used at accept, fed in pieces) give the in-memory
    body hash (used by DkimSigner.sign) for any cut, also inside CRLFs and runs."""
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    hasher = RelaxedBodyHasher(max_carry=max_carry)
    for piece in pieces:
        hasher.update(piece)
    assert hasher.digest() == body_hash(body) == body_hash(iter(pieces))
    message = MessageHasher()
    for piece in [b"From: a@b.test\r\n\r\n"[:7], b"From: a@b.test\r\n\r\n"[7:], *pieces]:
        message.update(piece)
    assert message.header_section == b"From: a@b.test\r\n"
    assert message.body_hash() == body_hash(body)


def test_awkward_bodies() -> None:
    for body in (b"", b"\r\n", b" ", b"\t\r\n", b"a" * 100_000, b" " * 5000 + b"\r\n",
                 b"a \r\r\n", b"a\r \r\n", b"a \n b\r\n", b"\x0b \x0c  \r\n", b"x\t\t\r\n\r\n\r\n",
                 b"\x1c \x1d  \x1e\t\x1f\r\n", b" \r\n \r\nz"):
        assert relaxed_body(body) == ref_relaxed_body(body), body
        assert body_hash(body) == hashlib.sha256(ref_relaxed_body(body)).digest(), body


# Header fields ---------------------------------------------------------------------------------

VALUE = st.lists(st.sampled_from([b" ", b"\t", b"  ", b"v", b"\xe2\x82\xac", b"\r\n ", b"\r\n\t",
                                  b"\r", b"\n", b"\x0b", b"\x0c", b":", b","]),
                 max_size=20).map(b"".join)


@given(VALUE)
def test_relaxed_header_equals_reference(value: bytes) -> None:
    assert relaxed_header(b" Subject ", value) == ref_relaxed_header(b" Subject ", value)
    assert relaxed_value(value) + CRLF == ref_relaxed_header(b"", value)[1:]


NAMES = st.sampled_from([b"From", b"from", b"FROM ", b"To", b"Subject", b"Date", b"Cc", b"Received",
                         b"X-Other", b"List-Unsubscribe", b"Content-Type", b"Message-ID", b"Sender"])
FIELD_VALUE = st.lists(st.sampled_from([b" ", b"\t", b"  ", b"v", b"<a@b.test>", b"\r\n ",
                                        b"\r\n\t", b"\xe2\x82\xac", b"\r", b"\n", b"\x0b"]),
                       max_size=12).map(b"".join)
FIELDS = st.lists(st.tuples(NAMES, FIELD_VALUE), max_size=14)
SECTION = st.lists(st.sampled_from([b"From: a", b" cont", b"\tcont", b"no colon", b": empty name",
                                    b"X:", b"Subject:  b\r", b"To:\nc", b""]),
                   max_size=10).map(lambda lines: b"".join(x + CRLF for x in lines))


@given(SECTION)
def test_split_fields_equals_reference(section: bytes) -> None:
    assert split_fields(section) == ref_split_fields(section)


ED_KEY = SigningKey("example.com", "ed", ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))


@settings(max_examples=150)
@given(FIELDS)
def test_signature_fields_equal_the_step_by_step_signature(fields: list[tuple[bytes, bytes]]) -> None:
    """The one-pass h= list and header data give the very signature that the public step-by-step
    functions (signed_field_names, signed_header_data, unsigned_field, sign_field) give: Ed25519
    is deterministic, so equal inputs mean equal octets."""
    bh = hashlib.sha256(b"body").digest()
    names = signed_field_names(fields)
    expected = sign_field(ED_KEY, signed_header_data(fields, names),
                          unsigned_field(ED_KEY, names, bh, 1_750_000_000))
    assert signature_fields(fields, bh, [ED_KEY], 1_750_000_000) == expected.encode("ascii")


@given(st.from_regex(r"[a-z0-9]{1,40}(\.[a-z0-9]{1,20}){0,3}", fullmatch=True),
       st.from_regex(r"[a-z0-9]{1,30}", fullmatch=True),
       st.lists(st.sampled_from(["from", "to", "subject", "list-unsubscribe-post"]), max_size=30),
       st.integers(min_value=0, max_value=2**40))
def test_cached_key_tags_fold_as_all_tags_at_once(domain: str, selector: str, names: list[str],
                                                   timestamp: int) -> None:
    key = SigningKey(domain, selector, ED_KEY.key)
    bh = hashlib.sha256(domain.encode()).digest()
    tags = ["v=1;", "a=ed25519-sha256;", "c=relaxed/relaxed;", f"d={domain};", f"s={selector};",
            f"t={timestamp};", f"h={':'.join(names)};", f"bh={base64.b64encode(bh).decode()};"]
    whole = "\r\n".join([*ref_fold(tags), "\tb="])
    assert unsigned_field(key, names, bh, timestamp) == whole
    assert unsigned_field(key, names, bh, timestamp) == whole  # from the caches this time


RSA_KEY = SigningKey("example.com", "rsa", rsa.generate_private_key(public_exponent=65537,
                                                                    key_size=1024))


@settings(max_examples=300)
@given(st.from_regex(r"[a-z0-9]{1,60}(\.[a-z0-9]{1,20}){0,3}", fullmatch=True),
       st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True),
       st.lists(st.sampled_from(["from", "to", "subject", "list-unsubscribe-post", "x" * 70]),
                max_size=30),
       st.integers(min_value=0, max_value=2**40), st.binary(min_size=32, max_size=32),
       st.binary(max_size=300), st.booleans())
def test_templates_give_what_folding_each_field_gives(domain: str, selector: str,
                                                      names: list[str], timestamp: int,
                                                      bh: bytes, data: bytes,
                                                      use_rsa: bool) -> None:
    """`unsigned_fields` fills a per-key template instead of folding and canonicalizing each
    field: the field and the digest it signs are exactly `unsigned_field`'s and
    `field_digest`'s, whatever the lengths of d=, s=, h= and t= (a template per t= length),
    the second time too (from the key's templates)."""
    key = SigningKey(domain, selector, (RSA_KEY if use_rsa else ED_KEY).key)
    header = SignableHeader(tuple(names), data, None)
    expected = unsigned_field(key, names, bh, timestamp)
    for _ in range(2):
        [(_key, unsigned, digest)] = unsigned_fields(header, bh, [key], timestamp)
        assert unsigned == expected.encode("ascii")
        assert digest == field_digest(data, expected)


def test_finish_signatures_folds_as_signed_field_does() -> None:
    """Both key types: the b= value folded at the same places as `signed_field` (the reference
    path), so the fields are equal octet for octet (RSA PKCS#1 v1.5 and Ed25519 are both
    deterministic)."""
    header = SignableHeader(("from", "from", "subject"), b"from:a@example.com\r\nsubject:x\r\n",
                            b" a@example.com")
    bh = hashlib.sha256(b"body").digest()
    pending = unsigned_fields(header, bh, [ED_KEY, RSA_KEY], 1_750_000_000)
    assert [key for key, _u, _d in pending] == [RSA_KEY, ED_KEY]  # RSA first
    expected = "".join(signed_field(key, digest, unsigned.decode("ascii"))
                       for key, unsigned, digest in pending)
    assert finish_signatures(pending) == expected.encode("ascii")
    for line in finish_signatures(pending).split(b"\r\n"):
        assert len(line) <= FOLD_WIDTH


@given(st.lists(st.sampled_from([b"a", b"Z", b"0", b"-", b".", b"..", b"\xc3\xbc", b"x" * 63,
                                 b"y" * 64]), min_size=1, max_size=6).map(b"".join))
def test_from_domain_ascii_shortcut_agrees_with_idna(domain: bytes) -> None:
    """ASCII domains skip the IDNA codec; the answer is the codec's (None where it refuses)."""
    name = domain.rstrip(b".").lower()
    try:
        expected: str | None = name.decode("utf-8").encode("idna").decode("ascii") if name else None
    except UnicodeError:
        expected = None
    assert from_domain(split_fields(b"From: Joe <joe@" + domain + b">\r\n")) == expected
