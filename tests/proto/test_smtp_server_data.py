"""The SMTP server core's message bodies, byte-exact: DATA (dot-stuffing, streaming, size),
BDAT (RFC 3030), and hostile input (SMTP smuggling, bare LF/CR, NUL, long lines)."""

from __future__ import annotations

import pytest

from mailprime.proto.smtp.framing import AbortReason, DotReader
from mailprime.proto.smtp.server import (
    ConnectionClosed,
    DataAbort,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    Mail,
    ProtocolViolation,
    Rcpt,
    Rset,
    State,
)
from mailprime.proto.smtp.types import Reply
from tests.proto.test_smtp_server import OK_MAIL, OK_RCPT, QUEUED, Peer, limits, session

ENVELOPE = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r@x.example>\r\n"
GO = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BARE = b"550 5.5.2 Bare CR or LF not allowed in message, use CRLF\r\n"
TOO_BIG = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"


def body_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataChunk))


def in_transaction(**kw: object) -> Peer:
    peer = session(**kw)
    assert peer.feed(ENVELOPE) == OK_MAIL + OK_RCPT
    peer.events.clear()
    return peer


# DATA -------------------------------------------------------------------------------------------


def test_data_unstuffs_dots_and_keeps_crlf() -> None:
    peer = in_transaction()
    out = peer.feed(b"DATA\r\n.leading\r\n..two\r\nplain.\r\n...\r\n\r\n.\r\n")
    assert out == GO + QUEUED
    assert body_of(peer.events) == b"leading\r\n.two\r\nplain.\r\n..\r\n\r\n"
    assert peer.events[0] == DataStart(chunking=False)
    assert peer.events[-1] == DataEnd()
    assert peer.conn.state is State.READY


def test_empty_message() -> None:
    peer = in_transaction()
    assert peer.feed(b"DATA\r\n.\r\n") == GO + QUEUED
    assert peer.events == [DataStart(chunking=False), DataEnd()]


def test_end_marker_split_across_reads() -> None:
    peer = in_transaction()
    peer.feed(b"DATA\r\n")
    for piece in (b"line one\r", b"\n.", b"x\r\n", b"\r", b"\n", b".", b"\r", b"\n"):
        peer.feed(piece)
    assert body_of(peer.events) == b"line one\r\nx\r\n\r\n"
    assert peer.events[-1] == DataEnd()


def test_data_chunks_stream_before_the_end() -> None:
    peer = in_transaction(limits=limits(max_message_size=2_000_000))
    peer.feed(b"DATA\r\n")
    line = b"x" * 78 + b"\r\n"
    piece = line * 800  # 64000 octets per read
    for _ in range(20):
        peer.feed(piece)
        # every read yields its content at once (all but a possible end-marker prefix)
        assert isinstance(peer.events[-1], DataChunk)
        assert len(peer.events[-1].data) >= len(piece) - 4
    peer.feed(b".\r\n")
    assert body_of(peer.events) == piece * 20
    assert peer.events[-1] == DataEnd()


def test_pipelined_commands_after_the_end_of_data() -> None:
    peer = in_transaction()
    out = peer.feed(b"DATA\r\nhello\r\n.\r\nMAIL FROM:<c@d.example>\r\nQUIT\r\n")
    assert out == GO + QUEUED + OK_MAIL + b"221 2.0.0 mx.example.com closing connection\r\n"


def test_refused_data_keeps_the_transaction() -> None:
    peer = in_transaction()
    peer.answers[DataStart] = lambda e: Reply(451, "Try later", "4.3.0")
    assert peer.feed(b"DATA\r\n") == b"451 4.3.0 Try later\r\n"
    assert peer.conn.state is State.RCPT
    assert peer.feed(b"DATA x\r\n") == b"501 5.5.4 Syntax: DATA\r\n"


