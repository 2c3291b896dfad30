"""Hypothesis fuzzing of the IMAP server core: however input is split, the events are the same;
random input never raises out of `next_event` and never hangs; strings written by the serializer
read back the same; sequence sets agree with a naive model."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprime.proto.imap.parser import Reader
from mailprime.proto.imap.serializer import serialize_bytes
from mailprime.proto.imap.types import (
    AppendData,
    BadCommand,
    CommandReceived,
    ConnectionClosed,
    Event,
    Limits,
    LiteralRequest,
    ProtocolViolation,
    SeqRange,
    SequenceSet,
    State,
    String,
    Tagged,
    Untagged,
    bad,
)
from tests.proto.test_imap_server import Decide, Peer, accept_all

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SESSION = (
    b"a1 CAPABILITY\r\n"
    b'a2 ID ("name" "fuzz")\r\n'
    b"a3 LIST \"\" \"*\"\r\n"
    b"a4 APPEND INBOX (\\Seen) \"26-Nov-2026 10:00:00 +0000\" {20}\r\n0123456789abcdefghij\r\n"
    b"a5 APPEND {5+}\r\nDraft {3+}\r\nxyz\r\n"
    b"a6 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)])\r\n"
    b"a7 SEARCH CHARSET UTF-8 TEXT {5}\r\n\xc3\xa9t\xc3\xa9 NOT DELETED\r\n"
    b"a8 STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n"
    b"a9 BOGUS\r\n"
    b"\r\n"
    b"b1 IDLE\r\ndone\r\n"
    b"b2 FETCH 0 FLAGS\r\n"
    b"b3 LOGIN {4+}\r\nuser\r\n"
    b"b4 UID EXPUNGE 1:*\r\n"
    b"b5 LOGOUT\r\n"
)


def normalized(events: list[Event]) -> list[Event]:
    """Events with consecutive AppendData merged (their boundaries follow the reads)."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, AppendData) and out and isinstance(out[-1], AppendData):
            out[-1] = AppendData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def run(chunks: list[bytes], limits: Limits | None = None, decide: Decide = accept_all,
        ) -> tuple[list[Event], bytes]:
    peer = Peer(State.SELECTED, limits or Limits(), decide=decide, follow_modes=True)
    events: list[Event] = []
    for chunk in chunks:
        events += peer.feed(chunk)
    events += peer.feed(b"")
    return normalized(events), bytes(peer.written)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True) if i < j]


REFERENCE = run([SESSION])


def test_the_reference_session() -> None:
    events, written = REFERENCE
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("CommandReceived") == 11
    assert kinds.count("IdleDone") == 1
    assert kinds.count("BadCommand") == 4  # BOGUS, empty line, FETCH 0, LOGIN in SELECTED
    assert events[-1] == ConnectionClosed()
    assert AppendData(b"0123456789abcdefghij") in events and AppendData(b"xyz") in events
    assert written == b"+ Ready for literal data\r\n" * 2


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    assert run(split(SESSION, cuts)) == REFERENCE


# Refusals: literals of commands tagged "r..." are refused; lines are short; there is no IDLE.
HOSTILE = (
    b"r1 APPEND INBOX {12+}\r\nr2 NOOP\r\n\r\n after\r\n"
    b"r3 APPEND INBOX {4}\r\n"
    b"ok1 APPEND INBOX {2+}\r\nhi (\\Seen) {3+}\r\nabc\r\n"
    b"r4 SEARCH TEXT {3+}\r\nabc BODY {2}\r\n"
    b"x1 SEARCH TEXT " + b"y" * 80 + b" {6+}\r\nx2 BAD\r\n"
    b"x3 SEARCH TEXT " + b"y" * 80 + b"\r\n"
    b"x4 IDLE\r\nx5 DONE\r\n"
    b"x6 AUTHENTICATE PLAIN\r\n\r\n*\r\n"
    b"ok2 FETCH 1 (BODY.PEEK[]<0.10>)\r\n"
)


def refuse_r(event: Event) -> Tagged | None:
    tag = event.tag if isinstance(event, (LiteralRequest, CommandReceived)) else ""
    return bad(tag, "refused") if tag.startswith("r") else None


HOSTILE_REFERENCE = run([HOSTILE], Limits(max_line=60), refuse_r)


