"""The IMAP server core driven byte-exact, without sockets: real clients' sessions, literals
(synchronizing and not, accepted and refused), APPEND streaming, STARTTLS, IDLE, AUTHENTICATE,
states, and every refusal of bad input."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailprime.proto import LocalProtocolError
from mailprime.proto.imap.server import ServerConnection
from mailprime.proto.imap.types import (
    NEED_DATA,
    Append,
    AppendData,
    AppendEnd,
    Authenticate,
    AuthenticateData,
    BadCommand,
    Capability,
    Command,
    CommandReceived,
    ConnectionClosed,
    Event,
    Fetch,
    Idle,
    IdleDone,
    Limits,
    LiteralRequest,
    Login,
    Logout,
    Noop,
    ProtocolViolation,
    ResponseCode,
    ResponseStatus,
    Select,
    StartTls,
    State,
    Tagged,
    fetch_item_name,
    no,
)

Decide = Callable[[Event], Tagged | None]  # None: accept the literal; a Tagged: refuse with it


def accept_all(event: Event) -> Tagged | None:
    return None


@dataclass
class Peer:
    """Plays the session's part: feeds bytes, collects events, answers literal requests with
    `decide`, and keeps what the core asked it to write (continuations, refusals)."""

    state: State = State.SELECTED
    limits: Limits = field(default_factory=Limits)
    decide: Decide = accept_all
    # Also play IDLE, AUTHENTICATE and STARTTLS the way a session does, as the events come.
    follow_modes: bool = False
    conn: ServerConnection = field(init=False)
    written: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.conn = ServerConnection(self.limits)
        self.conn.set_state(self.state)

    def feed(self, data: bytes) -> list[Event]:
        self.conn.receive_data(data)
        return self.drain()

    def drain(self) -> list[Event]:
        events: list[Event] = []
        for _ in range(100_000):  # bounded: never hangs
            event = self.conn.next_event()
            if event is NEED_DATA:
                return events
            assert not isinstance(event, type(NEED_DATA))
            events.append(event)
            if isinstance(event, LiteralRequest) or (
                isinstance(event, CommandReceived) and isinstance(event.command, Append)
            ):
                refusal = self.decide(event)
                if refusal is None:
                    self.written += self.conn.accept_literal()
                else:
                    self.written += self.conn.reject_literal(refusal)
            if self.follow_modes:
                self._follow(event)
            if isinstance(event, ConnectionClosed):
                return events
        raise AssertionError("the core kept producing events")


    def _follow(self, event: Event) -> None:
        if isinstance(event, CommandReceived):
            if isinstance(event.command, Idle):
                self.conn.start_idle(event.tag)
            elif isinstance(event.command, Authenticate) and event.command.initial_response is None:
                self.conn.start_authenticate(event.tag)
            elif isinstance(event.command, StartTls):
                self.conn.starttls_done()
        elif isinstance(event, AuthenticateData):
            self.conn.end_authenticate()


def commands(events: list[Event]) -> list[Command]:
    return [e.command for e in events if isinstance(e, CommandReceived)]


def parse(line: bytes, state: State = State.SELECTED, *, utf8: bool = False) -> Command:
    """The one command `line` (CRLF added) parses to; literals in it are accepted."""
    peer = Peer(state)
    if utf8:
        peer.conn.enable_utf8()
    events = [e for e in peer.feed(line + b"\r\n") if not isinstance(e, LiteralRequest)]
    assert len(events) == 1, events
    assert isinstance(events[0], CommandReceived), events[0]
    return events[0].command


def refused(line: bytes, state: State = State.SELECTED) -> BadCommand:
    peer = Peer(state)
    events = [e for e in peer.feed(line + b"\r\n") if not isinstance(e, LiteralRequest)]
    assert len(events) == 1, events
    assert isinstance(events[0], BadCommand), events[0]
    return events[0]


# Sessions of real clients ---------------------------------------------------------------------


def test_imaplib_login_select_fetch_logout() -> None:
    peer = Peer(State.NOT_AUTHENTICATED)
    assert peer.feed(b"GKLB1 CAPABILITY\r\n") == [CommandReceived("GKLB1", Capability())]
    events = peer.feed(b'GKLB2 LOGIN alice "s3cret pass"\r\n')
    assert events == [CommandReceived("GKLB2", Login("alice", "s3cret pass"))]
    assert isinstance(events[0], CommandReceived) and events[0].command == Login("alice", "s3cret pass")
    peer.conn.set_state(State.AUTHENTICATED)
    assert peer.feed(b"GKLB3 SELECT INBOX\r\n") == [CommandReceived("GKLB3", Select("INBOX"))]
    peer.conn.set_state(State.SELECTED)
    events = peer.feed(b"GKLB4 FETCH 1 (RFC822)\r\nGKLB5 LOGOUT\r\n")
    assert [type(e) for e in events] == [CommandReceived, CommandReceived]
    assert events[1] == CommandReceived("GKLB5", Logout())
    peer.conn.set_state(State.LOGOUT)
    assert peer.feed(b"GKLB6 NOOP\r\n") == [ConnectionClosed()]
    assert peer.written == b""


def test_imaplib_login_with_literal_password() -> None:
    """imaplib sends a password with specials as a synchronizing literal and waits for "+"."""
    peer = Peer(State.NOT_AUTHENTICATED)
    events = peer.feed(b"A1 LOGIN alice {8}\r\n")
    assert events == [LiteralRequest("A1", "LOGIN", 8, True)]
    assert peer.written == b"+ Ready for literal data\r\n"
    assert peer.feed(b'p"ss\\w{}') == []
    assert peer.feed(b"\r\n") == [CommandReceived("A1", Login("alice", 'p"ss\\w{}'))]


def test_thunderbird_header_fetch() -> None:
    line = (b"5 UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
            b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")
    command = parse(line)
    assert isinstance(command, Fetch) and command.uid
    assert command.sequence.to_wire() == "1:*"
    names = [fetch_item_name(a) for a in command.attributes]
    assert names == ["UID", "RFC822.SIZE", "FLAGS",
                     "BODY[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority "
                     "References Newsgroups In-Reply-To Content-Type Reply-To)]"]


def test_pipelined_commands_parse_against_the_state_the_session_set() -> None:
    """The core never parses ahead: SELECT after LOGIN sees the state LOGIN's answer set."""
    peer = Peer(State.NOT_AUTHENTICATED)
    peer.conn.receive_data(b"a LOGIN u p\r\nb SELECT INBOX\r\nc NOOP\r\n")
    assert peer.conn.next_event() == CommandReceived("a", Login("u", "p"))
    peer.conn.set_state(State.AUTHENTICATED)
    assert peer.conn.next_event() == CommandReceived("b", Select("INBOX"))
    assert peer.conn.next_event() == CommandReceived("c", Noop())
    assert peer.conn.next_event() is NEED_DATA


