"""Private Postfix instances, smtp-sink and smtp-source for interop tests and the benchmarks.

Theory of operation. A `PostfixInstance` is a complete, throw-away Postfix with its own
config_directory, queue_directory, data_directory, maillog_file and (in "mailbox" mode) Maildir,
all under one root directory. It listens only on 127.0.0.1:<smtpd_port> (IPv4), never on port 25,
and never touches the system instance in /etc/postfix or /var/spool/postfix. Life cycle:

    configured --start()--> running --stop()--> stopped --start()--> running ...
    any state --close()--> closed          (`with` does start() ... close())

`start()` writes main.cf and master.cf and runs `postfix -c <dir> start`, whose built-in check
(the same as `postfix check`) creates the queue sub-directories with the right owners and whose
`master -w` returns once the master has bound its sockets; then it waits, bounded, until smtpd
answers with a 220 greeting.
`stop()` runs `postfix -c <dir> stop`, waits, bounded, for the master to go, and SIGKILLs any
member of the master's process group (master runs setsid, so its pgid is its pid) still alive.

Postfix drops privileges to `mail_owner` (the master opens data_directory/master.lock as that
user) and virtual(8) delivers as an unprivileged uid, so every ancestor of the root directory must
be searchable by "other". pytest's tmp_path lives under a 0700 directory; when the given tmpdir
is not searchable, the instance runs in a fresh directory under the system temp dir instead,
copies its maillog back into tmpdir when it is closed and removes that directory.

Postfix needs root (the master opens privileged sockets and switches users). Callers should
check `postfix_unavailable()` first; tests turn its reason into pytest.skip.

The three modes:
- "mailbox": accepts mail for `mydomain` only and delivers it with virtual(8) into one Maildir
  (virtual(8) refuses regexp substitution in virtual_mailbox_maps, so there is no per-recipient
  path; each delivered copy carries its recipient in the topmost Delivered-To header, which
  `messages(recipient)` filters on). Delivered files have LF line ends, as Maildir does.
- "relay": relays everything from 127.0.0.0/8 to `relay_to` (relayhost = [ip]:port, no DNS).
- "discard": smtpd and cleanup queue durably (Postfix fsyncs every queue file before its 250)
  and the queue manager hands every recipient to the discard(8) transport.
`main_cf` overrides or adds main.cf settings, e.g. {"smtp_tls_security_level": "may"} to make
the relay use STARTTLS, or smtpd_tls_cert_file/smtpd_tls_key_file to offer it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

# Re-exported for the tests that take it from here: one list of handed-out ports (instance.py).
from tests.support.instance import free_port as free_port

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"

Mode = Literal["mailbox", "relay", "discard"]
MODES: tuple[Mode, ...] = ("mailbox", "relay", "discard")

# Bounds on how long we wait for external processes; each loop below runs against a deadline.
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.02  # polling an external process (Maildir, queue, ports) is the only option
QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "hold")
GREETING_LIMIT = 4096  # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; allow a few


class PostfixError(RuntimeError):
    """A Postfix command failed; the message carries the tail of its maillog."""


def postfix_unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    for tool in (POSTFIX, POSTQUEUE, SMTP_SINK, SMTP_SOURCE):
        if not os.access(tool, os.X_OK):
            return f"postfix not installed: {tool} missing (apt-get install postfix)"
    if os.geteuid() != 0:
        return "postfix needs root to run a private instance"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "postfix not installed: no 'postfix' user"
    return None




def wait_for_port(host: str, port: int, timeout: float, *, greeting: bool = False) -> None:
    """Connect until the port accepts (and, with greeting, answers 220), bounded by timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())) as s:
                if not greeting:
                    return
                reply = _read_reply(s)
                s.sendall(b"QUIT\r\n")
                if reply.startswith(b"220"):
                    return
                last = PostfixError(f"unexpected greeting {reply[:100]!r}")
        except OSError as exc:
            last = exc
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"{host}:{port} not ready within {timeout}s: {last}")


