"""The SMTP server core, byte-exact, without sockets: greeting, EHLO, the command sequence,
parameters, STARTTLS, AUTH, limits. DATA/BDAT and hostile input are in test_smtp_server_data.py,
the hypothesis fuzzing in test_smtp_server_fuzz.py; all three use the `Peer` harness below."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from mailprime.proto import LocalProtocolError
from mailprime.proto.smtp.server import (
    _DISPATCH,
    _KNOWN_VERBS,
    _REFUSALS,
    GO_AHEAD,
    NEED_DATA,
    AuthRequest,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    EarlyTalker,
    Event,
    Helo,
    Mail,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    ServerConnection,
    StartTls,
    State,
)
from mailprime.proto.smtp.types import MailParams, RcptParams, Reply, ServerCapabilities, ServerLimits

HOST = "mx.example.com"
GREETING = b"220 mx.example.com ESMTP\r\n"
EHLO_FULL = (
    b"250-mx.example.com\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 1000000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-CHUNKING\r\n"
    b"250 DSN\r\n"
)
OK_MAIL = b"250 2.1.0 Ok\r\n"
OK_RCPT = b"250 2.1.5 Ok\r\n"
QUEUED = b"250 2.0.0 Queued\r\n"
TOO_BIG = b"552 5.3.4 Message size exceeds fixed maximum message size"
LONG_ENVID = b"501 5.5.4 ENVID longer than 100 characters (RFC 3461 4.4)"
BAD_NOTIFY = b"501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"
BAD_ORCPT = b"501 5.5.4 ORCPT must be addr-type;xtext (RFC 3461 4.2)"
IN_TRANSACTION = b"503 5.5.1 Not allowed during a mail transaction"


def caps(**kw: object) -> ServerCapabilities:
    base: dict[str, object] = {"hostname": HOST, "starttls": True, "auth_mechanisms": ("PLAIN", "LOGIN")}
    base.update(kw)
    return ServerCapabilities(**base)  # type: ignore[arg-type]


def limits(**kw: int) -> ServerLimits:
    return ServerLimits(**{"max_message_size": 1_000_000, **kw})


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@dataclass
class Peer:
    """A permissive application around one ServerConnection: it answers every event (overridable
    per event type through `answers`), records the events and everything written."""

    conn: ServerConnection
    answers: dict[type, Callable[[Event], object]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    wire: bytearray = field(default_factory=bytearray)
    auto_tls: bool = True  # call tls_started() right after a 220 to STARTTLS

    @classmethod
    def make(cls, *, tls: bool = False, auth: bool = True, greet: bool = True, **kw: object) -> Peer:
        lim = kw.pop("limits", limits())
        conn = ServerConnection(caps(**kw), lim, tls_active=tls, auth_allowed=auth)  # type: ignore[arg-type]
        peer = cls(conn)
        if greet:
            peer.wire += conn.send(Reply(220, f"{HOST} ESMTP"))
        return peer

    def default_answer(self, event: Event) -> object:
        match event:
            case EarlyTalker():
                return Reply(554, "Too eager", "5.7.1")
            case Helo():
                return Reply(250, HOST)
            case StartTls():
                return Reply(220, "Ready to start TLS", "2.0.0")
            case AuthRequest():
                ok = event.authcid == "alice" and event.password == "secret"
                return Reply(235, "Authenticated", "2.7.0") if ok else Reply(535, "Bad credentials", "5.7.8")
            case Mail():
                return Reply(250, "Ok", "2.1.0")
            case Rcpt():
                if event.recipient.startswith("reject"):
                    return Reply(550, "No such user", "5.1.1")
                return Reply(250, "Ok", "2.1.5")
            case DataStart():
                return GO_AHEAD
            case DataEnd():
                return Reply(250, "Queued", "2.0.0")
        return None

    def feed(self, data: bytes) -> bytes:
        """Feeds bytes, answers every event; returns what was written because of them."""
        start = len(self.wire)
        self.conn.receive_data(data)
        for _ in range(100_000):  # bounded: each round consumes input or ends
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            answer = self.answers.get(type(event), self.default_answer)(event)
            if answer is not None:
                self.wire += self.conn.send(answer)  # type: ignore[arg-type]
                if isinstance(event, StartTls) and self.conn.state is State.TLS and self.auto_tls:
                    self.conn.tls_started(auth_allowed=True)
        else:
            raise AssertionError("event loop did not settle")
        self.wire += self.conn.data_to_send()
        return bytes(self.wire[start:])

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def session(*, greet_ehlo: bool = True, **kw: object) -> Peer:
    peer = Peer.make(**kw)
    if greet_ehlo:
        peer.feed(b"EHLO client.example\r\n")
        peer.events.clear()
    return peer


# Greeting and EHLO -----------------------------------------------------------------------------


def test_greeting_then_ehlo_lists_every_extension() -> None:
    peer = Peer.make()
    assert bytes(peer.wire) == GREETING
    assert peer.feed(b"EHLO client.example\r\n") == EHLO_FULL
    assert peer.events == [Helo("client.example", True)]
    assert peer.conn.state is State.READY


def test_helo_gets_a_plain_250_without_extensions() -> None:
    peer = Peer.make()
    assert peer.feed(b"HELO client.example\r\n") == b"250 mx.example.com\r\n"
    assert peer.events == [Helo("client.example", False)]


def test_ehlo_without_starttls_or_auth_when_not_offered() -> None:
    peer = Peer.make(auth=False, starttls=False, chunking=False, dsn=False, smtputf8=False, pipelining=False)
    assert peer.feed(b"EHLO c\r\n") == (
        b"250-mx.example.com\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
    )


def test_ehlo_after_tls_drops_starttls() -> None:
    peer = Peer.make(tls=True)
    assert b"STARTTLS" not in peer.feed(b"EHLO c\r\n")
    assert b"250-AUTH PLAIN LOGIN\r\n" in bytes(peer.wire)


def test_ehlo_needs_an_argument() -> None:
    peer = Peer.make()
    assert peer.feed(b"EHLO\r\nHELO \r\n") == (
        b"501 5.5.4 Syntax: EHLO hostname\r\n501 5.5.4 Syntax: HELO hostname\r\n"
    )


def test_refused_helo_keeps_the_state() -> None:
    peer = Peer.make()
    peer.answers[Helo] = lambda e: Reply(550, "Go away", "5.7.1")
    assert peer.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n") == (
        b"550 5.7.1 Go away\r\n503 5.5.1 Send HELO/EHLO first\r\n"
    )


def test_early_talker_is_reported_and_can_be_refused() -> None:
    peer = Peer.make(greet=False)
    # the EHLO that came too early is then read in the refused state
    assert peer.feed(b"EHLO eager\r\n") == b"554 5.7.1 Too eager\r\n503 5.5.1 Bad sequence of commands\r\n"
    assert peer.events[0] == EarlyTalker()
    # RFC 5321 3.1: after a 554 greeting only QUIT is served; the rest gets 503
    assert peer.feed(b"MAIL FROM:<a@b.example>\r\nQUIT\r\n") == (
        b"503 5.5.1 Bad sequence of commands\r\n221 2.0.0 mx.example.com closing connection\r\n"
    )
    assert peer.conn.must_close


def test_early_talker_may_be_let_through() -> None:
    peer = Peer.make(greet=False)
    peer.answers[EarlyTalker] = lambda e: Reply(220, f"{HOST} ESMTP")
    assert peer.feed(b"EHLO eager\r\n") == GREETING + EHLO_FULL


def test_421_greeting_closes() -> None:
    conn = ServerConnection(caps(), limits(), tls_active=False, auth_allowed=False)
    assert conn.send(Reply(421, f"{HOST} Service not available", "4.3.2")) == (
        b"421 4.3.2 mx.example.com Service not available\r\n"
    )
    assert conn.must_close
    assert conn.next_event() == ConnectionClosed()


# Command order ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"MAIL FROM:<a@b.example>\r\n", b"503 5.5.1 Send HELO/EHLO first\r\n"),
        (b"EHLO c\r\nRCPT TO:<a@b.example>\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"EHLO c\r\nDATA\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n", b"554 5.5.1 No valid recipients\r\n"),
        (b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n" * 2, b"503 5.5.1 Nested MAIL command\r\n"),
        (
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nEHLO c\r\n",
            b"503 5.5.1 Not allowed during a mail transaction\r\n",
        ),
    ],
)
def test_commands_out_of_order_get_503(commands: bytes, expected: bytes) -> None:
    peer = Peer.make()
    assert peer.feed(commands).endswith(expected)


def test_every_known_verb_has_a_handler_or_a_refusal_in_every_command_state() -> None:
    for state in (State.CONNECTED, State.READY, State.MAIL, State.RCPT):
        for verb in _KNOWN_VERBS:
            assert (state, verb) in _DISPATCH or (state, verb) in _REFUSALS, (state, verb)


def test_verbs_are_case_insensitive() -> None:
    peer = Peer.make()
    out = peer.feed(b"ehlo c\r\nmail from:<a@b.example>\r\nRcPt To:<d@e.example>\r\nnoop\r\nrset\r\nquit\r\n")
    assert out == EHLO_FULL + OK_MAIL + OK_RCPT + b"250 2.0.0 Ok\r\n" * 2 + (
        b"221 2.0.0 mx.example.com closing connection\r\n"
    )
    assert peer.kinds() == ["Helo", "Mail", "Rcpt", "Rset", "Quit", "ConnectionClosed"]


def test_noop_help_vrfy_expn_rset() -> None:
    peer = session()
    assert peer.feed(b"NOOP whatever\r\n") == b"250 2.0.0 Ok\r\n"
    assert peer.feed(b"HELP\r\n") == (
        b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"
    )
    assert peer.feed(b"VRFY bob\r\n") == (
        b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )
    assert peer.feed(b"VRFY\r\n") == b"501 5.5.4 Syntax: VRFY address\r\n"
    assert peer.feed(b"EXPN list\r\n") == b"502 5.5.1 EXPN not implemented\r\n"
    assert peer.feed(b"MAIL FROM:<a@b.example>\r\nRSET\r\nRCPT TO:<c@d.example>\r\n") == (
        OK_MAIL + b"250 2.0.0 Ok\r\n503 5.5.1 Need MAIL command\r\n"
    )
    assert peer.feed(b"RSET now\r\n") == b"501 5.5.4 Syntax: RSET\r\n"


def test_unknown_command_is_500() -> None:
    peer = session()
    assert peer.feed(b"FROB x\r\n") == b"500 5.5.2 Command not recognized\r\n"
    assert peer.events == [ProtocolViolation(Reply(500, "Command not recognized", "5.5.2"))]


def test_quit_closes() -> None:
    peer = session()
    assert peer.feed(b"QUIT\r\nNOOP\r\n") == b"221 2.0.0 mx.example.com closing connection\r\n"
    assert peer.kinds() == ["Quit", "ConnectionClosed"]
    assert peer.conn.must_close


def test_eof_reports_connection_closed() -> None:
    peer = session()
    assert peer.feed(b"NOOP") == b""
    assert peer.feed(b"") == b""
    assert peer.events == [ConnectionClosed()]
    assert peer.conn.next_event() == ConnectionClosed()  # and again, never NEED_DATA


# MAIL and RCPT ----------------------------------------------------------------------------------


def test_mail_and_rcpt_events_carry_addresses() -> None:
    peer = session()
    out = peer.feed(b"MAIL FROM:<Bob@Example.COM>\r\nRCPT TO:<carol@example.org>\r\nRCPT TO:<Postmaster>\r\n")
    assert out == OK_MAIL + OK_RCPT + OK_RCPT
    assert peer.events == [
        Mail("Bob@Example.COM", MailParams()),
        Rcpt("carol@example.org", RcptParams()),
        Rcpt("Postmaster", RcptParams()),
    ]


def test_null_reverse_path_and_space_after_colon() -> None:
    peer = session()
    assert peer.feed(b"MAIL FROM: <>\r\n") == OK_MAIL
    assert peer.events == [Mail("", MailParams())]


def test_source_route_is_ignored() -> None:
    peer = session()
    peer.feed(b"MAIL FROM:<@relay.example,@other.example:bob@example.com>\r\n")
    peer.feed(b"RCPT TO:<@relay.example:carol@example.org>\r\n")
    assert peer.events == [Mail("bob@example.com", MailParams()), Rcpt("carol@example.org", RcptParams())]


def test_quoted_local_part_and_address_literals() -> None:
    peer = session()
    out = peer.feed(
        b'MAIL FROM:<"john smith>"@example.com>\r\n'
        b"RCPT TO:<a@[192.0.2.1]>\r\nRCPT TO:<b@[IPv6:2001:db8::1]>\r\n"
    )
    assert out == OK_MAIL + OK_RCPT + OK_RCPT
    assert peer.events[0] == Mail('"john smith>"@example.com', MailParams())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"MAIL FROM:bob@example.com", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<bob>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<bob@exa mple.com>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<bob@example.com>x", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a..b@example.com>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@[300.1.1.1]>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL TO:<bob@example.com>", b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:<" + b"a" * 65 + b"@example.com>", b"501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@" + b"b" * 250 + b".example>", b"501 5.1.7 Path too long (RFC 5321 4.5.3.1.3)"),
        (b"MAIL FROM:<a@b.example> FROB=1", b"555 5.5.4 Unsupported parameter FROB"),
        (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", b"501 5.5.4 Duplicate parameter SIZE"),
        (b"MAIL FROM:<a@b.example> SIZE=abc", b"501 5.5.4 SIZE must be a number"),
        (b"MAIL FROM:<a@b.example> SIZE=1000001", TOO_BIG),
        (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", b"501 5.5.4 BODY must be 7BIT or 8BITMIME"),
        (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", b"501 5.5.4 SMTPUTF8 takes no value"),
        (b"MAIL FROM:<a@b.example> RET=ALL", b"501 5.5.4 RET must be FULL or HDRS"),
        (b"MAIL FROM:<a@b.example> ENVID=a+zz", b"501 5.5.4 ENVID is not xtext"),
        (b"MAIL FROM:<a@b.example> ENVID=" + b"x" * 101, LONG_ENVID),
        (b"MAIL FROM:<a@b.example> =x", b"501 5.5.4 Malformed parameter '=x'"),
        ("MAIL FROM:<jösé@example.com>".encode(), b"553 5.6.7 Non-ASCII address requires SMTPUTF8"),
    ],
)
def test_mail_syntax_errors(line: bytes, expected: bytes) -> None:
    peer = session()
    assert peer.feed(line + b"\r\n") == expected + b"\r\n"
    assert peer.conn.state is State.READY


def test_mail_parameters_are_parsed() -> None:
    peer = session()
    assert peer.feed(
        b"MAIL FROM:<a@b.example> size=5000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B1 AUTH=<>\r\n"
    ) == OK_MAIL
    assert peer.events == [
        Mail(
            "a@b.example",
            MailParams(size=5000, body="8BITMIME", smtputf8=True, ret="HDRS", envid="QQ+1", auth="<>"),
        )
    ]


def test_dsn_parameters_need_dsn() -> None:
    peer = session(dsn=False, auth_mechanisms=())
    assert peer.feed(b"MAIL FROM:<a@b.example> RET=FULL\r\n") == b"555 5.5.4 Unsupported parameter RET\r\n"
    assert peer.feed(b"MAIL FROM:<a@b.example> AUTH=<>\r\n") == b"555 5.5.4 Unsupported parameter AUTH\r\n"
    peer.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert peer.feed(b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n") == (
        b"555 5.5.4 Unsupported parameter NOTIFY\r\n"
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b"NOTIFY=NEVER", RcptParams(notify=("NEVER",))),
        (b"notify=success,Failure,DELAY", RcptParams(notify=("SUCCESS", "FAILURE", "DELAY"))),
        (b"ORCPT=rfc822;bob+40example.com", RcptParams(orcpt="rfc822;bob+40example.com")),
        ("ORCPT=utf-8;jösé@example.com".encode(), RcptParams(orcpt="utf-8;jösé@example.com")),
    ],
)
def test_rcpt_dsn_parameters(params: bytes, expected: RcptParams) -> None:
    peer = session()
    peer.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert peer.feed(b"RCPT TO:<c@d.example> " + params + b"\r\n") == OK_RCPT
    assert peer.events[-1] == Rcpt("c@d.example", expected)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS", BAD_NOTIFY),
        (b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,SUCCESS", BAD_NOTIFY),
        (b"RCPT TO:<c@d.example> NOTIFY=", b"501 5.5.4 Malformed parameter 'NOTIFY='"),
        (b"RCPT TO:<c@d.example> ORCPT=bob@example.com", BAD_ORCPT),
        (b"RCPT TO:<c@d.example> ORCPT=rfc822;bob+4", b"501 5.5.4 ORCPT address is not xtext"),
        (b"RCPT TO:<c@d.example> XYZ", b"555 5.5.4 Unsupported parameter XYZ"),
        (b"RCPT TO:<>", b"501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:c@d.example", b"501 5.1.3 Bad recipient address syntax"),
        (b"RCPT FROM:<c@d.example>", b"501 5.5.4 Syntax: RCPT TO:<address> [parameters]"),
        ("RCPT TO:<jösé@example.com>".encode(), b"553 5.6.7 Non-ASCII address requires SMTPUTF8"),
    ],
)
def test_rcpt_syntax_errors(line: bytes, expected: bytes) -> None:
    peer = session()
    peer.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert peer.feed(line + b"\r\n") == expected + b"\r\n"


def test_smtputf8_addresses_only_with_smtputf8_on_mail() -> None:
    peer = session()
    out = peer.feed("MAIL FROM:<jösé@exämple.com> SMTPUTF8\r\nRCPT TO:<用户@例子.广告>\r\n".encode())
    assert out == OK_MAIL + OK_RCPT
    assert peer.events == [
        Mail("jösé@exämple.com", MailParams(smtputf8=True)),
        Rcpt("用户@例子.广告", RcptParams()),
    ]


def test_smtputf8_parameter_needs_the_capability() -> None:
    peer = session(smtputf8=False)
    assert peer.feed(b"MAIL FROM:<a@b.example> SMTPUTF8\r\n") == (
        b"555 5.5.4 Unsupported parameter SMTPUTF8\r\n"
    )


def test_refused_recipients_do_not_count_and_data_needs_one_accepted() -> None:
    peer = session()
    out = peer.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<reject@x.example>\r\nDATA\r\n")
    assert out == OK_MAIL + b"550 5.1.1 No such user\r\n554 5.5.1 No valid recipients\r\n"


def test_too_many_recipients_get_452() -> None:
    peer = session(limits=limits(max_recipients=2))
    out = peer.feed(b"MAIL FROM:<a@b.example>\r\n" + b"RCPT TO:<r@x.example>\r\n" * 3)
    assert out == OK_MAIL + OK_RCPT * 2 + b"452 4.5.3 Too many recipients\r\n"


def test_transactions_per_connection_are_limited() -> None:
    peer = session(limits=limits(max_transactions=1))
    assert peer.feed(b"MAIL FROM:<a@b.example>\r\nRSET\r\n") == OK_MAIL + b"250 2.0.0 Ok\r\n"
    assert peer.feed(b"MAIL FROM:<a@b.example>\r\n") == (
        b"421 4.7.0 Too many messages in one connection, reconnect\r\n"
    )
    assert peer.conn.must_close


# Pipelining -------------------------------------------------------------------------------------


def test_pipelined_commands_in_one_read_answer_in_order() -> None:
    peer = Peer.make()
    out = peer.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r1@x.example>\r\nRCPT TO:<reject@x.example>\r\n"
        b"RCPT TO:<r2@x.example>\r\nFROB\r\nDATA\r\n"
    )
    assert out == (
        EHLO_FULL + OK_MAIL + OK_RCPT + b"550 5.1.1 No such user\r\n" + OK_RCPT
        + b"500 5.5.2 Command not recognized\r\n"
        + b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert peer.kinds() == ["Helo", "Mail", "Rcpt", "Rcpt", "Rcpt", "ProtocolViolation", "DataStart"]


def test_next_event_refuses_until_the_pending_event_is_answered() -> None:
    conn = ServerConnection(caps(), limits(), tls_active=False, auth_allowed=True)
    conn.send(Reply(220, HOST))
    conn.receive_data(b"EHLO a\r\nNOOP\r\n")
    assert conn.next_event() == Helo("a", True)
    assert conn.awaiting_reply
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(GO_AHEAD)  # GO_AHEAD answers DataStart only
    conn.send(Reply(250, HOST))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"250 2.0.0 Ok\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "nothing asked"))
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(999, "bad code"))


def test_a_421_may_be_sent_at_any_time() -> None:
    peer = session()
    peer.feed(b"MAIL FROM:<a@b.example>\r\n")
    assert peer.conn.send(Reply(421, f"{HOST} Server shutting down", "4.3.2")) == (
        b"421 4.3.2 mx.example.com Server shutting down\r\n"
    )
    assert peer.conn.must_close
    with pytest.raises(LocalProtocolError):
        peer.conn.send(Reply(250, "too late"))


# STARTTLS ---------------------------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext_and_resets() -> None:
    peer = session()
    peer.auto_tls = False
    out = peer.feed(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    assert peer.events == [StartTls()]
    assert peer.conn.state is State.TLS
    peer.feed(b"RSET\r\n")  # arrives before the handshake: dropped too
    peer.conn.tls_started(auth_allowed=True)
    assert peer.conn.tls_active
    # RFC 3207 4.2: back to the start; the injected MAIL never ran
    assert peer.feed(b"MAIL FROM:<a@b.example>\r\n") == b"503 5.5.1 Send HELO/EHLO first\r\n"
    out = peer.feed(b"EHLO c\r\n")
    assert b"STARTTLS" not in out
    assert b"250-AUTH PLAIN LOGIN\r\n" in out
    assert peer.kinds() == ["StartTls", "ProtocolViolation", "Helo"]


def test_starttls_refusals() -> None:
    peer = session(starttls=False)
    assert peer.feed(b"STARTTLS\r\n") == b"502 5.5.1 STARTTLS not available\r\n"
    peer = session(tls=True)
    assert peer.feed(b"STARTTLS\r\n") == b"503 5.5.1 TLS already active\r\n"
    peer = session()
    assert peer.feed(b"STARTTLS now\r\n") == b"501 5.5.4 Syntax: STARTTLS\r\n"
    peer.answers[StartTls] = lambda e: Reply(454, "TLS not available due to temporary reason", "4.7.0")
    assert peer.feed(b"STARTTLS\r\nNOOP\r\n") == (
        b"454 4.7.0 TLS not available due to temporary reason\r\n250 2.0.0 Ok\r\n"
    )
    with pytest.raises(LocalProtocolError):
        peer.conn.tls_started(auth_allowed=True)


def test_starttls_before_ehlo_or_in_transaction_is_refused() -> None:
    peer = Peer.make()
    assert peer.feed(b"STARTTLS\r\n") == b"503 5.5.1 Send HELO/EHLO first\r\n"
    peer.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    assert peer.feed(b"STARTTLS\r\n") == b"503 5.5.1 Not allowed during a mail transaction\r\n"


# AUTH -------------------------------------------------------------------------------------------


def test_auth_plain_with_initial_response() -> None:
    peer = session()
    out = peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
    assert out == b"235 2.7.0 Authenticated\r\n"
    assert peer.events == [AuthRequest("PLAIN", "", "alice", "secret")]
    assert peer.conn.authenticated
    assert "secret" not in repr(peer.events[0])


def test_auth_plain_after_an_empty_challenge_with_authzid() -> None:
    peer = session()
    assert peer.feed(b"AUTH plain\r\n") == b"334 \r\n"
    assert peer.feed(b64(b"admin\0alice\0secret") + b"\r\n") == b"235 2.7.0 Authenticated\r\n"
    assert peer.events == [AuthRequest("PLAIN", "admin", "alice", "secret")]


def test_auth_login_two_steps_and_with_initial_response() -> None:
    peer = session()
    assert peer.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert peer.feed(b64(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert peer.feed(b64(b"secret") + b"\r\n") == b"235 2.7.0 Authenticated\r\n"
    assert peer.events == [AuthRequest("LOGIN", "", "alice", "secret")]
    peer = session()
    assert peer.feed(b"AUTH LOGIN " + b64(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert peer.feed(b64(b"wrong") + b"\r\n") == b"535 5.7.8 Bad credentials\r\n"
    assert not peer.conn.authenticated


def test_auth_cancel_and_bad_responses() -> None:
    peer = session()
    assert peer.feed(b"AUTH LOGIN\r\n*\r\n") == b"334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n"
    assert peer.feed(b"AUTH PLAIN\r\n!!!\r\n") == b"334 \r\n501 5.5.2 Invalid base64 data\r\n"
    assert peer.feed(b"AUTH PLAIN " + b64(b"alice\0secret") + b"\r\n") == (
        b"501 5.5.2 Malformed authentication response\r\n"
    )
    assert peer.feed(b"AUTH PLAIN =\r\n") == b"501 5.5.2 Malformed authentication response\r\n"
    assert peer.feed(b"AUTH PLAIN " + b64(b"\0al\xffice\0x") + b"\r\n") == (
        b"501 5.5.2 Malformed authentication response\r\n"
    )
    assert peer.conn.state is State.READY
    assert [e for e in peer.events if not isinstance(e, ProtocolViolation)] == []


@pytest.mark.parametrize(
    ("setup", "line", "expected"),
    [
        (b"", b"AUTH PLAIN", b"503 5.5.1 Send HELO/EHLO first"),
        (b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n", b"AUTH PLAIN", IN_TRANSACTION),
        (b"EHLO c\r\n", b"AUTH CRAM-MD5", b"504 5.5.4 Unrecognized authentication type"),
        (b"EHLO c\r\n", b"AUTH", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
    ],
)
def test_auth_refusals(setup: bytes, line: bytes, expected: bytes) -> None:
    peer = Peer.make()
    if setup:
        peer.feed(setup)
    assert peer.feed(line + b"\r\n") == expected + b"\r\n"


def test_auth_needs_encryption_or_permission() -> None:
    peer = session(auth=False)
    assert peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n") == (
        b"538 5.7.11 Encryption required for this mechanism\r\n"
    )
    peer = session(auth_mechanisms=())
    assert peer.feed(b"AUTH PLAIN\r\n") == b"502 5.5.1 AUTH not available\r\n"


def test_auth_only_once() -> None:
    peer = session()
    peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
    again = peer.feed(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
    assert again == b"503 5.5.1 Already authenticated\r\n"


def test_auth_failures_are_limited() -> None:
    peer = session(limits=limits(max_auth_failures=2))
    bad = b"AUTH PLAIN " + b64(b"\0alice\0nope") + b"\r\n"
    assert peer.feed(bad) == b"535 5.7.8 Bad credentials\r\n"
    assert peer.feed(bad) == b"535 5.7.8 Bad credentials\r\n421 4.7.0 Too many authentication failures\r\n"
    assert peer.conn.must_close
    assert peer.events[-2:] == [
        ProtocolViolation(Reply(421, "Too many authentication failures", "4.7.0"), close=True),
        ConnectionClosed(),
    ]


def test_sasl_line_too_long() -> None:
    peer = session()
    out = peer.feed(b"AUTH PLAIN\r\n" + b"A" * 13000 + b"\r\nNOOP\r\n")
    assert out == b"334 \r\n500 5.5.6 Authentication exchange: Line too long\r\n250 2.0.0 Ok\r\n"


# Flood limits -----------------------------------------------------------------------------------


def test_unknown_command_flood_closes_with_421() -> None:
    peer = session(limits=limits(max_unknown_commands=3))
    out = peer.feed(b"X1\r\nX2\r\nX3\r\nX4\r\nNOOP\r\n")
    assert out == (
        b"500 5.5.2 Command not recognized\r\n" * 3 + b"421 4.7.0 mx.example.com Too many errors, closing\r\n"
    )
    assert peer.conn.must_close
    assert peer.events[-2:] == [
        ProtocolViolation(Reply(421, "mx.example.com Too many errors, closing", "4.7.0"), close=True),
        ConnectionClosed(),
    ]


def test_sequence_errors_are_not_strikes() -> None:
    # a pipelining client whose MAIL was refused sends RCPTs that all get 503: no 421 for that
    peer = session(limits=limits(max_unknown_commands=2))
    peer.answers[Mail] = lambda e: Reply(550, "Sender refused", "5.7.1")
    out = peer.feed(b"MAIL FROM:<a@b.example>\r\n" + b"RCPT TO:<r@x.example>\r\n" * 5 + b"DATA\r\n")
    assert out == b"550 5.7.1 Sender refused\r\n" + b"503 5.5.1 Need MAIL command\r\n" * 6
    assert not peer.conn.must_close


def test_data_chunk_is_bytes() -> None:
    peer = session()
    peer.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r@x.example>\r\nDATA\r\nhi\r\n.\r\n")
    assert DataChunk(b"hi\r\n") in peer.events
    assert isinstance(peer.events[-1], DataEnd)
    assert peer.events.count(Rset()) == 0 and Quit() not in peer.events
