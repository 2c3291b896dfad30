"""Message content too large to keep in the database: one file per blob under the spool directory.

A file is written and fsynced (file, then directory) BEFORE the row that references it commits,
so a committed row never points at a file that a crash could lose. The reverse — a file whose row
never committed — is garbage; `sweep` removes such files once they are old enough that no writer
(in this or another process) can still be about to commit them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Collection
from pathlib import Path

from mailprime.domain.errors import StorageError

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SUFFIX = ".eml"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Files named `<shard>/<hint>.<random>.eml`; 256 shards keep directories small."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root.parent)

    def write(self, hint: str, content: bytes) -> str:
        """Writes `content` durably and returns its path relative to the root."""
        token = secrets.token_hex(8)
        shard = self.root / token[:2]
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            _fsync_dir(self.root)  # the new directory entry must survive a crash too
        safe_hint = _UNSAFE.sub("", hint)[:64] or "msg"
        rel = f"{token[:2]}/{safe_hint}.{token}{_SUFFIX}"
        path = self.root / rel
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(shard)
        except OSError as exc:
            self.remove(rel)
            raise StorageError(f"spool write failed: {exc}") from exc
        return rel

    def _resolve(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if path.parent.parent != self.root:
            raise StorageError(f"spool path outside the spool directory: {rel!r}")
        return path

    def read(self, rel: str) -> bytes:
        try:
            return self._resolve(rel).read_bytes()
        except OSError as exc:
            raise StorageError(f"spool read failed: {exc}") from exc

    def remove(self, rel: str) -> None:
        # A file left behind on error is garbage the next sweep removes.
        with contextlib.suppress(OSError, StorageError):
            self._resolve(rel).unlink(missing_ok=True)

    def remove_all(self, rels: Collection[str]) -> None:
        for rel in rels:
            self.remove(rel)

    def sweep(self, referenced: Collection[str], older_than: float) -> int:
        """Deletes spool files not in `referenced` and not modified in the last `older_than`
        seconds; returns how many were deleted."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for shard in self.root.iterdir():
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for entry in shard.iterdir():
                rel = f"{shard.name}/{entry.name}"
                if not entry.name.endswith(_SUFFIX) or rel in referenced:
                    continue
                try:
                    if entry.stat().st_mtime < cutoff:
                        entry.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
