"""Byte-exact tests of the sans-IO SMTP client core: no sockets, no loop."""

from __future__ import annotations

import pytest

from mailprime.proto import LocalProtocolError, RemoteProtocolError
from mailprime.proto.smtp.client import (
    NEED_DATA,
    Bdat,
    ClientConnection,
    ClientState,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfData,
    Greeting,
    Helo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    ReplyReceived,
    Rset,
    StartTls,
)
from mailprime.proto.smtp.replies import Capabilities, ReplyLimits
from mailprime.proto.smtp.types import Reply

FULL_EHLO = (
    b"250-mx.example.com Hello\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-STARTTLS\r\n"
    b"250-CHUNKING\r\n"
    b"250-DSN\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-AUTH=CRAM-MD5\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)


def events(conn: ClientConnection, data: bytes = b"") -> list[ReplyReceived | ConnectionClosed]:
    if data:
        conn.receive_data(data)
    out: list[ReplyReceived | ConnectionClosed] = []
    for _ in range(1000):
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        assert isinstance(event, ReplyReceived | ConnectionClosed)
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out
    raise AssertionError("too many events")


def one(conn: ClientConnection, data: bytes) -> ReplyReceived:
    (event,) = events(conn, data)
    assert isinstance(event, ReplyReceived)
    return event


def greeted(name: str = "client.example") -> ClientConnection:
    conn = ClientConnection(name)
    event = one(conn, b"220 mx.example.com ESMTP ready\r\n")
    assert event.command == Greeting()
    assert event.reply == Reply(220, "mx.example.com ESMTP ready")
    assert conn.state is ClientState.HELLO
    return conn


def ready(ehlo_reply: bytes = FULL_EHLO) -> ClientConnection:
    conn = greeted()
    assert conn.send(Ehlo()) == b"EHLO client.example\r\n"
    event = one(conn, ehlo_reply)
    assert conn.state is ClientState.READY
    assert event.capabilities == conn.capabilities
    return conn


# Greeting, EHLO and capabilities ----------------------------------------------------------


def test_ehlo_capabilities_are_parsed() -> None:
    conn = ready()
    caps = conn.capabilities
    assert caps == Capabilities(
        esmtp=True, pipelining=True, size=True, max_size=10240000, eightbitmime=True, smtputf8=True,
        starttls=True, chunking=True, dsn=True, enhancedstatuscodes=True,
        auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
        keywords=("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "STARTTLS", "CHUNKING", "DSN", "AUTH",
                  "ENHANCEDSTATUSCODES"),
    )
    assert caps.offers("dsn") and not caps.offers("XCLIENT")


def test_ehlo_reply_like_smtp_sink_with_empty_last_line_and_bare_size() -> None:
    conn = ready(b"250-smtp-sink\r\n250-SIZE\r\n250-XFORWARD NAME ADDR\r\n250-bad_keyword\r\n250 \r\n")
    caps = conn.capabilities
    assert caps.size and caps.max_size is None
    assert caps.keywords == ("SIZE", "XFORWARD")
    assert not caps.pipelining


def test_size_zero_means_no_fixed_limit() -> None:
    assert ready(b"250-x\r\n250 SIZE 0\r\n").capabilities.max_size is None


def test_helo_fallback_after_refused_ehlo() -> None:
    conn = greeted()
    conn.send(Ehlo())
    event = one(conn, b"500 5.5.1 command unrecognized\r\n")
    assert event.command == Ehlo() and event.capabilities is None
    assert conn.state is ClientState.HELLO
    assert conn.send(Helo()) == b"HELO client.example\r\n"
    event = one(conn, b"250 mx.example.com\r\n")
    assert event.capabilities == Capabilities()
    assert conn.state is ClientState.READY
    with pytest.raises(LocalProtocolError):
        conn.send(Mail("a@b.example", size=10))  # SIZE was not offered


def test_send_before_greeting_is_refused() -> None:
    conn = ClientConnection("client.example")
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo())


def test_refused_greeting_allows_only_quit() -> None:
    conn = ClientConnection("client.example")
    event = one(conn, b"554 5.7.1 go away\r\n")
    assert event.reply == Reply(554, "5.7.1 go away")  # no ENHANCEDSTATUSCODES seen yet
    assert conn.state is ClientState.REFUSED
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo())
    assert conn.send(Quit()) == b"QUIT\r\n"
    one(conn, b"221 bye\r\n")
    assert conn.state is ClientState.CLOSED


def test_invalid_helo_name() -> None:
    for name in ("", "a b", "a\r\nMAIL", "bücher.example"):
        with pytest.raises(LocalProtocolError):
            ClientConnection(name)


# Replies: multi-line, enhanced codes, limits ----------------------------------------------