def test_rejected_at_end_of_data_ends_the_transaction() -> None:
    peer = in_transaction()
    peer.answers[DataEnd] = lambda e: Reply(554, "Spam", "5.7.1")
    assert peer.feed(b"DATA\r\nbuy\r\n.\r\nRCPT TO:<r@x.example>\r\n") == (
        GO + b"554 5.7.1 Spam\r\n503 5.5.1 Need MAIL command\r\n"
    )


def test_message_over_the_size_limit_is_dropped_and_refused_at_the_end() -> None:
    peer = in_transaction(limits=limits(max_message_size=100))
    peer.feed(b"DATA\r\n" + b"a" * 60 + b"\r\n")
    assert body_of(peer.events) == b"a" * 60  # the CRLF waits: it may begin the end marker
    assert peer.feed(b"b" * 60 + b"\r\n") == b""  # nothing answered yet: the client is still sending
    assert peer.events[-1] == DataAbort(AbortReason.TOO_BIG)
    assert peer.feed(b"c" * 1000 + b"\r\n" * 10) == b""
    assert peer.feed(b".\r\nNOOP\r\n") == TOO_BIG + b"250 2.0.0 Ok\r\n"
    assert body_of(peer.events) == b"a" * 60  # never more than the limit
    assert peer.conn.state is State.READY
    assert DataEnd() not in peer.events


def test_size_limit_is_the_unstuffed_size() -> None:
    peer = in_transaction(limits=limits(max_message_size=6))
    assert peer.feed(b"DATA\r\n..abc\r\n.\r\n") == GO + QUEUED  # ".abc\r\n" is 6 octets
    assert body_of(peer.events) == b".abc\r\n"


def test_eof_mid_data_aborts() -> None:
    peer = in_transaction()
    peer.feed(b"DATA\r\npartial\r\n")
    peer.feed(b"")
    assert peer.events[-2:] == [DataAbort(AbortReason.CONNECTION_LOST), ConnectionClosed()]


def test_server_421_mid_data_aborts() -> None:
    peer = in_transaction()
    peer.feed(b"DATA\r\npartial\r\n")
    assert peer.conn.receiving_body
    assert peer.conn.send(Reply(421, "mx.example.com Error: timeout exceeded", "4.4.2")) == (
        b"421 4.4.2 mx.example.com Error: timeout exceeded\r\n"
    )
    assert peer.conn.next_event() == DataAbort(AbortReason.SERVER_CLOSED)
    assert peer.conn.next_event() == ConnectionClosed()


# Hostile bodies ---------------------------------------------------------------------------------

SMUGGLED = b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nsmuggled\r\n"


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n\n.\r\n"],
    ids=repr,
)
def test_smuggled_end_of_data_never_starts_a_second_transaction(fake_end: bytes) -> None:
    peer = in_transaction()
    out = peer.feed(b"DATA\r\nSubject: hi\r\n\r\nhello" + fake_end + SMUGGLED + b".\r\n")
    assert out == GO + BARE
    kinds = [type(e) for e in peer.events]
    assert Mail not in kinds and Rcpt not in kinds and DataEnd not in kinds
    assert peer.events[-2:] == [
        DataAbort(AbortReason.BARE_NEWLINE),
        ProtocolViolation(Reply(550, "Bare CR or LF not allowed in message, use CRLF", "5.5.2")),
    ]
    assert peer.conn.state is State.READY


@pytest.mark.parametrize("body", [b"a\nb", b"a\rb", b"ab\r\n\n", b"\r", b"x\n", b"\n.\r\n"], ids=repr)
def test_bare_newlines_anywhere_are_refused(body: bytes) -> None:
    peer = in_transaction()
    assert peer.feed(b"DATA\r\n" + body + b"\r\n.\r\n") == GO + BARE


def test_bare_newline_split_across_reads_is_found() -> None:
    peer = in_transaction()
    peer.feed(b"DATA\r\nabc\r")
    peer.feed(b"x\r\n")
    assert peer.feed(b".\r\n") == BARE


