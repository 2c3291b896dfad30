"""The POP3 server core, byte-exact, without sockets: greeting, CAPA, STLS, USER/PASS and AUTH,
every TRANSACTION command, UPDATE, limits and hostile lines. The hypothesis fuzzing is in
test_pop3_fuzz.py and the content encoder's own tests in test_pop3_multiline.py; all use the
`Peer` harness below."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from mailprime.proto import LocalProtocolError
from mailprime.proto.pop3.multiline import encode_known, encode_whole
from mailprime.proto.pop3.server import (
    NEED_DATA,
    Authenticate,
    ConnectionClosed,
    Event,
    ProtocolViolation,
    Quit,
    Retrieve,
    ServerConnection,
    StartTls,
    State,
    Update,
)
from mailprime.proto.pop3.types import (
    CONTENT_FOLLOWS,
    LoginAccepted,
    MessageInfo,
    Pop3Capabilities,
    Pop3Limits,
    Reply,
    valid_uidl,
)

HOST = "pop.example.com"
GREETING = b"+OK pop.example.com POP3 ready\r\n"
MESSAGES = {
    1: b"Subject: one\r\n\r\nHello.\r\n",
    2: b"Subject: two\r\nX: y\r\n\r\n.leading dot\r\nline 2\r\n..two dots\r\nline 4\r\nno newline",
    3: b"Subject: three\r\n\r\n" + b"x" * 300 + b"\r\n",
}
MAILDROP = tuple(MessageInfo(len(body), f"1700000000.{n}") for n, body in MESSAGES.items())
TOTAL = sum(len(b) for b in MESSAGES.values())
LOGGED_IN = f"+OK Maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
AUTH_FAILED = b"-ERR [AUTH] Authentication failed\r\n"
PLAINTEXT_REFUSED = (b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections, "
                     b"use STLS\r\n")
WRONG_STATE = b"-ERR Command not valid in this state\r\n"
CAPA_COMMON = b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@dataclass
class Peer:
    """A permissive application around one ServerConnection: it answers every event (overridable
    per event type through `answers`), streams the MESSAGES in pieces of `piece` octets, records
    the events and everything written."""

    conn: ServerConnection
    answers: dict[type, Callable[[Event], object]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    wire: bytearray = field(default_factory=bytearray)
    contents: dict[int, bytes] = field(default_factory=lambda: dict(MESSAGES))
    maildrop: tuple[MessageInfo, ...] = MAILDROP
    piece: int = 7
    auto_tls: bool = True  # call tls_started() right after the +OK to STLS

    @classmethod
    def make(cls, *, tls: bool = True, auth: bool = True, stls: bool = True, greet: bool = True,
             limits: Pop3Limits | None = None, **kw: object) -> Peer:
        conn = ServerConnection(Pop3Capabilities(HOST, stls=stls), limits or Pop3Limits(),
                                tls_active=tls, auth_allowed=auth)
        peer = cls(conn, **kw)  # type: ignore[arg-type]
        if greet:
            peer.wire += conn.send(Reply.positive(f"{HOST} POP3 ready"))
        return peer

    @classmethod
    def logged_in(cls, **kw: object) -> Peer:
        peer = cls.make(**kw)  # type: ignore[arg-type]
        assert peer.feed(b"USER alice\r\nPASS secret\r\n") == b"+OK\r\n" + LOGGED_IN
        peer.events.clear()
        return peer

    def default_answer(self, event: Event) -> object:
        match event:
            case StartTls():
                return Reply.positive("Begin TLS negotiation")
            case Authenticate():
                if event.authcid == "alice" and event.password == "secret":
                    return LoginAccepted(self.maildrop)
                return Reply.negative("Authentication failed", "AUTH")
            case Retrieve():
                return CONTENT_FOLLOWS
            case Update():
                return Reply.positive(f"{HOST} POP3 server signing off")
        return None

    def feed(self, data: bytes) -> bytes:
        """Feeds bytes (b"" is EOF), answers every event; returns what was written because of them."""
        self.conn.receive_data(data)
        return self.pump()

    def pump(self) -> bytes:
        """Answers every event the bytes received so far produce; returns what was written."""
        start = len(self.wire)
        for _ in range(100_000):  # bounded: each round consumes input or ends
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            answer = self.answers.get(type(event), self.default_answer)(event)
            if answer is None:
                if self.conn.awaiting_answer:
                    break  # the test answers this one itself
                continue
            self.wire += self.conn.send(answer)  # type: ignore[arg-type]
            if answer is CONTENT_FOLLOWS:
                assert isinstance(event, Retrieve)
                self.stream(self.contents[event.number])
            if isinstance(event, StartTls) and self.conn.state is State.TLS and self.auto_tls:
                self.conn.tls_started(auth_allowed=True)
        else:
            raise AssertionError("event loop did not settle")
        self.wire += self.conn.data_to_send()
        return bytes(self.wire[start:])

    def stream(self, content: bytes) -> None:
        for i in range(0, len(content), self.piece):
            if self.conn.content_complete:
                break
            self.wire += self.conn.send_content(content[i:i + self.piece])
        self.wire += self.conn.end_content()


# Greeting, CAPA, STLS --------------------------------------------------------------------------


def test_greeting_then_authorization() -> None:
    peer = Peer.make()
    assert bytes(peer.wire) == GREETING
    assert peer.conn.state is State.AUTHORIZATION


def test_negative_greeting_closes() -> None:
    peer = Peer.make(greet=False)
    assert peer.conn.send(Reply.negative("Server busy", "SYS/TEMP")) == b"-ERR [SYS/TEMP] Server busy\r\n"
    assert peer.conn.must_close
    assert peer.feed(b"USER alice\r\n") == b""
    assert peer.events == [ConnectionClosed()]


def test_input_before_the_greeting_waits_for_it() -> None:
    peer = Peer.make(greet=False)
    assert peer.feed(b"CAPA\r\n") == b""
    peer.wire += peer.conn.send(Reply.positive("ready"))
    assert peer.pump().startswith(b"+OK Capability list follows\r\n")


def test_capa_before_tls_hides_plaintext_logins() -> None:
    peer = Peer.make(tls=False, auth=False)
    assert peer.feed(b"CAPA\r\n") == (
        b"+OK Capability list follows\r\n" + CAPA_COMMON + b"STLS\r\nIMPLEMENTATION mailprime\r\n.\r\n")


def test_capa_after_stls_offers_user_and_sasl_and_no_stls() -> None:
    peer = Peer.make(tls=False, auth=False)
    assert peer.feed(b"STLS\r\n") == b"+OK Begin TLS negotiation\r\n"
    assert peer.conn.tls_active
    assert peer.feed(b"CAPA\r\n") == (
        b"+OK Capability list follows\r\n" + CAPA_COMMON
        + b"USER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION mailprime\r\n.\r\n")


def test_capa_on_a_loopback_listener_that_allows_plaintext() -> None:
    peer = Peer.make(tls=False, auth=True)
    assert peer.feed(b"capa\r\n") == (
        b"+OK Capability list follows\r\n" + CAPA_COMMON
        + b"STLS\r\nUSER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION mailprime\r\n.\r\n")


def test_capa_is_the_same_in_transaction_state() -> None:
    peer = Peer.logged_in()
    assert peer.feed(b"CAPA\r\n") == (
        b"+OK Capability list follows\r\n" + CAPA_COMMON
        + b"USER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION mailprime\r\n.\r\n")
    assert peer.feed(b"CAPA x\r\n") == b"-ERR Syntax: CAPA\r\n"


def test_plaintext_logins_are_refused_before_tls() -> None:
    peer = Peer.make(tls=False, auth=False)
    wire = peer.feed(b"USER alice\r\nPASS secret\r\nAUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n"
                     b"AUTH\r\n")
    assert wire == PLAINTEXT_REFUSED * 4
    assert not any(isinstance(e, Authenticate) for e in peer.events)
    assert peer.conn.auth_failures == 0  # refused before any credentials were looked at


def test_stls_discards_plaintext_pipelined_after_it() -> None:
    """CVE-2011-0411: what a man in the middle appends after STLS never runs inside TLS."""
    peer = Peer.make(tls=False, auth=False, auto_tls=False)
    assert peer.feed(b"STLS\r\nUSER alice\r\nPASS secret\r\n") == b"+OK Begin TLS negotiation\r\n"
    assert peer.conn.state is State.TLS
    assert peer.feed(b"CAPA\r\n") == b""  # plaintext before the handshake is dropped too
    peer.conn.tls_started(auth_allowed=True)
    assert peer.pump() == b""
    assert peer.events == [StartTls()]
    assert peer.feed(b"NOOP\r\n") == WRONG_STATE  # still AUTHORIZATION: USER/PASS never ran


def test_stls_refusals() -> None:
    assert Peer.make(tls=True).feed(b"STLS\r\n") == b"-ERR TLS already active\r\n"
    assert Peer.make(tls=False, stls=False).feed(b"STLS\r\n") == b"-ERR STLS not available\r\n"
    assert Peer.make(tls=False).feed(b"STLS now\r\n") == b"-ERR Syntax: STLS\r\n"
    peer = Peer.make(tls=False, answers={StartTls: lambda e: Reply.negative("TLS not available now",
                                                                          "SYS/TEMP")})
    assert peer.feed(b"STLS\r\nCAPA\r\n").startswith(
        b"-ERR [SYS/TEMP] TLS not available now\r\n+OK Capability list follows\r\n")
    assert not peer.conn.tls_active
    assert Peer.logged_in().feed(b"STLS\r\n") == WRONG_STATE


def test_tls_started_without_stls_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Peer.make().conn.tls_started(auth_allowed=True)


# USER / PASS -------------------------------------------------------------------------------------


def test_user_pass_login() -> None:
    peer = Peer.make()
    assert peer.feed(b"USER alice\r\n") == b"+OK\r\n"
    assert peer.feed(b"PASS secret\r\n") == LOGGED_IN
    assert peer.events == [Authenticate("USER", "", "alice", "secret")]
    assert peer.conn.state is State.TRANSACTION


def test_pass_keeps_spaces_in_the_password() -> None:
    peer = Peer.make(answers={Authenticate: lambda e: Reply.negative("Authentication failed", "AUTH")})
    peer.feed(b"USER alice\r\nPASS  two words \r\n")
    (event,) = [e for e in peer.events if isinstance(e, Authenticate)]
    assert event.password == " two words "
    assert "two words" not in repr(event)  # passwords stay out of reprs (and logs)


def test_pass_needs_user_first_and_an_argument() -> None:
    peer = Peer.make()
    assert peer.feed(b"PASS secret\r\n") == b"-ERR USER first\r\n"
    assert peer.feed(b"USER alice\r\nPASS\r\n") == b"+OK\r\n-ERR Syntax: PASS password\r\n"
    assert peer.feed(b"PASS secret\r\n") == b"-ERR USER first\r\n"  # a PASS uses up the USER
    assert peer.feed(b"USER\r\nUSER a b\r\n") == b"-ERR Syntax: USER name\r\n" * 2
    assert peer.conn.auth_failures == 0


def test_failed_logins_are_counted_and_the_last_one_closes() -> None:
    peer = Peer.make()
    assert peer.feed(b"USER alice\r\nPASS wrong\r\n") == b"+OK\r\n" + AUTH_FAILED
    assert peer.conn.auth_failures == 1
    assert peer.feed(b"USER alice\r\nPASS wrong\r\n") == b"+OK\r\n" + AUTH_FAILED
    assert not peer.conn.must_close
    assert peer.feed(b"USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS secret\r\n") == (
        b"+OK\r\n" + AUTH_FAILED)
    assert peer.conn.must_close and peer.conn.auth_failures == 3
    assert peer.events[-1] == ConnectionClosed()


def test_a_server_side_failure_is_not_an_authentication_failure() -> None:
    peer = Peer.make(answers={Authenticate: lambda e: Reply.negative("Try again later", "SYS/TEMP")})
    for _ in range(5):
        assert peer.feed(b"USER alice\r\nPASS secret\r\n") == b"+OK\r\n-ERR [SYS/TEMP] Try again later\r\n"
    assert peer.conn.auth_failures == 0 and not peer.conn.must_close


def test_login_answers_are_checked() -> None:
    peer = Peer.make(answers={Authenticate: lambda e: None})
    peer.feed(b"USER alice\r\nPASS secret\r\n")
    with pytest.raises(LocalProtocolError):
        peer.conn.send(Reply.positive("in"))  # success must carry the maildrop
    with pytest.raises(LocalProtocolError):
        peer.conn.send(LoginAccepted((MessageInfo(1, "bad uidl"),)))  # RFC 1939 7: no spaces
    with pytest.raises(LocalProtocolError):
        peer.conn.next_event()  # the Authenticate is still unanswered


def test_valid_uidl_is_rfc_1939_7() -> None:
    """1 to 70 characters, each 0x21..0x7E: every character tried, and the length bounds."""
    for code in range(0x300):
        assert valid_uidl(chr(code)) is (0x21 <= code <= 0x7E), hex(code)
    assert valid_uidl("a" * 70) and not valid_uidl("a" * 71) and not valid_uidl("")
    assert not valid_uidl("17.\u00e9") and not valid_uidl("1 2") and valid_uidl("1700000000.42")


# AUTH (RFC 5034) -----------------------------------------------------------------------------


def test_auth_plain_with_initial_response() -> None:
    peer = Peer.make()
    assert peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n") == LOGGED_IN
    assert peer.events == [Authenticate("PLAIN", "", "alice", "secret")]


def test_auth_plain_with_continuation() -> None:
    peer = Peer.make()
    assert peer.feed(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert peer.conn.state is State.SASL
    assert peer.feed(b64(b"admin\0alice\0secret") + b"\r\n") == LOGGED_IN
    assert peer.events == [Authenticate("PLAIN", "admin", "alice", "secret")]


def test_auth_login() -> None:
    peer = Peer.make()
    assert peer.feed(b"AUTH LOGIN\r\n") == b"+ " + b64(b"Username:") + b"\r\n"
    assert peer.feed(b64(b"alice") + b"\r\n") == b"+ " + b64(b"Password:") + b"\r\n"
    assert peer.feed(b64(b"secret") + b"\r\n") == LOGGED_IN


def test_auth_cancel_bad_base64_and_unknown_mechanism() -> None:
    peer = Peer.make()
    assert peer.feed(b"AUTH PLAIN\r\n*\r\n") == b"+ \r\n-ERR Authentication cancelled\r\n"
    assert peer.feed(b"AUTH PLAIN\r\n!!!\r\n") == b"+ \r\n-ERR Invalid base64 data\r\n"
    assert peer.feed(b"AUTH PLAIN " + b64(b"alice-no-nuls") + b"\r\n") == (
        b"-ERR Malformed authentication response\r\n")
    assert peer.feed(b"AUTH PLAIN =\r\n") == b"-ERR Malformed authentication response\r\n"
    assert peer.feed(b"AUTH CRAM-MD5\r\n") == b"-ERR Unrecognized authentication mechanism\r\n"
    assert peer.conn.state is State.AUTHORIZATION and peer.conn.auth_failures == 0


def test_auth_without_mechanism_lists_them() -> None:
    assert Peer.make().feed(b"AUTH\r\n") == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"


def test_auth_failure_counts() -> None:
    peer = Peer.make()
    assert peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n") == AUTH_FAILED
    assert peer.conn.auth_failures == 1


def test_sasl_response_may_exceed_the_command_limit_but_not_its_own() -> None:
    peer = Peer.make(limits=Pop3Limits(max_sasl_line=100))
    long_password = b"p" * 200
    assert peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0" + long_password) + b"\r\n") == (
        b"-ERR Command line too long (RFC 2449 4)\r\n")
    assert peer.feed(b"AUTH PLAIN\r\n" + b64(b"\0alice\0" + long_password) + b"\r\n") == (
        b"+ \r\n-ERR Authentication exchange: Line too long\r\n")
    peer = Peer.make()
    assert peer.feed(b"AUTH PLAIN\r\n" + b64(b"\0alice\0" + long_password) + b"\r\n") == (
        b"+ \r\n" + AUTH_FAILED)


# TRANSACTION ---------------------------------------------------------------------------------


def test_stat_list_uidl() -> None:
    peer = Peer.logged_in()
    sizes = [len(b) for b in MESSAGES.values()]
    assert peer.feed(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()
    assert peer.feed(b"LIST\r\n") == (
        f"+OK 3 messages ({TOTAL} octets)\r\n1 {sizes[0]}\r\n2 {sizes[1]}\r\n3 {sizes[2]}\r\n.\r\n"
    ).encode()
    assert peer.feed(b"LIST 2\r\n") == f"+OK 2 {sizes[1]}\r\n".encode()
    assert peer.feed(b"UIDL\r\n") == (
        b"+OK unique-id listing follows\r\n1 1700000000.1\r\n2 1700000000.2\r\n3 1700000000.3\r\n.\r\n")
    assert peer.feed(b"uidl 3\r\n") == b"+OK 3 1700000000.3\r\n"
    assert peer.events == []  # the core answers all of these itself


def test_message_number_errors() -> None:
    peer = Peer.logged_in()
    assert peer.feed(b"LIST 0\r\n") == b"-ERR No such message, only 3 in maildrop\r\n"
    assert peer.feed(b"LIST 4\r\n") == b"-ERR No such message, only 3 in maildrop\r\n"
    assert peer.feed(b"RETR x\r\n") == b"-ERR Invalid message number\r\n"
    assert peer.feed(b"RETR -1\r\n") == b"-ERR Invalid message number\r\n"
    assert peer.feed(b"RETR\r\n") == b"-ERR Invalid message number\r\n"
    assert peer.feed("RETR ١\r\n".encode()) == b"-ERR Invalid message number\r\n"  # Arabic digit 1
    assert peer.feed(b"DELE 99999999999999999999999\r\n") == b"-ERR No such message, only 3 in maildrop\r\n"
    assert peer.feed(b"TOP 1\r\n") == b"-ERR Syntax: TOP message lines\r\n"
    assert peer.feed(b"TOP 1 x\r\n") == b"-ERR Invalid number of lines\r\n"
    assert not any(isinstance(e, Retrieve) for e in peer.events)


def test_dele_marks_and_rset_unmarks() -> None:
    peer = Peer.logged_in()
    size1 = len(MESSAGES[1])
    assert peer.feed(b"DELE 1\r\n") == b"+OK Message 1 deleted\r\n"
    assert peer.feed(b"DELE 1\r\n") == b"-ERR Message 1 already deleted\r\n"
    assert peer.feed(b"RETR 1\r\nLIST 1\r\nUIDL 1\r\nTOP 1 0\r\n") == (
        b"-ERR Message 1 already deleted\r\n" * 4)
    assert peer.feed(b"STAT\r\n") == f"+OK 2 {TOTAL - size1}\r\n".encode()
    assert peer.feed(b"LIST\r\n").startswith(f"+OK 2 messages ({TOTAL - size1} octets)\r\n2 ".encode())
    assert b"\r\n1 " not in peer.feed(b"UIDL\r\n")
    assert peer.feed(b"RSET\r\n") == f"+OK Maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
    assert peer.feed(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()
    assert peer.feed(b"NOOP\r\n") == b"+OK\r\n"
    assert peer.feed(b"NOOP x\r\nRSET x\r\nSTAT x\r\n") == (
        b"-ERR Syntax: NOOP\r\n-ERR Syntax: RSET\r\n-ERR Syntax: STAT\r\n")


def test_retr_streams_byte_stuffed_content() -> None:
    peer = Peer.logged_in()
    body = MESSAGES[2]
    assert peer.feed(b"RETR 2\r\n") == (
        f"+OK {len(body)} octets\r\n".encode()
        + b"Subject: two\r\nX: y\r\n\r\n..leading dot\r\nline 2\r\n...two dots\r\nline 4\r\n"
        + b"no newline\r\n.\r\n")
    assert peer.events == [Retrieve(2, None, len(body))]
    assert peer.feed(b"RETR 1\r\n") == f"+OK {len(MESSAGES[1])} octets\r\n".encode() + MESSAGES[1] + b".\r\n"


def test_retr_sends_a_message_encoded_ahead_the_same_way() -> None:
    streamed = Peer.logged_in()
    expected = streamed.feed(b"RETR 2\r\nRETR 3\r\nSTAT\r\n")
    peer = Peer.logged_in(answers={Retrieve: lambda e: None})
    peer.conn.receive_data(b"RETR 2\r\nRETR 3\r\nSTAT\r\n")
    wire = b""
    for number in (2, 3):
        assert peer.conn.next_event() == Retrieve(number, None, len(MESSAGES[number]))
        wire += peer.conn.send(CONTENT_FOLLOWS)
        wire += b"".join(peer.conn.send_encoded([encode_whole(MESSAGES[number])]))
    assert peer.conn.next_event() is NEED_DATA
    assert wire + peer.conn.data_to_send() == expected


def test_send_encoded_hands_back_the_pieces_it_was_given() -> None:
    """The body's own pieces, not a copy of them: the driver joins a batch once."""
    peer = Peer.logged_in(answers={Retrieve: lambda e: None})
    content = MESSAGES[2]
    pieces = encode_known(content, crlf_only=True, dot_lines=True)
    assert len(pieces) > 2  # slices around the stuffed dots
    peer.conn.receive_data(b"RETR 2\r\nNOOP\r\n")
    assert peer.conn.next_event() == Retrieve(2, None, len(content))
    status = peer.conn.send(CONTENT_FOLLOWS)
    out = peer.conn.send_encoded(pieces)
    assert len(out) == len(pieces) and all(a is b for a, b in zip(out, pieces, strict=True))
    assert peer.conn.next_event() is NEED_DATA  # NOOP, answered by the core
    assert status + b"".join(out) + peer.conn.data_to_send() == (
        f"+OK {len(content)} octets\r\n".encode() + encode_whole(content) + b"+OK\r\n")


