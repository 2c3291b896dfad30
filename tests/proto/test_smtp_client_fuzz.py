"""Property tests of the SMTP client core: reply parsing never fails with anything but
RemoteProtocolError, chunk boundaries never change what is parsed, and message data survives
dot-stuffing however it is split."""

from __future__ import annotations

import contextlib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.proto import RemoteProtocolError
from mailprime.proto.smtp.client import (
    NEED_DATA,
    ClientConnection,
    ClientState,
    ConnectionClosed,
    Data,
    Ehlo,
    Mail,
    Rcpt,
    ReplyReceived,
    Rset,
)
from mailprime.proto.smtp.types import Reply

EHLO = b"250-mx.example\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"


def ready_with_pending(count: int) -> ClientConnection:
    conn = ClientConnection("client.example")
    conn.receive_data(b"220 hi\r\n")
    assert isinstance(conn.next_event(), ReplyReceived)
    conn.send(Ehlo())
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), ReplyReceived)
    for _ in range(count):
        conn.send(Rset())
    return conn


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[start:p])
        start = p
    return [p for p in pieces if p]


def drain(conn: ClientConnection, pieces: list[bytes], eof: bool) -> list[object]:
    """Feeds pieces, collecting events; bounded by the number of octets fed."""
    out: list[object] = []
    for piece in [*pieces, *([b""] if eof else [])]:
        conn.receive_data(piece)
        for _ in range(len(piece) + 2):
            event = conn.next_event()
            if event is NEED_DATA:
                break
            out.append(event)
            if isinstance(event, ConnectionClosed):
                return out
        else:
            raise AssertionError("more events than octets")
    return out


reply_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("éü€"), max_size=40
).filter(lambda t: not t[:1].isdigit())  # a text opening with "2.0.0" would read as a status code
reply_strategy = st.tuples(
    st.sampled_from([211, 214, 220, 221, 250, 251, 252, 354, 421, 450, 451, 452, 500, 501, 503, 550, 554]),
    st.one_of(st.none(), st.sampled_from(["2.0.0", "4.7.1", "5.1.1", "5.7.26"])),
    st.lists(reply_text, min_size=1, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=10), eof=st.booleans())
def test_arbitrary_bytes_only_raise_remote_protocol_error(data: bytes, cuts: list[int], eof: bool) -> None:
    conn = ready_with_pending(30)
    with contextlib.suppress(RemoteProtocolError):
        drain(conn, split(data, cuts), eof)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.sampled_from([b"250", b"251", b"421", b"550", b"2x0", b"25"]),
                  st.sampled_from([b" ", b"-", b"", b"\t"]),
                  st.binary(max_size=30),
                  st.sampled_from([b"\r\n", b"\n", b"\r"])),
        max_size=12,
    ),
    cuts=st.lists(st.integers(0, 600), max_size=10),
)
def test_reply_like_bytes_only_raise_remote_protocol_error(
    lines: list[tuple[bytes, bytes, bytes, bytes]], cuts: list[int]
) -> None:
    conn = ready_with_pending(30)
    wire = b"".join(code + sep + text + end for code, sep, text, end in lines)
    with contextlib.suppress(RemoteProtocolError):
        drain(conn, split(wire, cuts), eof=False)


def encode_reply(code: int, enhanced: str | None, texts: list[str]) -> tuple[bytes, Reply]:
    """The wire form of a reply with the enhanced code on every line (RFC 2034), and what the
    parser should make of it."""
    usable = enhanced if enhanced and enhanced[0] == str(code)[0] else None
    lines = []
    for i, text in enumerate(texts):
        sep = " " if i == len(texts) - 1 else "-"
        prefix = f"{usable} " if usable else ""
        lines.append(f"{code}{sep}{prefix}{text}\r\n")
    expected_texts = list(texts)
    if usable is None:
        expected = Reply(code, expected_texts[0], None, tuple(expected_texts[1:]))
    else:
        # A text that itself starts with spaces loses them with the code's separator.
        stripped = [re.sub(r"^ +", "", t) for t in expected_texts]
        expected = Reply(code, stripped[0], usable, tuple(stripped[1:]))
    return "".join(lines).encode(), expected


@settings(max_examples=300, deadline=None)
@given(
    replies=st.lists(reply_strategy, min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_chunk_boundaries_do_not_matter(
    replies: list[tuple[int, str | None, list[str]]], cuts: list[int]
) -> None:
    # 421 closes the connection and drops the rest, so it may only come last.
    replies = [r for r in replies if r[0] != 421] + [r for r in replies if r[0] == 421][:1]
    wire = b""
    expected: list[Reply] = []
    for code, enhanced, texts in replies:
        chunk, reply = encode_reply(code, enhanced, texts)
        wire += chunk
        expected.append(reply)
    whole = drain(ready_with_pending(len(replies)), [wire], eof=False)
    pieces = drain(ready_with_pending(len(replies)), split(wire, cuts), eof=False)
    assert whole == pieces
    assert [e.reply for e in whole if isinstance(e, ReplyReceived)] == expected
    assert all(isinstance(e, ReplyReceived) and e.command == Rset() for e in whole)


def unstuff(wire: bytes) -> bytes:
    """What a server makes of a DATA body (RFC 5321 4.5.2), the terminator removed."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[: -len(b".\r\n")]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def normalised(body: bytes) -> bytes:
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def in_data() -> ClientConnection:
    conn = ready_with_pending(0)
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):
        assert isinstance(conn.next_event(), ReplyReceived)
    assert conn.state is ClientState.DATA_BODY
    return conn


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\r\n.\r\n"]), max_size=30).map(
        b"".join
    ),
    cuts=st.lists(st.integers(0, 200), max_size=10),
)
def test_dot_stuffing_round_trips_however_split(body: bytes, cuts: list[int]) -> None:
    whole = in_data().send_message_data(body)
    conn = in_data()
    streamed = b"".join(conn.send_message_data(p, final=False) for p in split(body, cuts))
    streamed += conn.send_message_data(b"")
    assert streamed == whole
    # The only "<CRLF>.<CRLF>" is the terminator, no CR or LF is bare, and the server recovers
    # the body.
    assert b"\r\n.\r\n" not in whole[:-5]
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", whole) is None
    assert unstuff(whole) == normalised(body)