def test_enhanced_status_codes_split_when_advertised() -> None:
    conn = ready()
    conn.send(Noop())
    event = one(conn, b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 third\r\n")
    assert event.reply == Reply(250, "first", "2.0.0", ("second", "third"))
    assert event.reply.to_bytes() == b"250-2.0.0 first\r\n250-second\r\n250 third\r\n"


def test_enhanced_code_with_wrong_class_is_left_in_the_text() -> None:
    conn = ready()
    conn.send(Noop())
    assert one(conn, b"250 5.1.1 odd\r\n").reply == Reply(250, "5.1.1 odd")


def test_enhanced_codes_not_split_without_the_extension() -> None:
    conn = ready(b"250-mx\r\n250 PIPELINING\r\n")
    conn.send(Noop())
    assert one(conn, b"250 2.0.0 Ok\r\n").reply == Reply(250, "2.0.0 Ok")


def test_reply_without_text_and_bare_lf_line_ends() -> None:
    conn = ready()
    conn.send(Noop())
    assert one(conn, b"250\n").reply == Reply(250, "")


def test_reply_split_across_many_receives() -> None:
    conn = ready()
    conn.send(Rset())
    wire = b"250-2.1.0 one\r\n250 2.1.0 two\r\n"
    for i in range(len(wire) - 1):
        assert events(conn, wire[i : i + 1]) == []
    assert one(conn, wire[-1:]).reply == Reply(250, "one", "2.1.0", ("two",))


@pytest.mark.parametrize(
    "wire",
    [
        b"hello\r\n",
        b"25\r\n",
        b"2500 x\r\n",
        b"250x\r\n",
        b"150 preliminary\r\n",
        b"650 x\r\n",
        b"250-a\r\n251 b\r\n",
    ],
)
def test_malformed_replies_raise(wire: bytes) -> None:
    conn = ready()
    conn.send(Noop())
    with pytest.raises(RemoteProtocolError):
        events(conn, wire)


def test_line_length_limit() -> None:
    conn = ClientConnection("c.example", ReplyLimits(max_line=100, max_lines=3))
    with pytest.raises(RemoteProtocolError, match=r"4\.5\.3\.1\.5"):
        events(conn, b"220 " + b"x" * 200)  # no line end yet: still too long
    conn = ClientConnection("c.example", ReplyLimits(max_line=100, max_lines=3))
    one(conn, b"220 " + b"x" * 94 + b"\r\n")  # exactly 100 octets with CRLF


def test_line_count_limit() -> None:
    conn = ClientConnection("c.example", ReplyLimits(max_line=100, max_lines=3))
    with pytest.raises(RemoteProtocolError, match="lines"):
        events(conn, b"220-a\r\n220-b\r\n220-c\r\n220-d\r\n")


def test_unsolicited_421_closes_and_other_unsolicited_replies_are_errors() -> None:
    conn = ready()
    event = one(conn, b"421 4.4.2 timeout\r\n")
    assert event.command is None and event.reply.code == 421
    assert conn.state is ClientState.CLOSED
    conn = ready()
    with pytest.raises(RemoteProtocolError, match="no command pending"):
        events(conn, b"250 what\r\n")


def test_421_to_a_pipelined_command_drops_the_rest() -> None:
    conn = ready()
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    event = one(conn, b"421 4.3.2 shutting down\r\n")
    assert event.command == Mail("a@b.example")
    assert conn.state is ClientState.CLOSED and conn.pending == ()


def test_eof_reports_unanswered_commands() -> None:
    conn = ready()
    conn.send(Noop())
    conn.receive_data(b"250 par")
    conn.receive_data(b"")
    assert events(conn) == [ConnectionClosed(pending=1)]
    assert conn.state is ClientState.CLOSED
    assert events(conn) == [ConnectionClosed()]


def test_replies_buffered_before_eof_still_arrive() -> None:
    conn = ready()
    conn.send(Quit())
    conn.receive_data(b"221 2.0.0 bye\r\n")
    conn.receive_data(b"")
    assert [type(e) for e in events(conn)] == [ReplyReceived, ConnectionClosed]


# Transactions -----------------------------------------------------------------------------


def test_pipelined_transaction_matches_replies_in_order() -> None:
    conn = ready()
    wire = (
        conn.send(Mail("bounce@sender.example", size=1234, body="8BITMIME", ret="HDRS", envid="q1+x=y"))
        + conn.send(Rcpt("a@example.com", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;a@example.com"))
        + conn.send(Rcpt("b@example.com"))
        + conn.send(Data())
    )
    assert wire == (
        b"MAIL FROM:<bounce@sender.example> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=q1+2Bx+3Dy\r\n"
        b"RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.com\r\n"
        b"RCPT TO:<b@example.com>\r\n"
        b"DATA\r\n"
    )
    got = events(
        conn,
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <b@example.com>: no such user\r\n354 go ahead\r\n",
    )
    assert [(type(e.command).__name__, e.reply.code) for e in got if isinstance(e, ReplyReceived)] == [
        ("Mail", 250), ("Rcpt", 250), ("Rcpt", 550), ("Data", 354),
    ]
    refused = Reply(550, "<b@example.com>: no such user", "5.1.1")
    assert got[2] == ReplyReceived(Rcpt("b@example.com"), refused)
    assert conn.state is ClientState.DATA_BODY
    assert conn.send_message_data(b"Subject: x\n\n.hidden\nend") == (
        b"Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n"
    )
    assert conn.pending == (EndOfData(),)
    event = one(conn, b"250 2.0.0 Ok: queued as X\r\n")
    assert event.command == EndOfData()
    assert conn.state is ClientState.READY
    # Connection reuse: the next transaction needs no RSET.
    assert conn.send(Mail("")) == b"MAIL FROM:<>\r\n"


def test_without_pipelining_one_command_at_a_time() -> None:
    conn = ready(b"250-mx\r\n250 8BITMIME\r\n")
    conn.send(Mail("a@b.example"))
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.send(Rcpt("c@d.example"))
    one(conn, b"250 ok\r\n")
    conn.send(Rcpt("c@d.example"))


def test_nothing_may_be_pipelined_behind_data_or_ehlo() -> None:
    conn = ready()
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    conn.send(Data())
    with pytest.raises(LocalProtocolError, match="RFC 2920"):
        conn.send(Rset())
    conn = ready()
    conn.send(Ehlo())
    with pytest.raises(LocalProtocolError):
        conn.send(Mail("a@b.example"))


def test_refused_mail_closes_the_transaction_and_data_can_still_be_refused() -> None:
    conn = ready()
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    conn.send(Data())
    got = events(conn, b"451 4.7.1 greylisted\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n")
    assert [e.reply.code for e in got if isinstance(e, ReplyReceived)] == [451, 503, 503]
    assert conn.state is ClientState.READY
    conn.send(Mail("a@b.example"))


def test_refused_data_leaves_transaction_open_until_rset() -> None:
    conn = ready()
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    conn.send(Data())
    events(conn, b"250 ok\r\n250 ok\r\n554 5.5.1 no valid recipients\r\n")
    assert conn.state is ClientState.MAIL
    with pytest.raises(LocalProtocolError):
        conn.send(Mail("a@b.example"))
    assert conn.send(Rset()) == b"RSET\r\n"
    assert conn.state is ClientState.READY


def test_message_data_only_after_354() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send_message_data(b"x")
    with pytest.raises(LocalProtocolError):
        conn.send(EndOfData())


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
        (b"x\n..\n.", b"x\r\n...\r\n..\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),  # bare CRs cannot smuggle an end of data
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    ],
)
def test_dot_stuffing_and_line_ends(body: bytes, wire: bytes) -> None:
    conn = in_data()
    assert conn.send_message_data(body) == wire
    # Streaming one octet at a time gives the same bytes.
    conn = in_data()
    streamed = b"".join(conn.send_message_data(body[i : i + 1], final=False) for i in range(len(body)))
    assert streamed + conn.send_message_data(b"") == wire


def in_data() -> ClientConnection:
    conn = ready()
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    conn.send(Data())
    events(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert conn.state is ClientState.DATA_BODY
    return conn


def test_bdat_chunks() -> None:
    conn = ready()
    conn.send(Mail("a@b.example"))
    conn.send(Rcpt("c@d.example"))
    assert conn.send(Bdat(b"hello\r\n")) == b"BDAT 7\r\nhello\r\n"
    assert conn.state is ClientState.BDAT
    with pytest.raises(LocalProtocolError):
        conn.send(Data())
    assert conn.send(Bdat(b"", last=True)) == b"BDAT 0 LAST\r\n"
    assert conn.state is ClientState.READY
    got = events(conn, b"250 ok\r\n250 ok\r\n250 2.0.0 7 octets\r\n250 2.0.0 queued\r\n")
    assert [type(e.command).__name__ for e in got if isinstance(e, ReplyReceived)] == [
        "Mail", "Rcpt", "Bdat", "Bdat",
    ]
    assert repr(Bdat(b"x" * 10, last=True)) == "Bdat(<10 octets>, last=True)"


def test_bdat_needs_chunking() -> None:
    conn = ready(b"250-mx\r\n250 PIPELINING\r\n")
    conn.send(Mail("a@b.example"))
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.send(Bdat(b"x", last=True))


@pytest.mark.parametrize(
    "mail",
    [
        Mail("a@b.example", size=1),
        Mail("a@b.example", body="8BITMIME"),
        Mail("a@b.example", body="BINARYMIME"),
        Mail("a@b.example", smtputf8=True),
        Mail("a@b.example", ret="FULL"),
        Mail("a@b.example", envid="x"),
    ],
)
def test_mail_parameters_need_their_extension(mail: Mail) -> None:
    conn = ready(b"250-mx\r\n250 PIPELINING\r\n")
    with pytest.raises(LocalProtocolError, match="did not offer"):
        conn.send(mail)


def test_smtputf8_transaction() -> None:
    conn = ready()
    wire = conn.send(Mail("jöran@bücher.example", smtputf8=True)) + conn.send(Rcpt("ǅemo@例え.jp"))
    assert wire == "MAIL FROM:<jöran@bücher.example> SMTPUTF8\r\nRCPT TO:<ǅemo@例え.jp>\r\n".encode()


@pytest.mark.parametrize(
    "command",
    [
        Mail("jöran@example.com"),  # non-ASCII without SMTPUTF8
        Mail("a@b.example\r\nRCPT TO:<x@y>"),
        Mail("a b@example.com"),
        Mail("<a@b.example>"),
        Mail("a@b.example", body="QUOTED"),
        Mail("a@b.example", ret="ALL"),
        Mail("a@b.example", envid="x" * 101),
        Mail("a@b.example", size=-1),
        Mail("x" * 250 + "@b.example"),
    ],
)
def test_mail_command_refuses_bad_input(command: Mail) -> None:
    with pytest.raises(LocalProtocolError):
        ready().send(command)


@pytest.mark.parametrize(
    "command",
    [
        Rcpt(""),
        Rcpt("c@d.example\nDATA"),
        Rcpt("c@d.example", notify=("NEVER", "SUCCESS")),
        Rcpt("c@d.example", notify=("SOMETIMES",)),
        Rcpt("c@d.example", orcpt="no-semicolon"),
        Rcpt("c@d.example", orcpt="rfc822;has space"),
        Rcpt("c@d.example", orcpt="rfc822;" + "a" * 500),
        Rcpt("c@d.example", orcpt="rfc822;a=b@c"),
        Rcpt("c@d.example", orcpt="rfc 822;a@c"),
    ],
)
def test_rcpt_command_refuses_bad_input(command: Rcpt) -> None:
    conn = ready()
    conn.send(Mail("a@b.example"))
    with pytest.raises(LocalProtocolError):
        conn.send(command)


def test_quoted_local_part_with_space_is_allowed() -> None:
    conn = ready()
    assert conn.send(Mail('"john smith"@b.example')) == b'MAIL FROM:<"john smith"@b.example>\r\n'


def test_rcpt_before_mail_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="state ready"):
        ready().send(Rcpt("c@d.example"))


def test_envid_is_xtext_encoded() -> None:
    wire = ready().send(Mail("a@b.example", envid="a+b=c d\x7f"))
    assert wire == b"MAIL FROM:<a@b.example> ENVID=a+2Bb+3Dc+20d+7F\r\n"


# STARTTLS and QUIT ------------------------------------------------------------------------


def test_starttls_resets_knowledge() -> None:
    conn = ready()
    assert conn.send(StartTls()) == b"STARTTLS\r\n"
    one(conn, b"220 2.0.0 ready to start TLS\r\n")
    assert conn.tls_started
    assert conn.state is ClientState.HELLO
    assert conn.capabilities == Capabilities()
    conn.send(Ehlo())
    one(conn, FULL_EHLO)
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        conn.send(StartTls())


def test_starttls_response_injection_is_refused() -> None:
    conn = ready()
    conn.send(StartTls())
    with pytest.raises(RemoteProtocolError, match="STARTTLS"):
        events(conn, b"220 go ahead\r\n250-injected\r\n")


def test_starttls_refused_keeps_plaintext_session() -> None:
    conn = ready()
    conn.send(StartTls())
    one(conn, b"454 4.7.0 TLS not available\r\n")
    assert conn.state is ClientState.READY and not conn.tls_started


def test_starttls_not_offered() -> None:
    with pytest.raises(LocalProtocolError):
        ready(b"250-mx\r\n250 PIPELINING\r\n").send(StartTls())


def test_quit_closes() -> None:
    conn = ready()
    conn.send(Quit())
    event = one(conn, b"221 2.0.0 Bye\r\n")
    assert event.reply == Reply(221, "Bye", "2.0.0")
    assert conn.state is ClientState.CLOSED
    assert events(conn, b"250 late garbage\r\n") == []
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())


def test_data_after_eof_is_a_caller_bug() -> None:
    conn = greeted()
    conn.receive_data(b"")
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")
