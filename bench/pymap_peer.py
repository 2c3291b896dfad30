"""pymap (PyPI), a Python IMAP server, as a second IMAP peer, where it installs.

pymap never enters mailprime's venv: `ensure_pymap()` builds its own venv under bench/out/
(git-ignored) on first use with `python -m venv` and pip (pymap, plus passlib and argon2-cffi so
that pymap verifies the SAME Argon2id hash string mailprime stores; without passlib it only knows
PBKDF2). If that fails (no network, no wheel), the reason is returned and the bench prints
"pymap: skipped: <reason>".

Theory of operation. `PymapInstance` is configured -> running -> closed, like the Dovecot peer:
`start()` writes pymap's maildir backend directory (its users file `pymap-etc-passwd` naming
each account's Maildir, its shadow file `pymap-etc-shadow` with the hash) and one Maildir++ per
account with the corpus, LF line ends as Maildir keeps them. pymap sends messages with bare LF
line ends (its Maildir reader drops CRs even from CRLF files), so its Target says `bare_lf` and
the load client counts the expected octets that way. Then it runs
`pymap --no-tls --host 127.0.0.1 --port <free> maildir <dir>` in its own process group and waits,
bounded, for the greeting; `close()` sends SIGTERM and SIGKILLs the group only on overrun.
pymap is one asyncio process with a thread pool for Maildir I/O and password checks; its
Maildir writes are not fsynced.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support.postfix import free_port

from bench.dovecot_peer import write_maildir
from bench.mailbox_load import Account, Corpus, Target

VENV = Path(__file__).resolve().parent / "out" / "pymap-venv"
REQUIREMENTS = ("pymap==0.36.7", "passlib==1.7.4", "argon2-cffi")
INSTALL_TIMEOUT = 600.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.05  # an external process's readiness can only be polled
GREETING_LIMIT = 4096


class PymapUnavailable(RuntimeError):
    """pymap could not be installed here; the message says why."""


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _installed_version() -> str | None:
    python = _venv_python()
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import passlib, argon2, pymap.__about__ as a;"
                          " print(a.__version__)"], capture_output=True, text=True, timeout=60,
                         check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_pymap() -> str:
    """pymap's version, installing it into its own venv first if needed; PymapUnavailable if
    it cannot be."""
    version = _installed_version()
    if version:
        return version
    steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
             [str(_venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *REQUIREMENTS]]
    for step in steps:
        try:
            out = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PymapUnavailable(f"{step[2]}: {exc}") from None
        if out.returncode != 0:
            lines = [line for line in out.stderr.splitlines()
                     if line.strip() and not line.startswith("WARNING:")]
            raise PymapUnavailable(f"{' '.join(step[1:4])}: {(lines or ['failed'])[-1][:150]}")
    version = _installed_version()
    if not version:
        raise PymapUnavailable("installed, but pymap does not import")
    return version


class PymapInstance:
    """One pymap serving IMAP on 127.0.0.1 with its maildir backend for `accounts`."""

    def __init__(self, root: Path, accounts: Sequence[Account], password_hash: str,
                 corpus: Corpus) -> None:
        self.root = root
        self.accounts = tuple(accounts)
        self.password_hash = password_hash
        self.corpus = corpus
        self.port = free_port()
        self.log_path = root / "pymap.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def imap(self) -> Target:
        return Target("127.0.0.1", self.port, self.accounts, bare_lf=True)

    def _write_backend(self) -> Path:
        base = self.root / "maildir"
        base.mkdir(parents=True, exist_ok=True)
        first: Path | None = None
        users, shadow = [], []
        for number, account in enumerate(self.accounts, 1):
            folder = f"user{number}"  # the Maildir's path relative to the base directory
            write_maildir(base / folder, self.corpus, link_from=first)
            first = first or base / folder
            # passwd(5) fields: name:password:uid:gid:comment:home(=Maildir path):shell
            users.append(f"{account.user}:x::::{folder}:\n")
            # shadow(5) fields: name:password and seven empty ones
            shadow.append(f"{account.user}:{self.password_hash}:::::::\n")
        (base / "pymap-etc-passwd").write_text("".join(users))
        (base / "pymap-etc-shadow").write_text("".join(shadow))
        return base

    def start(self) -> None:
        base = self._write_backend()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(VENV / "bin" / "pymap"), "--no-tls", "--host", "127.0.0.1", "--port",
                 str(self.port), "maildir", str(base)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pymap exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as s:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    line = s.recv(GREETING_LIMIT)
                if line.startswith(b"* OK"):
                    return
                last = repr(line[:200])
            except OSError as exc:
                last = str(exc)
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"pymap did not greet ({last}): {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # pymap's own group (start_new_session)
            proc.wait(STOP_TIMEOUT)

    def __enter__(self) -> PymapInstance:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