def test_commands_are_split_anywhere() -> None:
    peer = Peer()
    out: list[Event] = []
    for byte in b"x1 NOOP\r\nx2 FETCH 1:3 FAST\r\n":
        out += peer.feed(bytes([byte]))
    assert [e.tag for e in out if isinstance(e, CommandReceived)] == ["x1", "x2"]


def test_bare_lf_ends_a_line_too() -> None:
    assert Peer().feed(b"a NOOP\n") == [CommandReceived("a", Noop())]


# APPEND ---------------------------------------------------------------------------------------


MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


def test_append_sync_literal_streams_after_the_command_event() -> None:
    peer = Peer(State.AUTHENTICATED)
    header = b'A003 APPEND INBOX (\\Seen) "26-Nov-2026 10:00:00 +0000" {%d}\r\n' % len(MESSAGE)
    events = peer.feed(header)
    when = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert events == [CommandReceived("A003", Append("INBOX", frozenset({"\\Seen"}), when, len(MESSAGE)))]
    assert peer.written == b"+ Ready for literal data\r\n"
    events = peer.feed(MESSAGE[:10]) + peer.feed(MESSAGE[10:]) + peer.feed(b"\r\nA004 NOOP\r\n")
    assert events == [AppendData(MESSAGE[:10]), AppendData(MESSAGE[10:]), AppendEnd("A003"),
                      CommandReceived("A004", Noop())]


def test_append_data_comes_in_bounded_chunks() -> None:
    peer = Peer(State.AUTHENTICATED, Limits(append_chunk=16))
    events = peer.feed(b"a APPEND Drafts {40}\r\n" + b"x" * 40 + b"\r\n")
    chunks = [e.data for e in events if isinstance(e, AppendData)]
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert events[-1] == AppendEnd("a")


