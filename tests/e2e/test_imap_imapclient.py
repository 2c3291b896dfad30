"""IMAPClient (a widely used third-party client) against `mailprime serve`: its parsing of our
ENVELOPE and BODYSTRUCTURE, CONDSTORE (HIGHESTMODSEQ, CHANGEDSINCE, MODSEQ), MOVE and COPY,
special-use folders, quota, namespace, ID, and IDLE woken by an SMTP delivery.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import trustme
from imapclient import IMAPClient

from tests.e2e.test_imap_serve import (
    ALICE,
    BOB,
    PASSWORDS,
    TIMEOUT,
    ImapServer,
    message,
    running_imap_server,
)

pytestmark = pytest.mark.slow

MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\r\n"
    b"To: Alice <alice@a.test>, bob@a.test\r\n"
    b"Cc: carol@example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <multi@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hall\xc3\xb6 Welt\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=\"data.bin\"\r\n"
    b"\r\n"
    b"aGVsbG8sIGJpbmFyeQ==\r\n"
    b"--b1--\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ImapServer]:
    with running_imap_server(tmp_path_factory, ca) as running:
        yield running


def implicit(server: ImapServer, user: str = ALICE) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True,
                        ssl_context=server.tls(), timeout=TIMEOUT)
    client.login(user, PASSWORDS[user])
    return client


def test_envelope_and_bodystructure_parse(server: ImapServer) -> None:
    server.deliver(BOB, MULTIPART)
    client = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=TIMEOUT)
    client.starttls(server.tls())
    client.login(BOB, PASSWORDS[BOB])
    try:
        client.select_folder("INBOX")
        [uid] = client.search(["SUBJECT", "Grüße"], charset="UTF-8")
        data = client.fetch([uid], ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "RFC822.SIZE",
                                    "BODY.PEEK[1]", "BINARY.PEEK[2]"])[uid]
        envelope = data[b"ENVELOPE"]
        assert envelope.subject == b"=?utf-8?q?Gr=C3=BC=C3=9Fe?="
        assert envelope.message_id == b"<multi@example.org>"
        # IMAPClient gives the Date: header as a naive datetime in local time.
        sent = datetime.fromisoformat("2026-11-26T10:00:00+01:00")
        assert envelope.date == sent.astimezone().replace(tzinfo=None)
        [sender] = envelope.from_
        assert (sender.mailbox, sender.host) == (b"jorg", b"example.org")
        assert [(a.mailbox, a.host) for a in envelope.to] == [(b"alice", b"a.test"), (b"bob", b"a.test")]
        structure = data[b"BODYSTRUCTURE"]
        assert structure.is_multipart
        text, attachment = structure[0]
        assert text[:2] == (b"text", b"plain") and text[5] == b"8bit"
        assert attachment[:2] == (b"application", b"octet-stream")
        assert structure[1] == b"mixed"
        assert data[b"BODY[1]"] == "Hallö Welt".encode()
        # Decoded by the server (RFC 3516); no NUL in it, so a plain literal imaplib can read.
        assert data[b"BINARY[2]"] == b"hello, binary"
        assert data[b"FLAGS"] == ()
        assert data[b"RFC822.SIZE"] == len(server.stored(BOB)[-1])
    finally:
        client.logout()


EIGHT_BIT = (
    "From: Jörg <jorg@example.org>\r\n"
    "To: José <jose@a.test>, bob@a.test, \"Zoë\" <zoe@a.test>\r\n"
    "Subject: 8-bit lists\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=b2\r\n"
    "\r\n"
    "--b2\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "x\r\n"
    "--b2\r\n"
    "Content-Type: application/pdf; name=\"relevé.pdf\"\r\n"
    "\r\n"
    "y\r\n"
    "--b2--\r\n"
).encode()


@pytest.mark.parametrize("rev2", [False, True], ids=["imap4rev1", "imap4rev2"])
def test_8bit_address_lists_and_parameters_parse(server: ImapServer, rev2: bool) -> None:
    """Raw UTF-8 in a list of several addresses and in a multipart's part parameters: literals
    (IMAP4rev1) or UTF-8 quoted strings (IMAP4rev2) inside lists written back to back."""
    subject = f"8-bit lists {'rev2' if rev2 else 'rev1'}".encode()
    server.deliver(BOB, EIGHT_BIT.replace(b"8-bit lists", subject))
    with implicit(server, BOB) as client:
        if rev2:
            assert client.enable("IMAP4rev2") == [b"IMAP4rev2"]
        # The newest UID rather than SEARCH: IMAPClient reads no ESEARCH, which an IMAP4rev2
        # client gets for a plain SEARCH (RFC 9051 6.4.4).
        uid = client.select_folder("INBOX")[b"UIDNEXT"] - 1
        data = client.fetch([uid], ["ENVELOPE", "BODYSTRUCTURE"])[uid]
        assert data[b"ENVELOPE"].subject == subject
        to = data[b"ENVELOPE"].to
        assert [(a.name, a.mailbox) for a in to] == [
            ("José".encode(), b"jose"), (None, b"bob"), ("Zoë".encode(), b"zoe")]
        structure = data[b"BODYSTRUCTURE"]
        assert structure.is_multipart and structure[1] == b"mixed"
        text, pdf = structure[0]
        assert text[:2] == (b"text", b"plain")
        assert pdf[:3] == (b"application", b"pdf", (b"name", "relevé.pdf".encode()))


def test_condstore_move_copy_and_folders(server: ImapServer) -> None:
    with implicit(server) as client:
        assert client.has_capability("CONDSTORE") and client.has_capability("MOVE")
        assert client.find_special_folder(b"\\Trash") == "Trash"
        client.create_folder("Projects/2026")
        folders = {name: flags for flags, _, name in client.list_folders()}
        assert b"\\HasChildren" in folders["Projects"] and b"\\HasNoChildren" in folders["Projects/2026"]
        for n in range(3):
            client.append("Projects/2026", message(f"project {n}"), flags=[b"$Draft"])
        selected = client.select_folder("Projects/2026")
        assert selected[b"EXISTS"] == 3 and selected[b"HIGHESTMODSEQ"] > 0
        start = selected[b"HIGHESTMODSEQ"]
        client.add_flags([2], [b"\\Flagged"])
        changed = client.fetch([1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {start}"])
        assert list(changed) == [2] and b"\\Flagged" in changed[2][b"FLAGS"]
        assert changed[2][b"MODSEQ"][0] > start
        assert client.search(["MODSEQ", str(start + 1)]) == [2]
        client.copy([1], "Archive")
        client.move([3], "Trash")
        assert client.search() == [1, 2]
        status = client.folder_status("Projects/2026", ["MESSAGES", "UIDNEXT", "UNSEEN", "HIGHESTMODSEQ"])
        assert status[b"MESSAGES"] == 2 and status[b"UIDNEXT"] == 4
        client.delete_messages([1])
        client.uid_expunge([1])
        assert client.search() == [2]
        client.unselect_folder()
        assert client.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] >= 1
        roots, quotas = client.get_quota_root("INBOX")
        assert roots.quota_roots == [""] and quotas[0].resource == "STORAGE"
        assert client.namespace().personal == (("", "/"),)
        assert client.id_({"name": "pytest"})[0][:2] == (b"name", b"mailprime")


def test_idle_with_imapclient(server: ImapServer) -> None:
    with implicit(server, BOB) as client:
        client.select_folder("INBOX")
        client.idle()
        server.deliver(BOB, message("ping", to=BOB))
        responses = client.idle_check(timeout=TIMEOUT)
        client.idle_done()
        assert any(r[1] == b"EXISTS" for r in responses), responses
