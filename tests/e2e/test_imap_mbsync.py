"""mbsync (Debian package isync 1.4), the standard IMAP <-> Maildir synchroniser, against
`mailprime serve`: one channel mirrors every folder of an account into a local Maildir tree,
both ways (Create Both, Expunge Both).

The scenario: mail delivered over SMTP plus a message appended into a second folder; a first run
downloads everything; then changes on both sides (a flag and a new message and a deletion in the
Maildir; a flag, a deletion and a new message on the server, made with imaplib); a second run
carries each change across; a third run (over implicit TLS, the first two use STARTTLS) changes
nothing on either side. The server's state is read with imaplib, the Maildir with plain file
reads; contents are compared allowing only for what isync documents it does to a message (LF
line ends in the Maildir, its X-TUID header line on each copy it makes: tests/support/mbsync.py).

Skipped with a message when mbsync is not installed (Debian package isync; `make peers`).
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mailprime.config import load_settings
from tests.e2e.test_imap_serve import ALICE, PASSWORDS, ImapServer, message, write_config
from tests.support import mbsync
from tests.support.instance import Provisioning, provision
from tests.support.serve import serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(mbsync.MBSYNC is None,
                       reason="mbsync not installed (Debian: apt-get install isync; make peers)"),
]

# Maildir info letters and the IMAP system flags they stand for (isync's mapping; keywords
# other than these are not carried by a Maildir).
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
LIST_LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>"(?:[^"\\]|\\.)*"|\S+)$')
FETCH_ATTRS = re.compile(rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)")


# The server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ImapServer]:
    """`mailprime serve` as in test_imap_serve, but with a certificate that names "localhost":
    mbsync matches the host it connects to against the certificate's DNS names only."""
    root = tmp_path_factory.mktemp("imap-mbsync")
    config, ports = write_config(root, ca)
    cert = ca.issue_cert("mail.a.test", "localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    asyncio.run(provision(load_settings(config, environ={}), Provisioning("a.test", dict(PASSWORDS))))
    with serving(config, {"MAILPRIME_LOG_LEVEL": "INFO"}) as proc:
        yield ImapServer(root, config, ca, ports, proc)


@dataclass(frozen=True)
class ServerMessage:
    uid: int
    flags: frozenset[str]
    content: bytes


@dataclass(frozen=True)
class ServerFolder:
    uidvalidity: int
    uidnext: int
    messages: tuple[ServerMessage, ...]


def ok(result: tuple[str, Sequence[object]]) -> Sequence[object]:
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def folder_names(client: imaplib.IMAP4) -> list[str]:
    names = []
    for line in ok(client.list()):
        assert isinstance(line, bytes), line
        match = LIST_LINE.match(line)
        assert match is not None, line
        if b"\\noselect" not in match["attrs"].lower():
            name = match["name"]
            names.append((name[1:-1] if name.startswith(b'"') else name).decode())
    return sorted(names)


def fetch_all(client: imaplib.IMAP4) -> tuple[ServerMessage, ...]:
    """Every message of the selected mailbox: UID, flags and BODY.PEEK[]. imaplib hands each
    message back as (b'1 (UID 1 FLAGS (..) BODY[] {n}', literal) followed by the rest of the
    line (b')', or b' FLAGS (..))' when the server puts attributes after the literal)."""
    data = ok(client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])"))
    if list(data) == [None]:  # an empty mailbox
        return ()
    found: list[ServerMessage] = []
    for item, rest in zip(data[::2], data[1::2], strict=True):
        assert isinstance(item, tuple) and isinstance(rest, bytes), data
        attrs = {m.lastgroup: m[m.lastgroup] for m in FETCH_ATTRS.finditer(item[0] + rest)
                 if m.lastgroup is not None}
        flags = frozenset(attrs["flags"].decode().split())
        found.append(ServerMessage(int(attrs["uid"]), flags, bytes(item[1])))
    return tuple(sorted(found, key=lambda m: m.uid))