def test_send_encoded_is_for_a_retr_not_yet_begun() -> None:
    peer = Peer.logged_in(answers={Retrieve: lambda e: None})
    with pytest.raises(LocalProtocolError):
        peer.conn.send_encoded([b".\r\n"])  # no RETR at all
    peer.feed(b"TOP 1 0\r\n")
    peer.conn.send(CONTENT_FOLLOWS)
    with pytest.raises(LocalProtocolError):
        peer.conn.send_encoded([encode_whole(MESSAGES[1])])  # TOP cuts: never encoded ahead
    peer.conn.end_content()
    peer.feed(b"RETR 1\r\n")
    peer.conn.send(CONTENT_FOLLOWS)
    with pytest.raises(LocalProtocolError):
        peer.conn.send_encoded([b"Subject: one\r\n"])  # not what encode_whole makes
    with pytest.raises(LocalProtocolError):
        peer.conn.send_encoded([])
    peer.conn.send_content(b"Subject")
    with pytest.raises(LocalProtocolError):
        peer.conn.send_encoded([encode_whole(MESSAGES[1])])  # part of it is out already


@pytest.mark.parametrize("piece", [1, 2, 3, 1000])
def test_top(piece: int) -> None:
    peer = Peer.logged_in(piece=piece)
    assert peer.feed(b"TOP 2 0\r\n") == (
        b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n.\r\n")
    assert peer.feed(b"TOP 2 2\r\n") == (
        b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n..leading dot\r\nline 2\r\n.\r\n")
    assert peer.feed(b"TOP 2 100\r\n") == (
        b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n..leading dot\r\nline 2\r\n"
        b"...two dots\r\nline 4\r\nno newline\r\n.\r\n")
    assert peer.events == [Retrieve(2, 0, len(MESSAGES[2])), Retrieve(2, 2, len(MESSAGES[2])),
                           Retrieve(2, 100, len(MESSAGES[2]))]


def test_retrieve_refused_by_the_application() -> None:
    peer = Peer.logged_in(answers={Retrieve: lambda e: Reply.negative("Message was removed")})
    assert peer.feed(b"RETR 1\r\nSTAT\r\n") == f"-ERR Message was removed\r\n+OK 3 {TOTAL}\r\n".encode()
    with pytest.raises(LocalProtocolError):
        peer.conn.send_content(b"x")


def test_retrieve_answers_are_checked() -> None:
    peer = Peer.logged_in(answers={Retrieve: lambda e: None})
    peer.feed(b"RETR 1\r\n")
    with pytest.raises(LocalProtocolError):
        peer.conn.send(Reply.positive("here"))  # content starts with CONTENT_FOLLOWS only
    peer.conn.send(CONTENT_FOLLOWS)
    with pytest.raises(LocalProtocolError):
        peer.conn.next_event()  # the response is still being streamed
    with pytest.raises(LocalProtocolError):
        peer.conn.shutdown(Reply.negative("bye"))


def test_abort_content_closes_without_a_terminator() -> None:
    peer = Peer.logged_in(answers={Retrieve: lambda e: None})
    peer.feed(b"RETR 3\r\nSTAT\r\n")
    out = peer.conn.send(CONTENT_FOLLOWS) + peer.conn.send_content(b"Subject: three\r\n\r\nxx")
    peer.conn.abort_content()
    assert out == f"+OK {len(MESSAGES[3])} octets\r\nSubject: three\r\n\r\nxx".encode()
    assert peer.conn.must_close
    assert peer.conn.data_to_send() == b""  # the pipelined STAT is never answered
    assert peer.conn.next_event() == ConnectionClosed()


def test_pipelined_session_in_one_packet() -> None:
    peer = Peer.make()
    wire = peer.feed(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST 1\r\nRETR 1\r\nDELE 1\r\n"
                     b"UIDL\r\nQUIT\r\n")
    one = MESSAGES[1]
    assert wire == (
        b"+OK Capability list follows\r\n" + CAPA_COMMON
        + b"USER\r\nSASL PLAIN LOGIN\r\nIMPLEMENTATION mailprime\r\n.\r\n"
        + b"+OK\r\n" + LOGGED_IN + f"+OK 3 {TOTAL}\r\n+OK 1 {len(one)}\r\n".encode()
        + f"+OK {len(one)} octets\r\n".encode() + one + b".\r\n"
        + b"+OK Message 1 deleted\r\n"
        + b"+OK unique-id listing follows\r\n2 1700000000.2\r\n3 1700000000.3\r\n.\r\n"
        + b"+OK pop.example.com POP3 server signing off\r\n")
    assert peer.events == [Authenticate("USER", "", "alice", "secret"), Retrieve(1, None, len(one)),
                           Update((1,)), ConnectionClosed()]
    assert peer.conn.must_close


# QUIT, UPDATE and the end of a connection -----------------------------------------------------


def test_quit_in_authorization() -> None:
    peer = Peer.make()
    assert peer.feed(b"QUIT\r\nCAPA\r\n") == b"+OK pop.example.com POP3 server signing off\r\n"
    assert peer.events == [Quit(), ConnectionClosed()]


def test_quit_in_transaction_asks_for_the_update() -> None:
    peer = Peer.logged_in(answers={Update: lambda e: Reply.negative("Some deleted messages not removed",
                                                                    "SYS/TEMP")})
    assert peer.feed(b"DELE 3\r\nDELE 1\r\nQUIT\r\n") == (
        b"+OK Message 3 deleted\r\n+OK Message 1 deleted\r\n"
        b"-ERR [SYS/TEMP] Some deleted messages not removed\r\n")
    assert peer.events == [Update((1, 3)), ConnectionClosed()]


def test_quit_after_rset_deletes_nothing() -> None:
    peer = Peer.logged_in()
    peer.feed(b"DELE 1\r\nRSET\r\nQUIT\r\n")
    assert peer.events[0] == Update(())


def test_eof_in_transaction_never_updates() -> None:
    peer = Peer.logged_in()
    assert peer.feed(b"DELE 1\r\n") == b"+OK Message 1 deleted\r\n"
    assert peer.feed(b"") == b""
    assert peer.events == [ConnectionClosed()]
    assert peer.conn.next_event() == ConnectionClosed()  # and again


def test_eof_after_a_partial_line() -> None:
    peer = Peer.logged_in()
    assert peer.feed(b"QUI") == b""
    assert peer.feed(b"") == b""
    assert peer.events == [ConnectionClosed()]


def test_shutdown_between_commands() -> None:
    peer = Peer.logged_in()
    peer.feed(b"DELE 1\r\n")
    assert peer.conn.shutdown(Reply.negative("Server shutting down", "SYS/TEMP")) == (
        b"-ERR [SYS/TEMP] Server shutting down\r\n")
    assert peer.conn.must_close
    assert peer.conn.shutdown(Reply.negative("again")) == b""
    assert peer.feed(b"QUIT\r\n") == b""
    assert not any(isinstance(e, Update) for e in peer.events)
    with pytest.raises(LocalProtocolError):
        peer.conn.send(Reply.positive())


# States, strikes and hostile lines ------------------------------------------------------------


def test_commands_in_the_wrong_state() -> None:
    peer = Peer.make()
    assert peer.feed(b"STAT\r\nRETR 1\r\nDELE 1\r\nNOOP\r\nRSET\r\nLIST\r\nTOP 1 1\r\nUIDL\r\n") == (
        WRONG_STATE * 8)
    peer = Peer.logged_in()
    assert peer.feed(b"USER alice\r\nPASS secret\r\nAUTH PLAIN\r\n") == WRONG_STATE * 3
    assert peer.feed(b"APOP alice 0123456789abcdef\r\n") == b"-ERR APOP not supported\r\n"
    assert peer.feed(b"LAST\r\n") == b"-ERR LAST not supported\r\n"  # RFC 1725, gone in 1939


def test_unknown_commands_strike_until_closed() -> None:
    peer = Peer.make(limits=Pop3Limits(max_unknown_commands=2))
    assert peer.feed(b"FROB\r\nXYZZY\r\n") == b"-ERR Unknown command\r\n" * 2
    assert peer.feed(b"BLAH\r\nCAPA\r\n") == b"-ERR Too many errors, closing\r\n"
    assert peer.conn.must_close
    assert [e for e in peer.events if isinstance(e, ProtocolViolation)][-1].close


def test_long_lines_are_refused_and_the_reader_resynchronises() -> None:
    peer = Peer.make()
    line = b"USER " + b"a" * 250 + b"\r\n"  # 257 octets > RFC 2449's 255
    assert peer.feed(line + b"USER alice\r\n") == b"-ERR Command line too long (RFC 2449 4)\r\n+OK\r\n"
    assert peer.feed(b"USER " + b"b" * 248 + b"\r\n") == b"+OK\r\n"  # exactly 255 octets
    # A long line arriving in pieces is reported once, when it ends.
    assert peer.feed(b"x" * 300) == b""
    assert peer.feed(b"y" * 300) == b""
    assert peer.feed(b"z\r\nNOOP\r\n") == b"-ERR Command line too long (RFC 2449 4)\r\n" + WRONG_STATE


def test_nul_bare_lf_and_bad_utf8() -> None:
    peer = Peer.make()
    assert peer.feed(b"USER al\0ice\r\n") == b"-ERR NUL or bare CR not allowed in a command\r\n"
    assert peer.feed(b"USER alice\n") == b"-ERR Bare LF not allowed, end lines with CRLF\r\n"
    assert peer.feed(b"USER \xff\r\n") == b"-ERR Command is not valid UTF-8\r\n"
    assert peer.feed(b"USER a\rb\r\n") == b"-ERR NUL or bare CR not allowed in a command\r\n"
    assert peer.feed("USER jösé\r\n".encode()) == b"+OK\r\n"


def test_send_without_a_pending_event_is_a_local_error() -> None:
    peer = Peer.make()
    with pytest.raises(LocalProtocolError):
        peer.conn.send(Reply.positive())
    for call in (peer.conn.end_content, peer.conn.abort_content):
        with pytest.raises(LocalProtocolError):
            call()


def test_reply_text_cannot_forge_a_second_line() -> None:
    assert Reply.negative("boom\r\n+OK fake", "SYS/TEMP").to_bytes() == b"-ERR [SYS/TEMP] boom +OK fake\r\n"
    assert Reply.positive().to_bytes() == b"+OK\r\n"
    assert Reply(True, "x", "AUTH").to_bytes() == b"+OK x\r\n"  # codes are for -ERR only
