"""Dovecot as the IMAP and POP3 peer: a throw-away instance under the bench work dir.

Theory of operation. `DovecotInstance` is configured -> running -> closed:
- configured: nothing on disk yet.
- `start()` writes one Maildir per account (the corpus as Dovecot itself stores mail: LF line
  ends, the `S=` and `W=` sizes in each file name, `:2,S` for \\Seen; the accounts after the
  first get hard links to the first one's files, as Dovecot's own COPY does), a passwd-file
  with the SAME Argon2id hash string mailprime stores (Dovecot verifies it with libsodium), and a
  dovecot.conf with its own base_dir, state_dir and log file and listeners on free loopback ports
  only; then runs `dovecot -F -c <conf>` (foreground: it is our child, in its own process group)
  and waits, bounded, until both ports greet. If Dovecot exits or does not greet in time, the
  error carries the tail of its log.
- `close()` sends SIGTERM to the master, waits, and SIGKILLs the master's process group only if
  it overruns. The system Dovecot (/etc/dovecot) is never read or started.

Settings are Dovecot's defaults except what a private, plain-TCP instance needs: `ssl = no`,
`disable_plaintext_auth = no` (loopback only), mail as an unprivileged user (the Maildirs are
chowned to it), `first_valid_uid` lowered to that user. `auth_cache_size` is 0 (Dovecot's
default) unless `auth_cache=True`, which the bench sets when mailprime caches verifications too;
`mail_fsync = optimized` (the default).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support.postfix import free_port

from bench.mailbox_load import Account, Corpus, Target

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
PROTOCOL_BINARIES = ("/usr/lib/dovecot/imap", "/usr/lib/dovecot/pop3")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.05  # an external process's readiness can only be polled
MAIL_USERS = ("mail", "nobody")  # unprivileged owners of the Maildirs, first that exists
LOGIN_USER = "dovenull"  # created by Debian's dovecot-core
INTERNAL_USER = "dovecot"
GREETING_LIMIT = 4096


class DovecotError(RuntimeError):
    """Dovecot did not start or answer; the message carries the tail of its log."""


def dovecot_unavailable() -> str | None:
    """Why a private Dovecot cannot run here, or None when it can."""
    for tool in (DOVECOT, DOVEADM, *PROTOCOL_BINARIES):
        if not os.access(tool, os.X_OK):
            return f"{tool} not installed (dovecot-imapd, dovecot-pop3d)"
    if os.geteuid() != 0:
        return "needs root (Dovecot's master switches users)"
    for user in (LOGIN_USER, INTERNAL_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no user {user!r} (created by dovecot-core)"
    return None


def dovecot_version() -> str:
    try:
        out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, timeout=30,
                             check=False)
    except OSError:
        return "?"
    return (out.stdout.split() or ["?"])[0]


def mail_owner() -> pwd.struct_passwd:
    for name in MAIL_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise DovecotError(f"none of the users {MAIL_USERS} exists to own the Maildirs")


def maildir_name(index: int, message_octets: int, crlf_octets: int, seen: bool) -> str:
    """A Maildir file name as Dovecot writes it: unique part, S= (file size), W= (size with
    CRLF line ends, what IMAP's RFC822.SIZE reports), then the flags."""
    return (f"{1767600000 + index}.M{index}P4242.bench.test,S={message_octets},W={crlf_octets}"
            f":2,{'S' if seen else ''}")


def write_maildir(root: Path, corpus: Corpus, *, line_ends: bytes = b"\n",
                  link_from: Path | None = None) -> None:
    """The corpus as a Maildir at root (cur/ holds every message, new/ and tmp/ are empty), with
    `line_ends` in the files; with `link_from`, hard links to that Maildir's files instead."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if link_from is not None:
        for source in (link_from / "cur").iterdir():
            os.link(source, root / "cur" / source.name)
        return
    for index, message in enumerate(corpus.messages):
        data = message.data if line_ends == b"\r\n" else message.data.replace(b"\r\n", line_ends)
        name = maildir_name(index, len(data), message.octets, message.seen)
        path = root / "cur" / name
        path.write_bytes(data)
        stamp = message.received.timestamp()
        os.utime(path, (stamp, stamp))  # Maildir's internal date is the file's mtime


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid)


class DovecotInstance:
    """One private Dovecot serving IMAP and POP3 on 127.0.0.1 for `accounts`."""

    def __init__(self, root: Path, accounts: Sequence[Account], password_hash: str, corpus: Corpus,
                 *, auth_cache: bool = False) -> None:
        self.root = root
        self.accounts = tuple(accounts)
        self.password_hash = password_hash
        self.corpus = corpus
        self.auth_cache = auth_cache
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.config_path = root / "dovecot.conf"
        self.log_path = root / "dovecot.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def imap(self) -> Target:
        return Target("127.0.0.1", self.imap_port, self.accounts)

    @property
    def pop3(self) -> Target:
        return Target("127.0.0.1", self.pop3_port, self.accounts)

    # -- set-up ---------------------------------------------------------------------------------
    def _write_mail(self, owner: pwd.struct_passwd) -> None:
        mail = self.root / "mail"
        first: Path | None = None
        for account in self.accounts:
            maildir = mail / account.user / "Maildir"
            write_maildir(maildir, self.corpus, link_from=first)
            first = first or maildir
        chown_tree(mail, owner.pw_uid, owner.pw_gid)

    def _write_config(self, owner: pwd.struct_passwd) -> None:
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{a.user}:{{ARGON2ID}}{self.password_hash}::::::\n"
                                  for a in self.accounts))
        # Dovecot's auth process reads it as default_internal_user (like /etc/dovecot/users).
        internal = pwd.getpwnam(INTERNAL_USER)
        os.chown(passwd, 0, internal.pw_gid)
        passwd.chmod(0o640)
        cache = "auth_cache_size = 10M\nauth_cache_ttl = 1 hour\n" if self.auth_cache else \
            "auth_cache_size = 0\n"
        self.config_path.write_text(f"""# private instance for mailprime's bench; nothing here is the system's
instance_name = mailprime-bench-{self.imap_port}
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log_path}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {LOGIN_USER}
default_internal_user = {INTERNAL_USER}
first_valid_uid = {owner.pw_uid}
first_valid_gid = {owner.pw_gid}
mail_location = maildir:~/Maildir
mail_fsync = optimized
{cache}
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={self.root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        owner = mail_owner()
        self._write_mail(owner)
        self._write_config(owner)
        with open(self.root / "dovecot.stdout", "ab") as out:
            self._proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config_path)], stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        for port, greeting in ((self.imap_port, b"* OK"), (self.pop3_port, b"+OK")):
            self._wait_greeting(port, greeting, deadline)

    def _wait_greeting(self, port: int, expected: bytes, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                tail = self.log_tail()
                raise DovecotError(f"dovecot exited with {self._proc.returncode}:"
                                   f" {tail.splitlines()[-1]}\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    line = s.recv(GREETING_LIMIT)
                if line.startswith(expected):
                    return
                last = repr(line[:200])
            except OSError as exc:
                last = str(exc)
            time.sleep(POLL_INTERVAL)
        raise DovecotError(f"dovecot did not greet on port {port} ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.root / "dovecot.stdout", self.log_path):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no log written)"

    def errors_logged(self) -> list[str]:
        """Error and fatal lines in Dovecot's log (a bench run must not produce any)."""
        if not self.log_path.exists():
            return []
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if re.search(r"\b(Error|Fatal|Panic):", line)]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the master's own group (start_new_session)
            proc.wait(STOP_TIMEOUT)

    def __enter__(self) -> DovecotInstance:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