def response_number(client: imaplib.IMAP4, code: str) -> int:
    """The number of the last untagged response code `code` (UIDVALIDITY, UIDNEXT) heard."""
    value = client.untagged_responses[code][-1]
    assert isinstance(value, bytes), value
    return int(value)


def server_state(server: ImapServer) -> dict[str, ServerFolder]:
    """Everything a sync could change on the server, folder by folder, read with EXAMINE (which
    changes nothing itself)."""
    state: dict[str, ServerFolder] = {}
    with server.starttls_client(ALICE) as client:
        for name in folder_names(client):
            ok(client.select(f'"{name}"', readonly=True))
            state[name] = ServerFolder(response_number(client, "UIDVALIDITY"),
                                       response_number(client, "UIDNEXT"), fetch_all(client))
            ok(client.close())
    return state


# Comparing the two sides ------------------------------------------------------------------------


def normalized(content: bytes) -> bytes:
    """A message as both sides should agree on it: LF line ends, no X-TUID line (the side that
    received a copy from isync has one, the side it came from has not)."""
    lf = mbsync.to_lf(content)
    return mbsync.without_tuid(lf) if mbsync.has_tuid(lf) else lf


def server_mirror(state: dict[str, ServerFolder]) -> dict[str, list[tuple[bytes, str]]]:
    """Per folder, the sorted (content, maildir flag letters) of the server's messages."""
    letters = {flag: letter for letter, flag in MAILDIR_FLAGS.items()}
    return {name: sorted((normalized(m.content), "".join(sorted(letters[f] for f in m.flags
                                                                if f in letters)))
                         for m in folder.messages)
            for name, folder in state.items()}


def local_mirror(maildir: Path) -> dict[str, list[tuple[bytes, str]]]:
    mirror: dict[str, list[tuple[bytes, str]]] = {name: [] for name in mbsync.folders(maildir)}
    for local in mbsync.list_maildir(maildir):
        mirror[local.folder].append((normalized(local.content), local.flags))
    return {name: sorted(messages) for name, messages in mirror.items()}


def local_file(maildir: Path, folder: str, subject: str) -> Path:
    """The one Maildir file of `folder` whose Subject is `subject`."""
    found = [maildir / m.path_in_tree for m in mbsync.list_maildir(maildir)
             if m.folder == folder and f"\nSubject: {subject}\n".encode() in m.content]
    assert len(found) == 1, (folder, subject, found)
    return found[0]


def by_subject(folder: ServerFolder, subject: str) -> ServerMessage:
    found = [m for m in folder.messages if f"\r\nSubject: {subject}\r\n".encode() in m.content]
    assert len(found) == 1, (subject, found)
    return found[0]


def subject_of(content: bytes) -> str:
    match = re.search(rb"\nSubject: ([^\r\n]*)\r?\n", content)
    assert match is not None, content
    return match[1].decode()


def subjects(folder: ServerFolder) -> list[str]:
    return sorted(subject_of(m.content) for m in folder.messages)


def commands_sent(run: mbsync.Run) -> list[str]:
    """The IMAP commands mbsync sent, tag left out, from its -Dn trace: lines like
    ">>> 7 UID STORE ..." (after "(n in progress) " when it pipelines)."""
    return [match[1] for line in run.stdout.splitlines()
            if (match := re.match(r"^(?:\(\d+ in progress\) )?>>> \d+ (.*)$", line))]


# What a run that changes nothing may send: no STORE, APPEND, EXPUNGE, CREATE, and no FETCH of
# message contents (every message is already on both sides).
READ_ONLY_COMMAND = re.compile(r'^(CAPABILITY|AUTHENTICATE PLAIN .*|NAMESPACE|LIST "" "\*"|SELECT "[^"]+"'
                               r"|UID FETCH [\d:,]+ \(UID FLAGS\)|CLOSE|LOGOUT)$")


