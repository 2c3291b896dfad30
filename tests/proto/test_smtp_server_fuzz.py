"""Hypothesis fuzzing of the SMTP server core: random input never raises and only ever produces
well-formed replies; however the input is split into reads, the events and the bytes written are
the same; the DATA reader agrees with a line-by-line reference model."""

from __future__ import annotations

import base64
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.proto.smtp import xtext
from mailprime.proto.smtp.framing import AbortReason, DotReader
from mailprime.proto.smtp.server import DataAbort, DataChunk, Event
from tests.proto.test_smtp_server import Peer, limits

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")
END = b"\r\n.\r\n"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FRAGMENTS = [
    b"EHLO client.example\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> SIZE=20 BODY=8BITMIME RET=HDRS ENVID=x+2By\r\n",
    b"RCPT TO:<r@x.example>\r\n",
    b"RCPT TO:<reject@x.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;r+40x\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"\0",
    b"hello world",
    b"x" * 700,
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n",
    base64.b64encode(b"alice") + b"\r\n",
    b"*\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"FROB\r\n",
    b"\xff\xfe",
    "RCPT TO:<jösé@exämple.com>\r\n".encode(),
]

VALID_SESSION = (
    b"EHLO client.example\r\n"
    b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
    b"MAIL FROM:<a@b.example> SIZE=150 BODY=8BITMIME RET=FULL ENVID=id+2B1\r\n"
    b"RCPT TO:<r1@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r1+40x.example\r\n"
    b"RCPT TO:<reject@x.example>\r\n"
    b"RCPT TO:<r2@x.example>\r\n"
    b"DATA\r\n"
    b"Subject: test\r\n\r\n.leading dot\r\n..two dots\r\n\r\nlast line\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<r3@x.example>\r\n"
    b"BDAT 12\r\nbinary\r\n.\r\n\0BDAT 5 LAST\r\n12345"
    b"RSET\r\nNOOP\r\nVRFY bob\r\nHELP\r\n"
    b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r4@x.example>\r\n"
    b"DATA\r\nsmuggle\n.\r\nMAIL FROM:<x@y.example>\r\n.\r\n"
    b"QUIT\r\n"
)


def normalise(events: list[Event]) -> list[Event]:
    """Merges adjacent DataChunks (their boundaries follow the reads) and drops content that
    was aborted (how much of a refused body streamed first depends on the reads too)."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + event.data)
        elif isinstance(event, DataAbort) and out and isinstance(out[-1], DataChunk):
            out[-1] = event
        else:
            out.append(event)
    return out


def run(pieces: list[bytes], **kw: object) -> Peer:
    peer = Peer.make(limits=limits(max_message_size=200, max_unknown_commands=1000), **kw)
    for piece in pieces:
        if piece:
            peer.feed(piece)
    return peer


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def assert_well_formed(wire: bytes) -> None:
    rest = re.sub(REPLY_LINE, b"", wire)
    assert rest == b"", rest[:200]


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    peer = run(split(data, cuts))
    assert_well_formed(bytes(peer.wire))


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.lists(st.integers(min_value=0), max_size=10))
def test_random_command_soup_is_split_invariant(fragments: list[bytes], cuts: list[int]) -> None:
    data = b"".join(fragments)
    whole = run([data])
    pieces = run(split(data, cuts))
    assert_well_formed(bytes(whole.wire))
    assert bytes(pieces.wire) == bytes(whole.wire)
    assert normalise(pieces.events) == normalise(whole.events)


@FUZZ
@given(st.lists(st.integers(min_value=0), max_size=30))
def test_valid_session_split_anywhere_gives_the_same_events(cuts: list[int]) -> None:
    whole = run([VALID_SESSION])
    pieces = run(split(VALID_SESSION, cuts))
    assert bytes(pieces.wire) == bytes(whole.wire)
    assert normalise(pieces.events) == normalise(whole.events)
    assert whole.conn.must_close
    assert whole.wire.count(b"\r\n250 2.0.0 Queued\r\n") == 2
    assert whole.wire.endswith(b"221 2.0.0 mx.example.com closing connection\r\n")


def test_valid_session_byte_by_byte() -> None:
    whole = run([VALID_SESSION])
    bytewise = run([VALID_SESSION[i : i + 1] for i in range(len(VALID_SESSION))])
    assert bytes(bytewise.wire) == bytes(whole.wire)
    assert normalise(bytewise.events) == normalise(whole.events)


# The DATA reader against a reference model ------------------------------------------------------


def reference(stream: bytes, max_line: int) -> tuple[bytes, AbortReason | None, bytes] | None:
    """Line by line, as RFC 5321 4.5.2 reads: returns (content, violation, rest) or None when the
    stream holds no end of data."""
    prefixed = b"\r\n" + stream  # the data starts at a line start
    end = prefixed.find(b"\r\n.\r\n")
    if end < 0:
        return None
    raw, rest = prefixed[2:end], prefixed[end + 5 :]
    lines = raw.split(b"\r\n") if end > 0 else []
    content = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    violation = None
    if re.search(rb"\r(?!\n)|(?<!\r)\n", raw):
        violation = AbortReason.BARE_NEWLINE
    elif b"\0" in raw:
        violation = AbortReason.NUL
    elif any(len(line) > max_line - 2 for line in lines):
        violation = AbortReason.LINE_TOO_LONG
    return content, violation, rest


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"b", b".", b"\r", b"\n", b"\r\n", b"\0", b"\r\n.", END]), max_size=60),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_dot_reader_matches_the_reference(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    expected = reference(stream, max_line=12)
    reader = DotReader(max_size=10_000, max_line=12)
    buf = bytearray(b"\r\n")
    content = b""
    at_end = False
    for piece in split(stream, cuts):
        buf += piece
        for _ in range(len(stream) + 2):
            out, at_end = reader.step(buf)
            content += out
            if at_end or not out:
                break
        if at_end:
            break
    if expected is None:
        assert not at_end
        return
    assert at_end
    expected_content, violation, _ = expected
    assert reader.failure == violation
    if violation is None:
        assert content == expected_content


@FUZZ
@given(st.text(max_size=60))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext.encode(text)
    assert xtext.is_xtext(encoded)
    assert xtext.decode(encoded) == text


def test_xtext_rejects_bad_input() -> None:
    assert xtext.decode("a+2Bb+3D") == "a+b="
    for bad in ("a+2b", "a+", "a=b", "a b", "+ZZ"):
        assert not xtext.is_xtext(bad)