def test_nul_in_data_is_refused() -> None:
    peer = in_transaction()
    assert peer.feed(b"DATA\r\na\0b\r\n.\r\n") == GO + b"550 5.6.0 NUL octets not allowed in message\r\n"
    assert DataAbort(AbortReason.NUL) in peer.events


def test_text_line_over_1000_octets_is_refused() -> None:
    peer = in_transaction()
    ok = b"y" * 998 + b"\r\n"
    assert peer.feed(b"DATA\r\n" + ok + b".\r\n") == GO + QUEUED
    peer.feed(ENVELOPE + b"DATA\r\n" + b"z" * 500)
    peer.feed(b"z" * 499 + b"\r\n.\r\n")
    assert peer.wire.endswith(b"500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)\r\n")
    assert DataAbort(AbortReason.LINE_TOO_LONG) in peer.events


def test_several_violations_report_the_first_by_priority() -> None:
    peer = in_transaction()
    assert peer.feed(b"DATA\r\na\0\r\n" + b"q" * 2000 + b"\r\nb\nc\r\n.\r\n") == GO + BARE


def test_dot_reader_holds_back_only_an_end_marker_prefix() -> None:
    reader = DotReader(max_size=10_000, max_line=1000)
    buf = bytearray(b"\r\nabc\r\n.")
    assert reader.step(buf) == (b"abc", False)
    assert buf == b"\r\n."
    buf += b"\r"
    assert reader.step(buf) == (b"", False)
    buf += b"\n"
    assert reader.step(buf) == (b"\r\n", True)
    assert buf == b""


# BDAT -------------------------------------------------------------------------------------------


def test_bdat_chunks_are_binary_and_exact() -> None:
    peer = in_transaction()
    payload = b"\r\n.\r\nMAIL FROM:<x@y>\r\n\0\n\r\xff"
    out = peer.feed(b"BDAT %d\r\n" % len(payload) + payload + b"BDAT 3 LAST\r\nend")
    assert out == b"250 2.0.0 %d octets received\r\n" % len(payload) + QUEUED
    assert body_of(peer.events) == payload + b"end"
    assert peer.events[0] == DataStart(chunking=True)
    assert peer.events[-1] == DataEnd()
    assert peer.conn.state is State.READY


def test_bdat_streams_across_reads() -> None:
    peer = in_transaction()
    peer.feed(b"BDAT 10 LAST\r\n12345")
    assert peer.conn.receiving_body
    assert body_of(peer.events) == b"12345"
    assert peer.feed(b"67890NOOP\r\n") == QUEUED + b"250 2.0.0 Ok\r\n"
    assert body_of(peer.events) == b"1234567890"


def test_bdat_zero_last_ends_the_message() -> None:
    peer = in_transaction()
    assert peer.feed(b"BDAT 2\r\nhiBDAT 0 LAST\r\n") == b"250 2.0.0 2 octets received\r\n" + QUEUED
    assert peer.events == [DataStart(chunking=True), DataChunk(b"hi"), DataEnd()]
    peer = in_transaction()
    assert peer.feed(b"BDAT 0 LAST\r\n") == QUEUED


def test_bdat_out_of_sequence_still_consumes_its_octets() -> None:
    peer = session()
    out = peer.feed(b"BDAT 15\r\nQUIT\r\nQUIT\r\nX\r\nNOOP\r\n")
    assert out == b"503 5.5.1 Need MAIL command\r\n250 2.0.0 Ok\r\n"
    peer.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert peer.feed(b"BDAT 4 LAST\r\nRSET") == b"554 5.5.1 No valid recipients\r\n"
    assert peer.conn.state is State.MAIL


def test_bdat_refused_by_the_application_is_read_then_refused() -> None:
    peer = in_transaction()
    peer.answers[DataStart] = lambda e: Reply(554, "Not now", "5.7.1")
    out = peer.feed(b"BDAT 4\r\nRSETBDAT 4 LAST\r\nRSET")
    assert out == b"554 5.7.1 Not now\r\n503 5.5.1 Need MAIL command\r\n"
    assert not any(isinstance(e, DataChunk) for e in peer.events)