def test_append_binary_literal8_and_timezone() -> None:
    peer = Peer(State.AUTHENTICATED)
    events = peer.feed(b'a APPEND Sent " 1-Feb-2024 23:59:01 -0530" ~{3}\r\n\x00\x01\x02\r\n')
    zone = timezone(-timedelta(hours=5, minutes=30))
    assert events == [
        CommandReceived("a", Append("Sent", frozenset(), datetime(2024, 2, 1, 23, 59, 1, tzinfo=zone), 3,
                                    binary=True)),
        AppendData(b"\x00\x01\x02"), AppendEnd("a"),
    ]


def test_append_with_literal_mailbox_name_asks_for_it_first() -> None:
    peer = Peer(State.AUTHENTICATED)
    events = peer.feed(b"a APPEND {5}\r\n")
    assert events == [LiteralRequest("a", "APPEND", 5, True)]
    events = peer.feed(b"Inbox {2+}\r\nhi\r\n")
    assert events == [CommandReceived("a", Append("INBOX", frozenset(), None, 2, synchronizing=False)),
                      AppendData(b"hi"), AppendEnd("a")]
    assert peer.written == b"+ Ready for literal data\r\n"  # only the name's literal was synchronizing


def test_append_refused_sync_literal_sends_no_and_reads_on() -> None:
    def refuse(event: Event) -> Tagged | None:
        return no("a", "no such mailbox", ResponseCode("TRYCREATE"))

    peer = Peer(State.AUTHENTICATED, decide=refuse)
    events = peer.feed(b"a APPEND Nope {10}\r\nb NOOP\r\n")
    assert events == [CommandReceived("a", Append("Nope", frozenset(), None, 10)),
                      CommandReceived("b", Noop())]
    assert peer.written == b"a NO [TRYCREATE] no such mailbox\r\n"


def test_append_refused_nonsync_literal_is_skipped_and_the_stream_stays_in_step() -> None:
    def refuse(event: Event) -> Tagged | None:
        return no("a", "over quota", ResponseCode("OVERQUOTA"))

    peer = Peer(State.AUTHENTICATED, decide=refuse)
    body = b"b NOOP\r\nc NOOP\r\n"  # looks like commands: must not be read as such
    events = peer.feed(b"a APPEND INBOX {%d+}\r\n" % len(body) + body[:5])
    append = Append("INBOX", frozenset(), None, len(body), synchronizing=False)
    assert events == [CommandReceived("a", append)]
    assert peer.feed(body[5:] + b"\r\nd NOOP\r\n") == [CommandReceived("d", Noop())]
    assert peer.written == b"a NO [OVERQUOTA] over quota\r\n"


def test_append_too_big_is_refused_by_the_core() -> None:
    peer = Peer(State.AUTHENTICATED, Limits(max_append=100))
    events = peer.feed(b"a APPEND INBOX {101}\r\nb NOOP\r\n")
    assert events == [BadCommand("a", "message too big", ResponseCode("TOOBIG"), ResponseStatus.NO),
                      CommandReceived("b", Noop())]
    events = peer.feed(b"c APPEND INBOX {101+}\r\n" + b"z" * 101 + b"\r\nd NOOP\r\n")
    assert events == [BadCommand("c", "message too big", ResponseCode("TOOBIG"), ResponseStatus.NO),
                      CommandReceived("d", Noop())]
    assert peer.written == b""


def test_multiappend_is_refused_after_the_first_message() -> None:
    peer = Peer(State.AUTHENTICATED)
    events = peer.feed(b"a APPEND INBOX {2}\r\nhi (\\Seen) {3+}\r\nabc\r\nb NOOP\r\n")
    assert [type(e) for e in events] == [CommandReceived, AppendData, BadCommand, CommandReceived]
    assert events[-1] == CommandReceived("b", Noop())


def test_literal_minus_refuses_big_nonsync_literals() -> None:
    peer = Peer(State.AUTHENTICATED, Limits(literal_plus=False))
    events = peer.feed(b"a APPEND INBOX {4097+}\r\n" + b"y" * 4097 + b"\r\nb NOOP\r\n")
    assert events == [BadCommand("a", "non-synchronizing literal over 4096 octets", ResponseCode("TOOBIG")),
                      CommandReceived("b", Noop())]
    assert [type(e) for e in peer.feed(b"c APPEND INBOX {4096+}\r\n" + b"y" * 4096 + b"\r\n")] == [
        CommandReceived, AppendData, AppendEnd]


