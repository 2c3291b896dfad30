"""The POP3 multi-line content encoder (RFC 1939 3 byte-stuffing, TOP's cut) byte-exact, and
against a line-by-line reference model under hypothesis, for every way of cutting the content
into pieces."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.proto.pop3.multiline import ContentEncoder, encode_known, encode_whole, listing

FUZZ = settings(max_examples=300, deadline=None)


def encode(content: bytes, lines: int | None = None, cuts: list[int] | None = None) -> bytes:
    """Encodes `content` split at the offsets `cuts` (each piece as a separate call)."""
    encoder = ContentEncoder(lines)
    bounds = sorted({0, len(content), *(c for c in (cuts or []) if 0 < c < len(content))})
    out = b"".join(encoder.encode(content[a:b]) for a, b in itertools.pairwise(bounds))
    return out + encoder.finish()


def reference(content: bytes, lines: int | None = None) -> bytes:
    """The same response built line by line: split at LF (dropping a CR before it), cut for TOP
    at the first empty line plus `lines` lines, stuff each line, end with "." CRLF."""
    segments = content.split(b"\n")
    text = [s[:-1] if s.endswith(b"\r") else s for s in segments[:-1]]
    if segments[-1]:
        text.append(segments[-1])  # a last line without its line end
    if lines is not None and b"" in text:
        blank = text.index(b"")
        text = text[:blank + 1 + lines]
    return b"".join((b"." + t if t.startswith(b".") else t) + b"\r\n" for t in text) + b".\r\n"


def test_plain_content_passes_unchanged() -> None:
    assert encode(b"Subject: x\r\n\r\nbody\r\n") == b"Subject: x\r\n\r\nbody\r\n.\r\n"


def test_dots_are_stuffed_at_every_line_start_across_pieces() -> None:
    content = b".a\r\n..b\r\nc.d\r\n.\r\n"
    expected = b"..a\r\n...b\r\nc.d\r\n..\r\n.\r\n"
    for cut in range(len(content) + 1):
        assert encode(content, cuts=[cut]) == expected, cut
    assert encode(content, cuts=list(range(len(content)))) == expected  # one octet at a time


def test_a_missing_last_line_end_is_added() -> None:
    assert encode(b"no end") == b"no end\r\n.\r\n"
    assert encode(b"") == b".\r\n"
    assert encode(b"x\r") == b"x\r\r\n.\r\n"  # a lone CR at the very end is content


def test_bare_lf_becomes_crlf_so_no_line_can_end_the_response() -> None:
    assert encode(b"a\n.\nb\n", cuts=[1, 2, 3]) == b"a\r\n..\r\nb\r\n.\r\n"
    assert encode(b"a\r\rb\r\n") == b"a\r\rb\r\n.\r\n"  # bare CR ends no line: left alone


def test_top_cuts_after_the_header_and_n_lines() -> None:
    content = b"A: 1\r\nB: 2\r\n\r\n1\r\n.2\r\n3\r\n"
    assert encode(content, 0) == b"A: 1\r\nB: 2\r\n\r\n.\r\n"
    assert encode(content, 2) == b"A: 1\r\nB: 2\r\n\r\n1\r\n..2\r\n.\r\n"
    assert encode(content, 9) == encode(content)
    assert encode(b"\r\nbody\r\n", 0) == b"\r\n.\r\n"  # no header at all
    assert encode(b"A: 1\r\nno blank line", 0) == b"A: 1\r\nno blank line\r\n.\r\n"


def test_top_ignores_pieces_once_done() -> None:
    encoder = ContentEncoder(0)
    assert encoder.encode(b"A: 1\r\n\r\nbody") == b"A: 1\r\n\r\n"
    assert encoder.done
    assert encoder.encode(b"more\r\n") == b""
    assert encoder.finish() == b".\r\n"


def test_listing_stuffs_and_terminates() -> None:
    assert listing(b"+OK\r\n", ["PLAIN", ".odd"]) == b"+OK\r\nPLAIN\r\n..odd\r\n.\r\n"


CONTENT = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"Subject: x", b" ",
                                    b"\r\n\r\n", b"\r\n.\r\n", b"\0", b"\xff"]),
                   max_size=40).map(b"".join)


@FUZZ
@given(CONTENT, st.lists(st.integers(0, 200), max_size=8), st.one_of(st.none(), st.integers(0, 5)))
def test_any_split_matches_the_reference(content: bytes, cuts: list[int], lines: int | None) -> None:
    assert encode(content, lines, cuts) == reference(content, lines)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_random_content_is_framed_so_a_client_reads_it_back(content: bytes, cuts: list[int]) -> None:
    wire = encode(content, None, cuts)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire.split(b"\r\n")[:-1]
    assert lines[-1] == b"."
    body = lines[:-1]
    assert b"." not in body  # no line ends the response early
    assert all(b"\n" not in line for line in body)
    # What a client un-stuffs is the content with its line ends made CRLF.
    unstuffed = b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in body)
    normalised = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuffed == normalised


@FUZZ
@given(CONTENT)
def test_encode_whole_is_the_streamed_response(content: bytes) -> None:
    assert encode_whole(content) == encode(content) == reference(content)


# encode_known: the same response for content whose line form the caller knows -----------------


def dot_offsets(content: bytes) -> list[int]:
    """The offsets of the lines that start with ".", found the slow way (a reference)."""
    return [i for i in range(len(content)) if content[i:i + 1] == b"." and (i == 0 or content[i - 1] == 10)]


def known(content: bytes, *, offsets: bool = False) -> bytes:
    """`encode_known` as a caller that found the form itself (as a store does) would use it."""
    crlf = content.count(b"\n") == content.count(b"\r\n")
    dots = dot_offsets(content)
    return b"".join(encode_known(content, crlf_only=crlf, dot_lines=bool(dots),
                                 dot_offsets=dots if offsets else None))


def test_content_without_dot_lines_goes_out_as_it_is() -> None:
    content = b"Subject: x\r\n\r\nbody. not a dot line\r\n"
    pieces = encode_known(content, crlf_only=True, dot_lines=False)
    assert pieces[0] is content and pieces[1:] == [b".\r\n"]  # no copy of the content
    assert encode_known(b"no end", crlf_only=True, dot_lines=False) == [b"no end", b"\r\n.\r\n"]
    assert encode_known(b"x\r", crlf_only=True, dot_lines=False) == [b"x\r", b"\r\n.\r\n"]
    assert encode_known(b"", crlf_only=True, dot_lines=False) == [b".\r\n"]


def test_dot_lines_are_stuffed_between_slices_of_the_content() -> None:
    content = b".a\r\nb\r\n.\r\n..c\r\nd.e\r\n"
    pieces = encode_known(content, crlf_only=True, dot_lines=True)
    assert [bytes(p) for p in pieces] == [b".", b".a\r\nb\r\n", b".", b".\r\n", b".",
                                          b"..c\r\nd.e\r\n", b".\r\n"]
    assert all(isinstance(p, memoryview) for p in pieces[1:-1:2])  # slices, not copies
    assert b"".join(pieces) == encode_whole(content)


def test_many_dot_lines_are_stuffed_in_one_copy() -> None:
    content = b"x\r\n" + b".\r\n" * 200 + b"end\r\n"
    pieces = encode_known(content, crlf_only=True, dot_lines=True)
    assert len(pieces) < 80  # bounded: past the limit the rest is one stuffed copy
    assert b"".join(pieces) == encode_whole(content)


def test_unknown_line_ends_are_checked_as_encode_whole_does() -> None:
    assert encode_known(b"a\n.b\n", crlf_only=False, dot_lines=True) == [b"a\r\n..b\r\n.\r\n"]


def test_known_dot_offsets_are_not_searched_for_again() -> None:
    content = b".a\r\nb\r\n.\r\nc\r\n"
    pieces = encode_known(content, crlf_only=True, dot_lines=True, dot_offsets=(0, 7))
    assert [bytes(p) for p in pieces] == [b".", b".a\r\nb\r\n", b".", b".\r\nc\r\n", b".\r\n"]
    # Trusted as given: offsets that name no dot line stuff a dot there all the same.
    wrong = encode_known(content, crlf_only=True, dot_lines=True, dot_offsets=(3,))
    assert b"".join(wrong) != encode_whole(content)


@FUZZ
@given(CONTENT)
def test_encode_known_is_encode_whole(content: bytes) -> None:
    assert known(content) == known(content, offsets=True) == encode_whole(content) == reference(content)


@FUZZ
@given(st.lists(st.sampled_from([b"\r\n", b".", b"..", b"a", b"\r", b"\r\n."]), max_size=400))
def test_encode_known_matches_with_dot_lines_past_the_piece_limit(parts: list[bytes]) -> None:
    content = b"".join(parts)
    assert known(content) == known(content, offsets=True) == encode_whole(content)
