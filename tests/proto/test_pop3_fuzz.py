"""Hypothesis fuzzing of the POP3 server core: random input never raises and every response is
CRLF-framed; however the input is split into reads, the events and the bytes written are the
same."""

from __future__ import annotations

import base64
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.proto.test_pop3_server import Peer

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FRAGMENTS = [
    b"CAPA\r\n",
    b"STLS\r\n",
    b"USER alice\r\n",
    b"USER bob\r\n",
    b"PASS secret\r\n",
    b"PASS wrong\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH\r\n",
    b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n",
    base64.b64encode(b"\0alice\0secret") + b"\r\n",
    b"*\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"LIST 2\r\n",
    b"UIDL\r\n",
    b"UIDL 9\r\n",
    b"RETR 1\r\n",
    b"RETR 2\r\n",
    b"TOP 2 1\r\n",
    b"TOP 3 0\r\n",
    b"DELE 1\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"APOP a b\r\n",
    b"FROB\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"x" * 300,
    b"\xff\xfe",
    "USER jösé\r\n".encode(),
]

VALID_SESSION = (
    b"CAPA\r\nAUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
    b"STAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nDELE 3\r\nQUIT\r\n"
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(pieces: list[bytes], *, tls: bool, piece: int = 7) -> Peer:
    """Feeds the pieces (never b"", which would be EOF) to a fresh peer."""
    peer = Peer.make(tls=tls, auth=tls, piece=piece)
    for data in pieces:
        if data:
            peer.feed(data)
    return peer


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.booleans())
def test_random_input_never_raises_and_responses_are_framed(fragments: list[bytes], tls: bool) -> None:
    peer = run(fragments, tls=tls)
    wire = bytes(peer.wire)
    assert wire.endswith(b"\r\n")
    assert b"\n" not in wire.replace(b"\r\n", b"")  # every line ends in CRLF
    peer.feed(b"")  # EOF is always accepted


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_never_raise(data: bytes, tls: bool) -> None:
    run([data], tls=tls).feed(b"")


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25), st.lists(st.integers(0, 2000), max_size=10),
       st.integers(1, 50))
def test_any_split_gives_the_same_events_and_bytes(fragments: list[bytes], cuts: list[int],
                                                   piece: int) -> None:
    data = b"".join(fragments)
    whole = run([data], tls=True)
    pieces = run(split(data, cuts), tls=True, piece=piece)
    assert pieces.events == whole.events
    assert pieces.wire == whole.wire


@FUZZ
@given(st.lists(st.integers(0, len(VALID_SESSION)), max_size=12), st.integers(1, 64))
def test_a_valid_session_split_anywhere(cuts: list[int], piece: int) -> None:
    whole = run([VALID_SESSION], tls=True)
    pieces = run(split(VALID_SESSION, cuts), tls=True, piece=piece)
    assert pieces.wire == whole.wire and pieces.events == whole.events
    assert whole.wire.endswith(b"+OK pop.example.com POP3 server signing off\r\n")