# Command literals -----------------------------------------------------------------------------


def test_nonsync_literal_needs_no_continuation() -> None:
    peer = Peer()
    events = peer.feed(b"a SEARCH CHARSET UTF-8 SUBJECT {6+}\r\n\xc3\xa9t\xc3\xa9\r\n")
    assert events[0] == LiteralRequest("a", "SEARCH", 6, False)
    assert isinstance(events[1], CommandReceived)
    assert peer.written == b""


def test_refused_command_literal_sync_and_nonsync() -> None:
    def refuse(event: Event) -> Tagged | None:
        assert isinstance(event, LiteralRequest)
        return Tagged(event.tag, ResponseStatus.BAD, "no literals today")

    peer = Peer(State.NOT_AUTHENTICATED, decide=refuse)
    assert peer.feed(b"a LOGIN {3}\r\nb NOOP\r\n") == [LiteralRequest("a", "LOGIN", 3, True),
                                                       CommandReceived("b", Noop())]
    events = peer.feed(b"c LOGIN {11+}\r\nd NOOP\r\ne x {3+}\r\nf N\r\ng NOOP\r\n")
    assert events == [LiteralRequest("c", "LOGIN", 11, False), CommandReceived("g", Noop())]
    assert peer.written == b"a BAD no literals today\r\nc BAD no literals today\r\n"


def test_literal_over_max_literal_is_refused_toobig() -> None:
    peer = Peer(State.NOT_AUTHENTICATED, Limits(max_literal=10))
    events = peer.feed(b"a LOGIN {6}\r\nabcdef {5}\r\nb NOOP\r\n")
    assert events == [LiteralRequest("a", "LOGIN", 6, True),
                      BadCommand("a", "literal too big", ResponseCode("TOOBIG")),
                      CommandReceived("b", Noop())]


def test_too_many_literals() -> None:
    peer = Peer(limits=Limits(max_literals=2))
    events = peer.feed(b"a SEARCH TEXT {1}\r\nx TEXT {1}\r\ny TEXT {1}\r\n")
    assert isinstance(events[-1], BadCommand) and events[-1].text == "too many literals in one command"


def test_answering_is_required_before_the_next_event() -> None:
    conn = ServerConnection()
    conn.receive_data(b"a LOGIN {3}\r\n")
    assert conn.next_event() == LiteralRequest("a", "LOGIN", 3, True)
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        ServerConnection().accept_literal()


# STARTTLS, IDLE, AUTHENTICATE -----------------------------------------------------------------


def test_starttls_discards_pipelined_bytes_until_the_handshake() -> None:
    peer = Peer(State.NOT_AUTHENTICATED)
    events = peer.feed(b"a STARTTLS\r\nb LOGIN evil injected\r\n")
    assert events == [CommandReceived("a", StartTls())]
    assert peer.feed(b"c LOGIN more evil\r\n") == []  # nothing is read before the handshake
    peer.conn.starttls_done()
    assert peer.feed(b"d CAPABILITY\r\n") == [CommandReceived("d", Capability())]


def test_idle_done() -> None:
    peer = Peer()
    assert peer.feed(b"a IDLE\r\n") == [CommandReceived("a", Idle())]
    peer.conn.start_idle("a")
    assert peer.feed(b"DO") == []
    assert peer.feed(b"ne\r\nb NOOP\r\n") == [IdleDone("a"), CommandReceived("b", Noop())]


def test_idle_anything_but_done_ends_it_with_bad() -> None:
    peer = Peer()
    peer.feed(b"a IDLE\r\n")
    peer.conn.start_idle("a")
    assert peer.feed(b"b NOOP\r\nc NOOP\r\n") == [BadCommand("a", "expected DONE to end IDLE"),
                                                  CommandReceived("c", Noop())]


def test_authenticate_plain_with_sasl_ir() -> None:
    token = base64.b64encode(b"\0alice\0secret")
    command = parse(b"a AUTHENTICATE PLAIN " + token, State.NOT_AUTHENTICATED)
    assert command == Authenticate("PLAIN", b"\0alice\0secret")
    assert parse(b"a AUTHENTICATE plain =", State.NOT_AUTHENTICATED) == Authenticate("PLAIN", b"")
    assert refused(b"a AUTHENTICATE PLAIN @@@", State.NOT_AUTHENTICATED).text == "invalid base64"