def _read_reply(s: socket.socket) -> bytes:
    buf = b""
    while len(buf) < GREETING_LIMIT:
        chunk = s.recv(GREETING_LIMIT)
        if not chunk:
            break
        buf += chunk
        # A multi-line reply ends with a line whose code is followed by a space (RFC 5321 4.2.1).
        lines = buf.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            break
    return buf


def _searchable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _run(argv: Sequence[str], *, log: Path, timeout: float = COMMAND_TIMEOUT) -> int:
    # Output goes to a file, not a pipe: `postfix start` leaves a daemon behind that could hold a
    # pipe open and make us wait for it.
    with open(log, "ab") as out:
        return subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              timeout=timeout, check=False).returncode


def _pgroup_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = raw[raw.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _delivered_to(message: bytes) -> str | None:
    """The topmost Delivered-To header: virtual(8) prepends one per delivered copy."""
    header = message.split(b"\n\n", 1)[0]
    for line in header.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"delivered-to":
            return value.strip().decode("utf-8", "replace").lower()
    return None


class PostfixInstance:
    """A private Postfix on 127.0.0.1:smtpd_port; see the module docstring. Use as `with`."""

    def __init__(self, tmpdir: Path | str, *, smtpd_port: int, mydomain: str, mode: Mode = "mailbox",
                 relay_to: tuple[str, int] | None = None, myhostname: str | None = None,
                 main_cf: Mapping[str, str] | None = None, start_timeout: float = 20.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if (mode == "relay") != (relay_to is not None):
            raise ValueError("relay_to is required in relay mode and only there")
        self.tmpdir = Path(tmpdir)
        self.smtpd_port = smtpd_port
        self.mydomain = mydomain.lower()
        self.mode: Mode = mode
        self.relay_to = relay_to
        # Distinct per instance: the Postfix SMTP client bounces mail whose peer greets with our
        # own myhostname ("loops back to myself"), and relay tests chain instances on one host.
        self.myhostname = myhostname or f"postfix-{smtpd_port}.{self.mydomain}"
        self.extra_main_cf = dict(main_cf or {})
        self.start_timeout = start_timeout
        self.root = self.tmpdir / f"postfix-{smtpd_port}"
        self._relocated = False
        self._prepared = False
        self._closed = False
        self._master_pid: int | None = None
        self._running = False

    # -- paths -------------------------------------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def mail_base(self) -> Path:
        return self.root / "mail"

    @property
    def maildir(self) -> Path:
        return self.mail_base / "maildir"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    @property
    def master_pid(self) -> int | None:
        return self._master_pid

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.smtpd_port)

    # -- configuration -----------------------------------------------------------------------------
    def main_cf(self) -> dict[str, str]:
        nobody = pwd.getpwnam("nobody")
        cf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "myhostname": self.myhostname,
            "mydomain": self.mydomain,
            "myorigin": "$mydomain",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_banner": "$myhostname ESMTP",
            # No DNS at all: no PTR lookup of clients, literal [ip]:port next hops only.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            # postlogd writes here; Postfix only accepts maillog files under these prefixes.
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "default_process_limit": "64",
            # Tests relay into servers that may come up late: retry quickly, give up soon.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "5s",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "smtp_connect_timeout": "5s",
        }
        if self.mode == "mailbox":
            cf |= {
                "smtpd_relay_restrictions": "reject_unauth_destination",
                "virtual_mailbox_domains": self.mydomain,
                "virtual_mailbox_base": str(self.mail_base),
                "virtual_mailbox_maps": "static:maildir/",  # trailing slash: Maildir format
                "virtual_uid_maps": f"static:{nobody.pw_uid}",
                "virtual_gid_maps": f"static:{nobody.pw_gid}",
                # Bounces to outside senders have nowhere to go without DNS; fail them at once.
                "default_transport": "error:5.7.1 this test mailbox sends nothing out",
            }
        elif self.mode == "relay":
            assert self.relay_to is not None
            host, port = self.relay_to
            cf |= {
                "smtpd_relay_restrictions": "permit_mynetworks, reject",
                "relayhost": f"[{host}]:{port}",
                "default_transport": "smtp",
            }
        else:
            reason = "discard:benchmark peer"
            cf |= {
                "smtpd_relay_restrictions": "permit_mynetworks, reject",
                "default_transport": reason,
                "relay_transport": reason,
                "local_transport": reason,
                "virtual_transport": reason,
            }
        cf |= self.extra_main_cf
        return cf

    def master_cf(self) -> str:
        # Debian's master.cf, minus chroot (a private instance has no chroot jail set up), minus
        # port 25, plus postlogd for maillog_file.
        services = [
            f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "tlsmgr unix - - n 1000? 1 tlsmgr",  # only used when main_cf turns TLS on
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n"

    def _prepare(self) -> None:
        if not _searchable_by_others(self.tmpdir):
            self.root = Path(tempfile.mkdtemp(prefix=f"mailprime-postfix-{self.smtpd_port}-"))
            self._relocated = True
        else:
            self.root.mkdir(parents=True, exist_ok=False)
        self.root.chmod(0o755)
        if not _searchable_by_others(self.root):
            raise PostfixError(f"no directory searchable by the postfix user: {self.root}")
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.mail_base):
            d.mkdir(mode=0o755)
        owner = pwd.getpwnam("postfix")
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.mail_base, nobody.pw_uid, nobody.pw_gid)
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        (self.config_dir / "master.cf").write_text(self.master_cf())
        # Postfix re-reads a config file until its mtime is in the past (a guard against files
        # being edited), which costs ~1.5 s per command on a file written this second.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (past, past))

    # -- life cycle --------------------------------------------------------------------------------
    def postfix(self, *args: str) -> None:
        """Run `postfix -c <config_dir> args...`; raise PostfixError with the log on failure."""
        rc = _run([POSTFIX, "-c", str(self.config_dir), *args], log=self.root / "commands.log")
        if rc != 0:
            raise PostfixError(f"postfix {' '.join(args)} exited {rc}\n{self.log_tail()}")

    def start(self) -> None:
        if self._closed:
            raise PostfixError("closed")
        if self._running:
            raise PostfixError("already running")
        if not self._prepared:
            self._prepare()
            self._prepared = True
        self._running = True  # from here on stop() must run, even if start fails half-way
        try:
            self.postfix("start")
            self._master_pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
            wait_for_port("127.0.0.1", self.smtpd_port, self.start_timeout, greeting=True)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process of the instance; its queue and mail stay, so start() may follow."""
        if not self._running:
            return
        self._running = False
        with contextlib.suppress(PostfixError, subprocess.TimeoutExpired):
            self.postfix("stop")
        pid = self._master_pid
        if pid is not None:
            deadline = time.monotonic() + STOP_TIMEOUT
            while _pgroup_members(pid) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
            for leftover in _pgroup_members(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)

    def close(self) -> None:
        """stop(); a relocated instance also copies its maillog into tmpdir and is removed."""
        self.stop()
        if self._relocated and not self._closed:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.maillog, self.tmpdir / f"postfix-{self.smtpd_port}.maillog")
            shutil.rmtree(self.root, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> PostfixInstance:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- observation -------------------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        text = self.log()
        commands = self.root / "commands.log"
        if commands.exists():
            text = commands.read_text(errors="replace") + text
        return "\n".join(text.splitlines()[-lines:])

    def _message_files(self) -> list[Path]:
        files: list[Path] = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                files.extend(p for p in d.iterdir() if p.is_file())
        # Maildir names start with the delivery time in seconds; mtime orders within a second.
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def messages(self, recipient: str | None = None) -> list[bytes]:
        """Delivered messages (mailbox mode), oldest first; only `recipient`'s when given."""
        out = []
        for path in self._message_files():
            data = path.read_bytes()
            if recipient is None or _delivered_to(data) == recipient.lower():
                out.append(data)
        return out

    def wait_for(self, n: int, timeout: float = 10.0, *, recipient: str | None = None) -> list[bytes]:
        """Poll the Maildir until at least n messages (for recipient) arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(recipient)
            if len(found) >= n:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(found)} of {n} messages after {timeout}s\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Poll the maillog until it contains text; return the log."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{text!r} not logged within {timeout}s\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)
        return log

    def flush(self) -> None:
        """`postqueue -f`: attempt every deferred message now instead of at its next retry."""
        rc = _run([POSTQUEUE, "-c", str(self.config_dir), "-f"], log=self.root / "commands.log")
        if rc != 0:
            raise PostfixError(f"postqueue -f exited {rc}\n{self.log_tail()}")

    def queue_size(self) -> int:
        """Queue files not yet delivered (maildrop, incoming, active, deferred, hold)."""
        count = 0
        for name in QUEUE_DIRS:
            for _dirpath, _dirs, files in os.walk(self.queue_dir / name):
                count += len(files)
        return count

    def postqueue_empty(self) -> bool:
        out = subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-p"], capture_output=True,
                             timeout=COMMAND_TIMEOUT, check=False)
        return out.returncode == 0 and b"Mail queue is empty" in out.stdout

    def wait_queue_empty(self, timeout: float, *, interval: float = POLL_INTERVAL) -> None:
        """Poll the queue directories until empty, then confirm with `postqueue -p`."""
        deadline = time.monotonic() + timeout
        while self.queue_size() > 0:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.queue_size()} queue files left after {timeout}s")
            time.sleep(interval)
        while not self.postqueue_empty():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"postqueue -p not empty after {timeout}s")
            time.sleep(interval)


# -- smtp-sink and smtp-source ---------------------------------------------------------------------
_COUNTER = re.compile(rb"mesg=(\d+)")


class SmtpSink:
    """A running smtp-sink; `received` counts messages whose final "." it has answered."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.output = bytearray()  # everything smtp-sink printed, for diagnostics
        self._received = 0
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"smtp-sink-{port}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # `-c` rewrites "sess=N quit=N mesg=N" after \r on each event; keep the last full record.
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = b""
        while chunk := os.read(fd, 65536):
            if len(self.output) < 1_000_000:  # bounded: counters arrive per message
                self.output += chunk
            pending += chunk
            *records, pending = re.split(rb"[\r\n]", pending)
            counts = [int(m.group(1)) for r in records if (m := _COUNTER.search(r))]
            if counts:
                with self._changed:
                    self._received = max(self._received, counts[-1])
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def received(self) -> int:
        with self._changed:
            return self._received

    def wait_for(self, n: int, timeout: float) -> None:
        """Block (on the counter, no polling) until n messages arrived or timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._received >= n or self.proc.poll() is not None,
                                          timeout):
                raise TimeoutError(f"smtp-sink got {self._received} of {n} messages in {timeout}s")
            if self._received < n:
                raise PostfixError(f"smtp-sink exited ({self.proc.returncode}) after {self._received}"
                                   f" of {n}: {bytes(self.output[-500:])!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def smtp_sink(port: int, *, host: str = "127.0.0.1", extra_args: Sequence[str] = (),
              backlog: int = 256, start_timeout: float = 10.0) -> Iterator[SmtpSink]:
    """Run /usr/sbin/smtp-sink on host:port with its -c counter; stop it on exit."""
    argv = [SMTP_SINK, "-c", *extra_args]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]  # smtp-sink refuses to keep root privileges
    argv += [f"{host}:{port}", str(backlog)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    sink = SmtpSink(proc, port)
    try:
        wait_for_port(host, port, start_timeout, greeting=True)
        yield sink
    finally:
        sink.close()


def run_smtp_source(host: str, port: int, *, sessions: int, messages: int, size: int,
                    sender: str, recipient: str, reuse_connections: bool = True,
                    helo: str = "source.test", extra_args: Sequence[str] = (),
                    timeout: float = 600.0) -> float:
    """Send `messages` messages of `size` payload bytes over `sessions` parallel SMTP sessions
    with /usr/sbin/smtp-source; return the elapsed seconds from start to exit.

    reuse_connections (-d) keeps each session open for its next message, as an MTA's
    connection cache does; without it every message pays for a new connection.
    """
    argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", sender, "-t", recipient, "-M", helo, *extra_args]
    if reuse_connections:
        argv.append("-d")
    argv.append(f"{host}:{port}")
    start = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise PostfixError(f"smtp-source exited {done.returncode}: {done.stderr[-2000:]!r}")
    return elapsed