def assert_clean(run: mbsync.Run, server: ImapServer, tls: mbsync.SslType) -> None:
    """Exit code 0 and not one warning or error (mbsync can warn, e.g. about a message it lost
    track of, and still exit 0), over the port and the kind of TLS asked for: with implicit TLS
    the greeting comes after "Connection is now encrypted", with STARTTLS before it."""
    assert run.code == 0 and run.stderr == "", run.output
    port = server.ports["imap" if tls is mbsync.SslType.STARTTLS else "imaps"]
    assert f"Connecting to localhost (127.0.0.1:{port})" in run.stdout, run.output
    encrypted, greeting = run.stdout.index("Connection is now encrypted"), run.stdout.index("* OK ")
    assert (greeting < encrypted) == (tls is mbsync.SslType.STARTTLS), run.output


def account(server: ImapServer, work: Path, tls: mbsync.SslType) -> mbsync.Account:
    ca_file = work / "ca.pem"
    if not ca_file.exists():
        work.mkdir(parents=True, exist_ok=True)
        server.ca.cert_pem.write_to_path(str(ca_file))
    port = server.ports["imap" if tls is mbsync.SslType.STARTTLS else "imaps"]
    return mbsync.Account("localhost", port, tls, ALICE, PASSWORDS[ALICE], ca_file)


# The scenario -----------------------------------------------------------------------------------