def test_authenticate_plain_with_continuation_and_cancel() -> None:
    peer = Peer(State.NOT_AUTHENTICATED)
    assert peer.feed(b"a AUTHENTICATE PLAIN\r\n") == [CommandReceived("a", Authenticate("PLAIN"))]
    peer.conn.start_authenticate("a")
    token = base64.b64encode(b"\0alice\0secret")
    assert peer.feed(token + b"\r\n") == [AuthenticateData(b"\0alice\0secret")]
    peer.conn.end_authenticate()
    assert peer.feed(b"b AUTHENTICATE LOGIN\r\n") == [CommandReceived("b", Authenticate("LOGIN"))]
    peer.conn.start_authenticate("b")
    assert peer.feed(b"\r\n*\r\n") == [AuthenticateData(b""), AuthenticateData(None)]
    peer.conn.end_authenticate()
    assert peer.feed(b"c AUTHENTICATE PLAIN\r\n") == [CommandReceived("c", Authenticate("PLAIN"))]
    peer.conn.start_authenticate("c")
    assert peer.feed(b"!!\r\nd NOOP\r\n") == [BadCommand("c", "invalid base64 in AUTHENTICATE response"),
                                              CommandReceived("d", Noop())]


# States and refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "line", "text"), [
    (State.NOT_AUTHENTICATED, b"a SELECT INBOX", "SELECT not valid in this state"),
    (State.NOT_AUTHENTICATED, b"a FETCH 1 FLAGS", "FETCH not valid in this state"),
    (State.AUTHENTICATED, b"a UID FETCH 1 FLAGS", "UID FETCH not valid in this state"),
    (State.AUTHENTICATED, b"a LOGIN u p", "LOGIN not valid in this state"),
    (State.SELECTED, b"a STARTTLS", "STARTTLS not valid in this state"),
    (State.AUTHENTICATED, b"a EXPUNGE", "EXPUNGE not valid in this state"),
])
def test_commands_in_the_wrong_state(state: State, line: bytes, text: str) -> None:
    assert refused(line, state) == BadCommand("a", text)


def test_wrong_state_is_refused_before_the_literal() -> None:
    peer = Peer(State.NOT_AUTHENTICATED)
    assert peer.feed(b"a APPEND INBOX {3}\r\nb NOOP\r\n") == [
        BadCommand("a", "APPEND not valid in this state"), CommandReceived("b", Noop())]
    assert peer.written == b""


@pytest.mark.parametrize(("line", "bad"), [
    (b"a FROB", BadCommand("a", "unknown command FROB")),
    (b"a UID NOOP", BadCommand("a", "unknown UID command NOOP")),
    (b"+ NOOP", BadCommand(None, "missing or invalid tag")),
    (b"a+b NOOP", BadCommand(None, "invalid character in tag")),
    (b"NOOP", BadCommand("NOOP", "missing arguments")),
    (b"a NOOP extra", BadCommand("a", "this command takes no arguments")),
    (b'a SEARCH TEXT "alice pw', BadCommand("a", "unterminated quoted string")),
    (b'a SEARCH TEXT "al\\ice" pw', BadCommand("a", "invalid escape in quoted string")),
    (b"a FETCH 0 FLAGS", BadCommand("a", "invalid sequence set: zero is not allowed here")),
    (b"a FETCH 1: FLAGS", BadCommand("a", "invalid sequence set: expected a number")),
    (b"a FETCH abc FLAGS", BadCommand("a", "invalid sequence set: expected a number")),
    (b"a FETCH 1,,2 FLAGS", BadCommand("a", "invalid sequence set: expected a number")),
    (b"a FETCH 1 FLAGZ", BadCommand("a", "unknown fetch attribute FLAGZ")),
    (b"a FETCH 99999999999 FLAGS", BadCommand("a", "invalid sequence set: number out of range")),
    (b"a SEARCH TEXT {-1}", BadCommand("a", "invalid literal")),
    (b"a SELECT caf\xc3\xa9", BadCommand("a", "8-bit character in atom")),
    (b"a CREATE \xff", BadCommand("a", "8-bit character in atom")),
    (b"a FR\xc3\xa9B", BadCommand("a", "8-bit character in keyword")),
    (b"a SEARCH " + b"(" * 40 + b"ALL" + b")" * 40, BadCommand("a", "search keys nested too deeply")),
    (b"a SEARCH FOO", BadCommand("a", "unknown search key FOO")),
    (b"a STORE 1 +FLAGS (\\Recent)", BadCommand("a", "\\Recent cannot be stored")),
    (b"a STORE 1 +FLAGS (\\Bogus)", BadCommand("a", "unknown system flag \\Bogus")),
    (b"a SELECT &Jjo", BadCommand("a", "invalid mailbox name: unterminated &-sequence")),
])
def test_bad_input(line: bytes, bad: BadCommand) -> None:
    assert refused(line) == bad


