"""REQUIRETLS (RFC 8689) in the SMTP server core, byte-exact: offered only on TLS-protected
sessions and only when the capability is on (after STARTTLS, or on implicit TLS); the MAIL
parameter takes no value, is refused with 530 5.7.10 before STARTTLS on a listener that offers it
after, with 555 where it is never offered; the client core sends it only to a server that
offered it."""

from __future__ import annotations

import pytest

from mailprime.proto import LocalProtocolError
from mailprime.proto.smtp.client import Mail
from mailprime.proto.smtp.server import Mail as MailEvent
from mailprime.proto.smtp.types import MailParams
from tests.proto.test_smtp_client import ready
from tests.proto.test_smtp_server import OK_MAIL, Peer, session

UNSUPPORTED = b"555 5.5.4 Unsupported parameter REQUIRETLS\r\n"


def test_offered_last_on_tls_sessions_only() -> None:
    on_tls = Peer.make(tls=True, requiretls=True)
    assert on_tls.feed(b"EHLO c\r\n").endswith(b"250-CHUNKING\r\n250-DSN\r\n250 REQUIRETLS\r\n")
    plain = Peer.make(requiretls=True)
    assert b"REQUIRETLS" not in plain.feed(b"EHLO c\r\n")
    off = Peer.make(tls=True)  # the core's default; the runtime turns it on per listener
    assert b"REQUIRETLS" not in off.feed(b"EHLO c\r\n")


def test_offered_after_starttls_and_accepted_only_then() -> None:
    peer = session(requiretls=True)  # plaintext, STARTTLS offered
    assert peer.feed(b"MAIL FROM:<a@b.example> REQUIRETLS\r\n") == NEEDS_TLS
    assert peer.feed(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    # RFC 3207 4.2: the client starts over with EHLO; now REQUIRETLS is offered, STARTTLS not.
    ehlo = peer.feed(b"EHLO c\r\n")
    assert ehlo.endswith(b"250-CHUNKING\r\n250-DSN\r\n250 REQUIRETLS\r\n")
    assert b"STARTTLS" not in ehlo
    peer.events.clear()
    assert peer.feed(b"MAIL FROM:<a@b.example> REQUIRETLS\r\n") == OK_MAIL
    assert peer.events == [MailEvent("a@b.example", MailParams(require_tls=True))]


def test_mail_parameter_on_a_tls_session() -> None:
    peer = session(tls=True, requiretls=True)
    assert peer.feed(b"MAIL FROM:<a@b.example> requiretls SMTPUTF8\r\n") == OK_MAIL
    assert peer.events == [MailEvent("a@b.example", MailParams(smtputf8=True, require_tls=True))]


NEEDS_TLS = (b"530 5.7.10 Must issue a STARTTLS command first: REQUIRETLS needs a TLS session "
             b"(RFC 8689)\r\n")


@pytest.mark.parametrize(("tls", "starttls", "offered", "line", "expected"), [
    # RFC 8689 2: only in a TLS session; before STARTTLS the client is told what is missing.
    (False, True, True, b"MAIL FROM:<a@b.example> REQUIRETLS\r\n", NEEDS_TLS),
    (False, False, True, b"MAIL FROM:<a@b.example> REQUIRETLS\r\n", UNSUPPORTED),  # no TLS at all
    (False, True, False, b"MAIL FROM:<a@b.example> REQUIRETLS\r\n", UNSUPPORTED),
    (True, True, False, b"MAIL FROM:<a@b.example> REQUIRETLS\r\n", UNSUPPORTED),
    (True, True, True, b"MAIL FROM:<a@b.example> REQUIRETLS=YES\r\n",
     b"501 5.5.4 REQUIRETLS takes no value\r\n"),
])
def test_mail_parameter_refused(tls: bool, starttls: bool, offered: bool, line: bytes,
                                expected: bytes) -> None:
    peer = session(tls=tls, starttls=starttls, requiretls=offered)
    assert peer.feed(line) == expected
    assert not any(isinstance(e, MailEvent) for e in peer.events)


def test_client_core_sends_it_only_when_offered() -> None:
    conn = ready(b"250-mx\r\n250-PIPELINING\r\n250 REQUIRETLS\r\n")
    assert conn.send(Mail("a@b.example", requiretls=True)) == \
        b"MAIL FROM:<a@b.example> REQUIRETLS\r\n"
    without = ready(b"250-mx\r\n250 PIPELINING\r\n")
    with pytest.raises(LocalProtocolError, match="did not offer REQUIRETLS"):
        without.send(Mail("a@b.example", requiretls=True))