def test_the_hostile_reference_session() -> None:
    events, written = HOSTILE_REFERENCE
    tags = [e.tag for e in events if isinstance(e, (CommandReceived, BadCommand))]
    # r1's skipped literal and the rest of its line hide "r2"; x5 ends x4's IDLE with BAD;
    # AUTHENTICATE is refused in SELECTED, so its two SASL lines are bad commands of their own.
    assert tags == ["r1", "r3", "ok1", "ok1", "x1", "x3", "x4", "x4", "x6", None, None, "ok2"]
    assert [type(e).__name__ for e in events].count("LiteralRequest") == 1  # r4's; BODY {2} never asked
    assert written == b"r1 BAD refused\r\nr3 BAD refused\r\nr4 BAD refused\r\n"


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_any_chunking_gives_the_same_refusals(cuts: list[int]) -> None:
    assert run(split(HOSTILE, cuts), Limits(max_line=60), refuse_r) == HOSTILE_REFERENCE


FRAGMENTS = [
    b"a NOOP\r\n", b"b LOGIN u p\r\n", b"c APPEND INBOX {3}\r\n", b"d APPEND INBOX {4+}\r\n",
    b"e SEARCH TEXT {2}\r\n", b"f SEARCH TEXT {2+}\r\n", b"{", b"}", b"{5}", b"{5+}\r\n", b"~{1}\r\n",
    b"{99999999999999999999999+}\r\n", b"\r\n", b"\n", b"\r", b"\"", b"\\", b"(", b")", b"*", b"+",
    b"\x00", b"\xff\xfe", b"x" * 300, b"g IDLE\r\n", b"DONE\r\n", b"h STARTTLS\r\n", b"i FETCH 1:* (",
    b"BODY[HEADER.FIELDS (A B)]<0.1>", b"j AUTHENTICATE PLAIN\r\n", b"*\r\n",
    base64.b64encode(b"\0u\0p") + b"\r\n", b" ", b"UID ", b"k SELECT &ZeVnLIqe-\r\n",
]


@FUZZ
@given(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=40),
    st.lists(st.booleans(), max_size=20),
    st.sampled_from(list(State)[:3]),
)
def test_random_input_never_raises_or_hangs(pieces: list[bytes], decisions: list[bool], state: State) -> None:
    answers = iter(decisions)

    def decide(event: Event) -> Tagged | None:
        tag = event.tag if isinstance(event, (LiteralRequest, CommandReceived)) else "x"
        return None if next(answers, True) else bad(tag, "refused")

    peer = Peer(state, Limits(max_line=200, max_literal=100, max_append=50, max_bad_commands=10),
                decide=decide, follow_modes=True)
    closed = False
    for piece in pieces:
        for event in peer.feed(piece):
            assert not closed or isinstance(event, ConnectionClosed)
            closed = closed or isinstance(event, (ConnectionClosed, ProtocolViolation))
            if isinstance(event, BadCommand):
                assert peer.conn.send(event.response())
    assert peer.feed(b"")[-1:] == [ConnectionClosed()]


@given(st.binary(max_size=300), st.booleans())
def test_strings_read_back_the_same(data: bytes, utf8: bool) -> None:
    line = serialize_bytes(Untagged((String(data),)), utf8=utf8)
    assert line.startswith(b"* ") and line.endswith(b"\r\n")
    body = line[2:-2]
    if body.startswith(b"{"):
        header, _, literal = body.partition(b"\r\n")
        reader = Reader([header, b""], [literal])
    else:
        reader = Reader([body], [])
    assert reader.string() == data
    assert reader.at_end()


numbers = st.one_of(st.none(), st.integers(1, 40))
ranges = st.builds(SeqRange, numbers, numbers)


@given(st.lists(ranges, min_size=1, max_size=6), st.integers(0, 50))
def test_sequence_set_against_a_model(items: list[SeqRange], largest: int) -> None:
    seq = SequenceSet(tuple(items))
    model: set[int] = set()
    for r in items:
        a = largest if r.start is None else r.start
        b = largest if r.end is None else r.end
        model |= set(range(min(a, b), max(a, b) + 1))
    assert seq.resolve(largest) == sorted(n for n in model if 1 <= n <= largest)
    for n in range(52):
        assert seq.contains(n, largest) == (n in model)
    assert [n for lo, hi in seq.intervals(largest) for n in range(lo, hi + 1)] == sorted(model)
    reparsed = Reader([seq.to_wire().encode()], []).sequence_set()
    assert reparsed.resolve(largest) == seq.resolve(largest)
