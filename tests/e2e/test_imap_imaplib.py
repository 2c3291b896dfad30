"""Python's imaplib against `mailprime serve`: whole sessions over STARTTLS and implicit TLS (mail
delivered over SMTP, then list, select, search, fetch, store, copy, move, expunge, append,
logout), a literal of several MB, IDLE woken by an SMTP delivery, two clients on one mailbox,
quota and size refusals before the literal is sent, and bad input that gets BAD while the
connection lives on.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import trustme

from tests.e2e.test_imap_serve import (
    ALICE,
    BOB,
    MAX_SIZE,
    QUOTA,
    TIMEOUT,
    ImapServer,
    message,
    running_imap_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ImapServer]:
    with running_imap_server(tmp_path_factory, ca) as running:
        yield running


def body_of(fetched: list[object]) -> bytes:
    """The literal of the first FETCH item imaplib returns, e.g. [(b'1 (BODY[] {42}', b'...'), b')']."""
    first = fetched[0]
    assert isinstance(first, tuple), fetched
    return bytes(first[1])


def ok(result: tuple[str, list[object]]) -> list[object]:
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def test_full_session_over_starttls(server: ImapServer) -> None:
    originals = [message(f"starttls {n}", f"Body number {n}.\r\n") for n in range(3)]
    for original in originals:
        server.deliver(BOB, original)
    stored = server.stored(BOB)
    assert len(stored) == 3
    with server.starttls_client(BOB) as client:
        names = [line.decode() for line in ok(client.list()) if isinstance(line, bytes)]
        assert '(\\HasNoChildren) "/" INBOX' in names
        assert '(\\HasNoChildren \\Sent) "/" Sent' in names
        assert ok(client.select("INBOX")) == [b"3"]
        assert ok(client.search(None, "ALL")) == [b"1 2 3"]
        assert ok(client.search(None, "UNSEEN")) == [b"1 2 3"]
        assert ok(client.search(None, "SUBJECT", '"starttls 1"')) == [b"2"]
        # Byte for byte what storage holds: mailprime's trace header, then the original.
        for n in range(3):
            fetched = body_of(ok(client.fetch(str(n + 1), "(BODY.PEEK[])")))
            assert fetched == stored[n] and fetched.endswith(originals[n])
        assert ok(client.fetch("1:3", "(FLAGS)")) == [b"1 (FLAGS ())", b"2 (FLAGS ())", b"3 (FLAGS ())"]
        # BODY[] (no PEEK) sets \Seen and reports the new flags in the same FETCH.
        data = ok(client.fetch("1", "(BODY[TEXT])"))
        assert body_of(data) == b"Body number 0.\r\n"
        assert b"FLAGS (\\Seen)" in b"".join(x if isinstance(x, bytes) else x[0] for x in data)
        assert ok(client.search(None, "SEEN")) == [b"1"]
        assert ok(client.store("2", "+FLAGS", "(\\Flagged $Work)")) == [b"2 (FLAGS ($Work \\Flagged))"]
        copied = ok(client.copy("2", "Archive"))[0]
        assert isinstance(copied, bytes) and re.match(rb"\[COPYUID \d+ 2 1\] COPY completed", copied)
        typ, _ = client.uid("MOVE", "3", "Trash")
        assert typ == "OK" and re.match(rb"\[COPYUID \d+ 3 1\]", client.untagged_responses.pop("OK")[-1])
        assert client.response("EXPUNGE") == ("EXPUNGE", [b"3"])
        assert ok(client.search(None, "ALL")) == [b"1 2"]
        ok(client.store("1", "+FLAGS", "(\\Deleted)"))
        assert ok(client.expunge()) == [b"1"]
        assert ok(client.uid("SEARCH", None, "ALL")) == [b"2"]
        appended = ok(client.append("INBOX", "(\\Draft)", imaplib.Time2Internaldate(time.time()),
                                    message("appended")))[0]
        assert isinstance(appended, bytes) and re.match(rb"\[APPENDUID \d+ 4\]", appended)
        assert client.response("EXISTS")[1][-1] == b"2"  # with the APPEND's answer
        assert ok(client.uid("FETCH", "4", "(FLAGS)")) == [b"2 (UID 4 FLAGS (\\Draft))"]
        ok(client.select("Archive", readonly=True))
        assert ok(client.fetch("1", "(FLAGS)")) == [b"1 (FLAGS ($Work \\Flagged))"]
        ok(client.close())
        assert client.logout()[0] == "BYE"


def test_large_literal_over_implicit_tls(server: ImapServer) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    big = b"From: a@b.test\r\nSubject: big\r\n\r\n" + line * (6 * 1024 * 1024 // len(line))
    with server.implicit_client(ALICE) as client:
        ok(client.create("Big/Files"))
        response = ok(client.append("Big/Files", None, None, big))[0]
        assert isinstance(response, bytes) and b"APPENDUID" in response
        ok(client.select("Big/Files"))
        assert body_of(ok(client.fetch("1", "(BODY.PEEK[])"))) == big
        assert ok(client.fetch("1", "(RFC822.SIZE)")) == [f"1 (RFC822.SIZE {len(big)})".encode()]
        partial = body_of(ok(client.fetch("1", "(BODY.PEEK[]<1000000.20>)")))
        assert partial == big[1000000:1000020]
    assert server.stored(ALICE, "Big/Files") == [big]


def test_quota_and_size_are_refused_before_the_literal(server: ImapServer) -> None:
    with server.implicit_client(ALICE) as client:
        tag = client._new_tag().decode()
        client.send(f"{tag} APPEND INBOX {{{QUOTA + 1}}}\r\n".encode())
        assert re.match(rf"{tag} NO \[OVERQUOTA\]".encode(), client.readline())
        tag = client._new_tag().decode()
        client.send(f"{tag} APPEND INBOX {{{MAX_SIZE + 1}}}\r\n".encode())
        assert re.match(rf"{tag} NO \[TOOBIG\]".encode(), client.readline())
        tag = client._new_tag().decode()
        client.send(f"{tag} APPEND Nowhere {{5}}\r\n".encode())
        assert re.match(rf"{tag} NO \[TRYCREATE\]".encode(), client.readline())
        ok(client.noop())  # the connection goes on: no literal octets were expected
        typ, data = client.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b'INBOX ""'], data
        assert re.match(rb'"" \(STORAGE \d+ 30720\)', data[1][0])


def test_idle_sees_a_message_delivered_over_smtp(server: ImapServer) -> None:
    with server.starttls_client(ALICE) as client:
        ok(client.select("INBOX"))
        count = int(client.untagged_responses.get("EXISTS", [b"0"])[-1])
        tag = client._new_tag().decode()
        client.send(f"{tag} IDLE\r\n".encode())
        assert client.readline().startswith(b"+ ")
        server.deliver(ALICE, message("while idling"))
        client.sock.settimeout(TIMEOUT)  # a bound on the wait: the EXISTS comes at once
        line = client.readline()
        while line.startswith((b"* OK", b"* FLAGS")):
            line = client.readline()
        assert line == f"* {count + 1} EXISTS\r\n".encode()
        client.send(b"DONE\r\n")
        line = client.readline()
        while line.startswith(b"* "):
            line = client.readline()
        assert line.startswith(f"{tag} OK".encode())
        ok(client.noop())


def test_two_clients_on_one_mailbox(server: ImapServer) -> None:
    with server.starttls_client(ALICE) as first, server.implicit_client(ALICE) as second:
        ok(first.create("Shared"))
        for n in range(3):
            ok(first.append("Shared", None, None, message(f"shared {n}")))
        ok(first.select("Shared"))
        ok(second.select("Shared"))
        ok(second.store("1", "+FLAGS", "(\\Seen \\Deleted)"))
        ok(second.append("Shared", None, None, message("shared 3")))
        ok(second.expunge())
        # While answering FETCH the first client hears the new flags and message, but not
        # the EXPUNGE (RFC 3501 7.4.1): its sequence numbers must not move mid-command.
        first.untagged_responses.clear()
        ok(first.fetch("3", "(UID)"))
        assert "EXPUNGE" not in first.untagged_responses
        assert first.untagged_responses.get("EXISTS") == [b"4"]
        # NOOP may carry it.
        ok(first.noop())
        assert first.response("EXPUNGE") == ("EXPUNGE", [b"1"])
        assert ok(first.fetch("1:*", "(UID)")) == [b"1 (UID 2)", b"2 (UID 3)", b"3 (UID 4)"]


def _raw_tls(server: ImapServer) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=TIMEOUT)
    return server.tls().wrap_socket(raw, server_hostname="127.0.0.1")


def _lines_until(sock: ssl.SSLSocket, prefix: bytes) -> bytes:
    data = b""
    while not re.search(rb"(^|\r\n)" + re.escape(prefix) + rb"[^\r\n]*\r\n", data):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_bad_input_gets_bad_and_the_connection_survives(server: ImapServer) -> None:
    with _raw_tls(server) as sock:
        _lines_until(sock, b"* OK")
        sock.sendall(b"a1 NOOP " + b"x" * 20000 + b"\r\n")  # over the 8192-octet line limit
        assert b"a1 BAD" in _lines_until(sock, b"a1 ")
        sock.sendall(b"a2 LOGIN {99999999999999999999}\r\n")  # an impossible literal
        assert b"a2 BAD" in _lines_until(sock, b"a2 ")
        sock.sendall(b"a3 FETCH 1 (FLAGS)\r\n")  # wrong state
        assert b"a3 BAD" in _lines_until(sock, b"a3 ")
        sock.sendall(b'a4 LOGIN "unterminated\r\n')
        assert b"a4 BAD" in _lines_until(sock, b"a4 ")
        sock.sendall(b"a5 NOOP\r\n")
        assert b"a5 OK" in _lines_until(sock, b"a5 ")