def test_huge_literal_sizes() -> None:
    peer = Peer(State.NOT_AUTHENTICATED)
    assert peer.feed(b"a LOGIN {99999999999999999999}\r\nb NOOP\r\n") == [
        BadCommand("a", "literal size out of range"), CommandReceived("b", Noop())]
    # A non-synchronizing literal of impossible size cannot be skipped: the connection ends.
    assert peer.feed(b"c LOGIN {99999999999999999999+}\r\n") == [
        BadCommand("c", "literal size out of range"),
        ProtocolViolation("non-synchronizing literal of impossible size"), ConnectionClosed()]
    assert peer.feed(b"d NOOP\r\n") == [ConnectionClosed()]


def test_bad_charset_is_a_no_with_the_supported_list() -> None:
    bad = refused(b"a SEARCH CHARSET ISO-8859-1 TEXT x")
    assert bad.status is ResponseStatus.NO and bad.code is not None and bad.code.name == "BADCHARSET"
    assert ServerConnection().send(bad.response()) == [
        b"a NO [BADCHARSET (US-ASCII UTF-8)] charset ISO-8859-1 is not supported\r\n"]


def test_empty_line_gets_untagged_bad() -> None:
    events = Peer().feed(b"\r\n")
    assert events == [BadCommand(None, "empty command line")]
    assert isinstance(events[0], BadCommand)
    assert ServerConnection().send(events[0].response()) == [b"* BAD empty command line\r\n"]


def test_long_line_is_refused_without_buffering_it() -> None:
    peer = Peer(limits=Limits(max_line=100))
    assert peer.feed(b"a1 SEARCH TEXT " + b"x" * 200) == [BadCommand("a1", "command line too long")]
    assert len(peer.conn._buf) == 0
    assert peer.feed(b"y" * 500) == []
    assert peer.feed(b"\r\nb NOOP\r\n") == [CommandReceived("b", Noop())]


def test_long_line_announcing_a_nonsync_literal_skips_it() -> None:
    peer = Peer(limits=Limits(max_line=50))
    events = peer.feed(b"a SEARCH TEXT " + b"x" * 60 + b" {9+}\r\nc NOOP\r\n\r\nd NOOP\r\n")
    assert events == [BadCommand("a", "command line too long"), CommandReceived("d", Noop())]


def test_too_many_bad_commands_end_the_connection() -> None:
    peer = Peer(limits=Limits(max_bad_commands=3))
    events = peer.feed(b"a X\r\n" * 3 + b"b NOOP\r\n" + b"c X\r\n" * 4 + b"d NOOP\r\n")
    assert [type(e) for e in events] == [BadCommand] * 3 + [CommandReceived] + [BadCommand] * 3 + [
        ProtocolViolation, ConnectionClosed]


def test_eof_closes_and_stays_closed() -> None:
    peer = Peer()
    assert peer.feed(b"a NOOP\r\nb NO") == [CommandReceived("a", Noop())]
    assert peer.feed(b"") == [ConnectionClosed()]
    assert peer.conn.next_event() == ConnectionClosed()


def test_eof_in_the_middle_of_an_append() -> None:
    peer = Peer(State.AUTHENTICATED)
    peer.feed(b"a APPEND INBOX {10}\r\n12345")
    assert peer.feed(b"") == [ConnectionClosed()]


def test_empty_append_and_literal_where_the_tag_belongs() -> None:
    peer = Peer(State.AUTHENTICATED)
    assert peer.feed(b"a APPEND INBOX {0}\r\n\r\n") == [
        CommandReceived("a", Append("INBOX", frozenset(), None, 0)), AppendEnd("a")]
    assert peer.feed(b"{3}\r\nb NOOP\r\n") == [BadCommand(None, "missing or invalid tag"),
                                              CommandReceived("b", Noop())]
    assert peer.written == b"+ Ready for literal data\r\n"
