"""mbsync (Debian package isync 1.4) as a test client: writes its configuration for one channel
between an IMAP account and a local Maildir tree, runs it with a timeout, and reads the Maildir
tree back.

The configuration uses isync 1.4's names (Far/Near, SSLType; 1.5 renamed SSLType to TLSType).
mbsync checks the server's certificate against `CertificateFile` and matches the host name
against the certificate's DNS names only (not its IP addresses), so the server's certificate
must name the `host` given here (tests use "localhost").

What mbsync writes to a Maildir, and what a test comparing contents must allow for:
- line ends: IMAP messages are CRLF, the Maildir copy is LF (isync converts both ways);
- an "X-TUID: <12 characters>" header line that isync inserts at the end of the header of every
  message it propagates (either way), to find the copy again if the run is interrupted before it
  learns the new UID. `without_tuid` takes it out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

MBSYNC = shutil.which("mbsync")
RUN_TIMEOUT = 60.0  # one whole run; the tests' runs take well under a second each

# Maildir info: "<unique>:2,<flags>" (flags sorted, one letter each: D F P R S T).
INFO = re.compile(r"^(?P<base>.*?)(?::2,(?P<flags>[A-Za-z]*))?$")
# The header's end is its first empty line; isync's line is the one just before it.
TUID_AT_HEADER_END = re.compile(rb"\A(?:[^\n]+\n)*?(X-TUID: [^\n]{12}\n)(?=\n)")


class SslType(Enum):
    """How mbsync reaches the IMAP port: isync 1.4's SSLType values."""

    STARTTLS = "STARTTLS"
    IMPLICIT = "IMAPS"


@dataclass(frozen=True)
class Account:
    """The far side: one IMAP account on `host`:`port`, TLS verified with `ca_file`."""

    host: str
    port: int
    tls: SslType
    user: str
    password: str
    ca_file: Path


@dataclass(frozen=True)
class Run:
    """One mbsync run: its exit code and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@dataclass(frozen=True)
class LocalMessage:
    """One file of the Maildir: its folder, sub-directory (new or cur), name, flags, content."""

    folder: str
    subdir: str
    name: str
    flags: str
    content: bytes

    @property
    def path_in_tree(self) -> str:
        return f"{self.folder}/{self.subdir}/{self.name}"


def write_config(work: Path, account: Account, maildir: Path) -> Path:
    """An mbsyncrc with one channel "mirror" between every folder of `account` and `maildir`
    (INBOX as maildir/INBOX, other folders by their own names: SubFolders Verbatim), creating
    and expunging on both sides and keeping the sync state inside each Maildir folder."""
    work.mkdir(parents=True, exist_ok=True)
    maildir.mkdir(parents=True, exist_ok=True)
    rc = work / f"mbsyncrc-{account.tls.name.lower()}"
    rc.write_text(
        f"IMAPAccount far\n"
        f"Host {account.host}\n"
        f"Port {account.port}\n"
        f"User {account.user}\n"
        f'Pass "{account.password}"\n'
        f"SSLType {account.tls.value}\n"
        f"SSLVersions TLSv1.2 TLSv1.3\n"
        f"CertificateFile {account.ca_file}\n"
        f"SystemCertificates no\n"
        f"Timeout 10\n"
        f"\n"
        f"IMAPStore far\n"
        f"Account far\n"
        f"\n"
        f"MaildirStore near\n"
        f"Path {maildir}/\n"
        f"Inbox {maildir}/INBOX\n"
        f"SubFolders Verbatim\n"
        f"\n"
        f"Channel mirror\n"
        f"Far :far:\n"
        f"Near :near:\n"
        f"Patterns *\n"
        f"Create Both\n"
        f"Expunge Both\n"
        f"SyncState *\n")
    rc.chmod(0o600)
    return rc


def run(rc: Path, *, trace: bool = True, timeout: float = RUN_TIMEOUT) -> Run:
    """Blocking: `mbsync -c rc -a` (with -Dn: every IMAP line but message contents, for failure
    messages and for tests that look at the commands sent).
    HOME is the configuration's directory so that nothing of the user's is read or written."""
    assert MBSYNC is not None, "mbsync is not installed"
    args = [MBSYNC, "-c", str(rc), *(["-Dn"] if trace else []), "-a"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "HOME": str(rc.parent)})
    return Run(done.returncode, done.stdout, done.stderr)


def list_maildir(maildir: Path) -> list[LocalMessage]:
    """Every message file under `maildir` (every folder's new/ and cur/), sorted by folder and
    name. isync's own files (.mbsyncstate, .uidvalidity) sit beside those directories, and
    tmp/ holds only files being written: neither is listed."""
    found: list[LocalMessage] = []
    for sub in sorted(maildir.rglob("*")):
        if not sub.is_dir() or sub.name not in ("new", "cur"):
            continue
        folder = sub.parent.relative_to(maildir).as_posix()
        for path in sorted(sub.iterdir()):
            if path.is_file():
                match = INFO.match(path.name)
                assert match is not None
                found.append(LocalMessage(folder, sub.name, path.name, match["flags"] or "",
                                          path.read_bytes()))
    return found


def folders(maildir: Path) -> list[str]:
    """The Maildir folders under `maildir` (directories that have cur/, new/ and tmp/)."""
    return sorted(p.relative_to(maildir).as_posix() for p in maildir.rglob("*")
                  if p.is_dir() and all((p / d).is_dir() for d in ("cur", "new", "tmp")))


def without_tuid(content: bytes) -> bytes:
    """`content` (LF line ends) without the X-TUID line isync inserted as the header's last
    line (see the module docstring); fails if there is none."""
    match = TUID_AT_HEADER_END.search(content)
    assert match is not None, f"no X-TUID line at the end of the header:\n{content[:2000]!r}"
    return content[:match.start(1)] + content[match.end(1):]


def has_tuid(content: bytes) -> bool:
    """Whether `content` (LF line ends) carries isync's X-TUID line at the end of its header."""
    return TUID_AT_HEADER_END.search(content) is not None


def to_lf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n")


def with_flags(path: Path, flags: str) -> Path:
    """Renames a Maildir message file to carry `flags` (moving it into cur/, as a mail reader
    does once it has seen a message); returns the new path."""
    match = INFO.match(path.name)
    assert match is not None
    target = path.parent.parent / "cur" / f"{match['base']}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target