def test_bdat_over_the_size_limit() -> None:
    peer = in_transaction(limits=limits(max_message_size=10))
    out = peer.feed(b"BDAT 6\r\n123456BDAT 6 LAST\r\nabcdefNOOP\r\n")
    assert out == b"250 2.0.0 6 octets received\r\n" + TOO_BIG + b"250 2.0.0 Ok\r\n"
    assert DataAbort(AbortReason.TOO_BIG) in peer.events
    assert body_of(peer.events) == b"123456"
    peer = in_transaction(limits=limits(max_message_size=10))
    assert peer.feed(b"BDAT 11 LAST\r\n" + b"x" * 11) == TOO_BIG  # refused before any DataStart
    assert not any(isinstance(e, DataStart) for e in peer.events)


def test_data_and_bdat_do_not_mix() -> None:
    peer = in_transaction()
    assert peer.feed(b"BDAT 1\r\nxDATA\r\n") == (
        b"250 2.0.0 1 octets received\r\n503 5.5.1 DATA and BDAT cannot be mixed\r\n"
    )
    peer = in_transaction()
    peer.answers[DataStart] = lambda e: Reply(451, "Later", "4.3.0")
    assert peer.feed(b"DATA\r\nBDAT 2 LAST\r\nxy") == (
        b"451 4.3.0 Later\r\n503 5.5.1 DATA and BDAT cannot be mixed\r\n"
    )


def test_bdat_syntax() -> None:
    peer = in_transaction()
    assert peer.feed(b"BDAT\r\nBDAT x\r\nBDAT 1 FIRST\r\nBDAT 123456789012345678901\r\n") == (
        b"501 5.5.4 Syntax: BDAT <size> [LAST]\r\n" * 4
    )
    peer = in_transaction(chunking=False)
    assert peer.feed(b"BDAT 1\r\n") == b"502 5.5.1 BDAT not available\r\n"


def test_rset_between_bdat_chunks_abandons_the_message() -> None:
    peer = in_transaction()
    peer.feed(b"BDAT 2\r\nabRSET\r\n")
    assert peer.events[-2:] == [DataAbort(AbortReason.ABANDONED), Rset()]


def test_eof_mid_bdat_aborts() -> None:
    peer = in_transaction()
    peer.feed(b"BDAT 10\r\nabc")
    peer.feed(b"")
    assert peer.events[-2:] == [DataAbort(AbortReason.CONNECTION_LOST), ConnectionClosed()]


# Hostile command lines --------------------------------------------------------------------------


def test_command_line_too_long_resyncs_at_the_next_line() -> None:
    peer = session()
    out = peer.feed(b"NOOP " + b"x" * 1200 + b"\r\nNOOP\r\n")
    assert out == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
    # the same when the long line arrives in pieces
    peer.feed(b"MAIL FROM:<" + b"y" * 1500)
    peer.feed(b"z" * 1500)
    assert peer.feed(b">\r\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"


def test_bare_lf_and_nul_and_bad_utf8_in_commands() -> None:
    peer = session()
    assert peer.feed(b"NOOP\n") == b"500 5.5.2 Bare LF not allowed, end lines with CRLF\r\n"
    assert peer.feed(b"NO\0OP\r\n") == b"500 5.5.2 NUL or bare CR not allowed in a command\r\n"
    assert peer.feed(b"NO\rOP\r\n") == b"500 5.5.2 NUL or bare CR not allowed in a command\r\n"
    assert peer.feed(b"NOOP \xff\xfe\r\n") == b"500 5.5.2 Command is not valid UTF-8\r\n"
    assert peer.feed(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


def test_bare_lf_cannot_smuggle_a_command_pair() -> None:
    peer = session()
    out = peer.feed(b"MAIL FROM:<a@b.example>\nRCPT TO:<r@x.example>\r\n")
    assert out == b"500 5.5.2 Bare LF not allowed, end lines with CRLF\r\n503 5.5.1 Need MAIL command\r\n"