def test_mbsync_mirrors_both_ways_then_a_run_changes_nothing(server: ImapServer, tmp_path: Path) -> None:
    maildir = tmp_path / "Mail"
    starttls = mbsync.write_config(tmp_path, account(server, tmp_path, mbsync.SslType.STARTTLS), maildir)
    implicit = mbsync.write_config(tmp_path, account(server, tmp_path, mbsync.SslType.IMPLICIT), maildir)

    # Mail on the server: four delivered over SMTP, one appended (already seen) into a folder
    # of a hierarchy.
    for n in range(4):
        server.deliver(ALICE, message(f"inbox {n}", f"Body {n}.\r\n"))
    with server.starttls_client(ALICE) as client:
        ok(client.create("Projects/Alpha"))
        ok(client.append("Projects/Alpha", "(\\Seen)", None, message("filed", "Filed away.\r\n")))
    before = server_state(server)
    assert subjects(before["INBOX"]) == [f"inbox {n}" for n in range(4)]

    # Run 1 (STARTTLS): everything comes down, every folder exists locally, the server is
    # untouched.
    first = mbsync.run(starttls)
    assert_clean(first, server, mbsync.SslType.STARTTLS)
    assert commands_sent(first)[0] == "STARTTLS", first.output
    assert server_state(server) == before
    assert mbsync.folders(maildir) == sorted(before)  # SubFolders Verbatim: the same names
    assert {"INBOX", "Projects", "Projects/Alpha", "Sent", "Trash"} <= set(before)
    downloaded = mbsync.list_maildir(maildir)
    for name, folder in before.items():
        # Byte for byte what IMAP serves, with LF line ends and isync's X-TUID line.
        local = sorted(mbsync.without_tuid(m.content) for m in downloaded if m.folder == name)
        assert local == sorted(mbsync.to_lf(m.content) for m in folder.messages), name
    assert [(m.folder, m.subdir, m.flags) for m in downloaded] == [("INBOX", "new", "")] * 4 + [
        ("Projects/Alpha", "cur", "S")]
    assert local_mirror(maildir) == server_mirror(before)

    # Changes in the Maildir: a flag, a new message, a deletion, a new folder with a message.
    mbsync.with_flags(local_file(maildir, "INBOX", "inbox 0"), "FS")
    local_new = mbsync.to_lf(message("written locally", "From the Maildir.\r\n"))
    (maildir / "INBOX" / "new" / f"{int(time.time())}.test_1.local").write_bytes(local_new)
    local_file(maildir, "INBOX", "inbox 1").unlink()
    local_note = mbsync.to_lf(message("a note", "Kept locally first.\r\n"))
    for sub in ("cur", "new", "tmp"):
        (maildir / "Notes" / sub).mkdir(parents=True)
    (maildir / "Notes" / "cur" / f"{int(time.time())}.test_2.local:2,S").write_bytes(local_note)
    # Changes on the server: a flag, a deletion, a new message (answered already), a new folder
    # with a message.
    uid_of = {s: by_subject(before["INBOX"], s).uid for s in ("inbox 2", "inbox 3")}
    remote_new = message("written remotely", "From the server.\r\n")
    remote_receipt = message("a receipt", "Filed on the server.\r\n")
    with server.starttls_client(ALICE) as client:
        ok(client.select("INBOX"))
        ok(client.uid("STORE", str(uid_of["inbox 2"]), "+FLAGS", "(\\Flagged)"))
        ok(client.uid("STORE", str(uid_of["inbox 3"]), "+FLAGS", "(\\Deleted)"))
        ok(client.expunge())
        ok(client.append("INBOX", "(\\Answered)", None, remote_new))
        ok(client.create("Receipts"))
        ok(client.append("Receipts", None, None, remote_receipt))

    # Run 2 (STARTTLS): each change crosses over.
    second = mbsync.run(starttls)
    assert_clean(second, server, mbsync.SslType.STARTTLS)
    after_second = server_state(server)
    inbox = after_second["INBOX"]
    assert subjects(inbox) == ["inbox 0", "inbox 2", "written locally", "written remotely"]
    assert by_subject(inbox, "inbox 0").flags == {"\\Flagged", "\\Seen"}
    assert by_subject(inbox, "inbox 2").flags == {"\\Flagged"}
    assert by_subject(inbox, "written remotely").flags == {"\\Answered"}
    assert by_subject(inbox, "written remotely").content == remote_new  # APPEND stores as given
    uploaded = by_subject(inbox, "written locally")
    assert uploaded.flags == frozenset()
    assert uploaded.uid >= before["INBOX"].uidnext  # a new message, not a reused UID
    # The uploaded message: the local file with CRLF line ends and isync's X-TUID line.
    assert mbsync.without_tuid(mbsync.to_lf(uploaded.content)) == local_new
    assert uploaded.content == mbsync.to_lf(uploaded.content).replace(b"\n", b"\r\n")
    [note] = after_second["Notes"].messages  # the folder was created, the message uploaded
    assert note.flags == {"\\Seen"}
    assert mbsync.without_tuid(mbsync.to_lf(note.content)) == local_note
    assert after_second["Projects/Alpha"] == before["Projects/Alpha"]

    synced = mbsync.list_maildir(maildir)
    local_inbox = {subject_of(m.content): m for m in synced if m.folder == "INBOX"}
    assert sorted(local_inbox) == ["inbox 0", "inbox 2", "written locally", "written remotely"]
    assert local_inbox["inbox 0"].flags == "FS"
    assert local_inbox["inbox 2"].flags == "F"
    assert local_inbox["written remotely"].flags == "R"
    assert mbsync.without_tuid(local_inbox["written remotely"].content) == mbsync.to_lf(remote_new)
    assert local_inbox["written locally"].content == local_new  # uploaded, not rewritten
    [receipt] = [m for m in synced if m.folder == "Receipts"]
    assert (receipt.subdir, receipt.flags) == ("new", "")
    assert mbsync.without_tuid(receipt.content) == mbsync.to_lf(remote_receipt)
    assert mbsync.folders(maildir) == sorted(after_second)
    assert local_mirror(maildir) == server_mirror(after_second)

    # Run 3 (implicit TLS, the same Maildir and sync state): nothing to do, nothing done.
    local_before = mbsync.list_maildir(maildir)
    third = mbsync.run(implicit)
    assert_clean(third, server, mbsync.SslType.IMPLICIT)
    sent = commands_sent(third)
    assert "STARTTLS" not in sent, third.output
    assert sent and [c for c in sent if not READ_ONLY_COMMAND.match(c)] == [], third.output
    assert server_state(server) == after_second
    assert mbsync.list_maildir(maildir) == local_before
