"""The VERP secret: a file of 32 random octets (hex) under the data directory, mode 0600.

Theory of operation. VERP tokens (message.verp) are HMACs under this secret, so it must stay the
same across restarts and be shared by every process of a node (and by every node sharing one
database: copy the file). `mailprime init` creates it; `serve` creates it on first start if it
is missing. Several processes may start at once (`workers`), so creation is atomic: the key is
written to a private temporary file, fsynced, then hard-linked to its name — link(2) fails if
the name exists, and then the winner's key is read instead. One key per line, newest first:
to rotate, put a new line on top; bounces for mail signed with the older keys still verify.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from mailprime.domain.errors import ConfigError

KEY_OCTETS = 32
MAX_KEYS = 8  # a rotation keeps a few old keys, not a history


def read_secrets(path: Path) -> list[bytes]:
    """The keys in the file, newest first. ConfigError if unreadable or malformed."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[bounces] verp_secret_file: cannot read {path}: {exc}") from exc
    keys: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise ConfigError(f"{path} line {number}: not a hex key") from None
        if len(key) < 16:
            raise ConfigError(f"{path} line {number}: a key needs at least 16 octets")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{path}: no key in the file")
    return keys[:MAX_KEYS]


def ensure_secret_file(path: Path) -> bool:
    """Creates the file with a fresh key unless it exists; True if this call created it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_bytes(KEY_OCTETS).hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False  # another process won the race; its key is the one
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_or_create(path: Path) -> list[bytes]:
    ensure_secret_file(path)
    return read_secrets(path)


__all__ = ["ensure_secret_file", "load_or_create", "read_secrets"]
